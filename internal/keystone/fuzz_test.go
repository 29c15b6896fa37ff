package keystone_test

import (
	"errors"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/keystone"
)

// FuzzParseToken: Keystone's answers are outside bytes. Any input gives
// an identity with a user and a project, or one of the two errors.
func FuzzParseToken(f *testing.F) {
	f.Add([]byte(`{"token":{"expires_at":"2030-01-01T00:00:00.000000Z","user":{"id":"u","name":"n"},"project":{"id":"p","name":"q"},"roles":[{"id":"r","name":"member"}]}}`))
	f.Add([]byte(`{"token":{"expires_at":"2030-01-01T00:00:00Z","user":{"id":"u"},"domain":{"id":"d"}}}`))
	f.Add([]byte(`{"token":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := keystone.ParseToken(body)
		if err != nil {
			if !errors.Is(err, cairn.ErrUnavailable) && !errors.Is(err, cairn.ErrUnauthenticated) {
				t.Fatalf("error %v is neither unavailable nor unauthenticated", err)
			}
			return
		}
		if id.UserID == "" || id.ProjectID == "" || id.ExpiresAt.IsZero() {
			t.Fatalf("incomplete identity %+v", id)
		}
		for _, r := range id.Roles {
			if r == "" {
				t.Fatalf("empty role in %v", id.Roles)
			}
		}
	})
}

// FuzzParseCredentials: an operator's file. Any input gives credentials
// a validator accepts, or ErrInvalid.
func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte("export OS_USERNAME=cairn\nexport OS_PASSWORD='p w'\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_NAME=service\nexport OS_PROJECT_DOMAIN_NAME=Default\n"))
	f.Add([]byte("OS_APPLICATION_CREDENTIAL_ID=a\nOS_APPLICATION_CREDENTIAL_SECRET=\"b\"\n# comment\n\n"))
	f.Add([]byte("OS_PASSWORD=\"unterminated\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := keystone.ParseCredentials(data)
		if err != nil {
			if !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if _, err := keystone.New(keystone.Config{AuthURL: "http://127.0.0.1:5000/v3", Credentials: c}); err != nil {
			t.Fatalf("parsed credentials %+v refused: %v", c, err)
		}
	})
}
