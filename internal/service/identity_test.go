package service_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// fakeIdentity is an identity service that knows some tokens and counts
// the questions it is asked.
type fakeIdentity struct {
	mu     sync.Mutex
	ids    map[string]cairn.Identity
	err    error
	called int
}

func (f *fakeIdentity) Validate(_ context.Context, token string) (cairn.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called++
	if f.err != nil {
		return cairn.Identity{}, f.err
	}
	id, ok := f.ids[token]
	if !ok {
		return cairn.Identity{}, fmt.Errorf("token: %w", cairn.ErrUnauthenticated)
	}
	return id, nil
}

func (f *fakeIdentity) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.called
}

// TestAuthenticateIdentity: an identity service's token maps to a caller
// by its roles, its project is made on first use (once, however many
// requests race to make it) with the default quota, the caller is
// cached no longer than the token lives, and the identity service's
// errors pass through.
func TestAuthenticateIdentity(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	exp := now.Add(time.Hour)
	f := &fakeIdentity{ids: map[string]cairn.Identity{
		"admin":  {UserID: "u-admin", ProjectID: "p1", ProjectName: "one", Roles: []string{"admin", "member", "reader"}, ExpiresAt: exp},
		"member": {UserID: "u-member", ProjectID: "p1", ProjectName: "one", Roles: []string{"member", "reader"}, ExpiresAt: exp},
		"reader": {UserID: "u-reader", ProjectID: "p2", Roles: []string{"reader"}, ExpiresAt: exp},
		"other":  {UserID: "u-other", ProjectID: "p3", Roles: []string{"heat_stack_user"}, ExpiresAt: exp},
		"brief":  {UserID: "u-brief", ProjectID: "p1", Roles: []string{"member"}, ExpiresAt: now.Add(time.Second)},
	}}
	cat := openCatalog(t)
	svc := service.New(service.Config{Catalog: cat, Identity: f, Now: clock})
	ctx := t.Context()

	for _, tc := range []struct {
		token string
		want  service.Caller
		err   error
	}{
		{"admin", service.Caller{ProjectID: "p1", Admin: true, UserID: "u-admin"}, nil},
		{"member", service.Caller{ProjectID: "p1", UserID: "u-member"}, nil},
		{"reader", service.Caller{ProjectID: "p2", ReadOnly: true, UserID: "u-reader"}, nil},
		{"other", service.Caller{}, cairn.ErrForbidden},
		{"unknown", service.Caller{}, cairn.ErrUnauthenticated},
	} {
		c, err := svc.Authenticate(ctx, tc.token)
		if tc.err != nil {
			wantErr(t, "token "+tc.token, err, tc.err)
			continue
		}
		if err != nil || c != tc.want {
			t.Errorf("token %s: %+v %v, want %+v", tc.token, c, err, tc.want)
		}
	}
	ps := service.NewProjects(cat)
	for id, name := range map[string]string{"p1": "one", "p2": "p2"} {
		p, err := ps.Show(ctx, id)
		if err != nil || p.Name != name || p.Quota != service.DefaultIdentityQuota() {
			t.Errorf("project %s: %+v %v", id, p, err)
		}
	}
	if _, err := ps.Show(ctx, "p3"); err == nil {
		t.Errorf("a token without a role made its project")
	}

	// Many first requests at once make the project once.
	f.mu.Lock()
	for i := range 8 {
		f.ids[fmt.Sprint("race", i)] = cairn.Identity{UserID: "u", ProjectID: "p-race", Roles: []string{"member"}, ExpiresAt: exp}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() { _, errs[i] = svc.Authenticate(ctx, fmt.Sprint("race", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("racing first use %d: %v", i, err)
		}
	}

	// Cached for 5 s, but not past the token's expiry.
	if _, err := svc.Authenticate(ctx, "brief"); err != nil {
		t.Fatal(err)
	}
	before := f.calls()
	if _, err := svc.Authenticate(ctx, "member"); err != nil || f.calls() != before {
		t.Fatalf("a cached caller was asked about again: %v, %d -> %d", err, before, f.calls())
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if _, err := svc.Authenticate(ctx, "brief"); err != nil || f.calls() != before+1 {
		t.Fatalf("a caller cached past its token's expiry: %v, %d calls, want %d", err, f.calls(), before+1)
	}

	// The identity service's errors pass through; cairn tokens still work.
	f.mu.Lock()
	f.err = fmt.Errorf("keystone: %w", cairn.ErrUnavailable)
	f.mu.Unlock()
	_, err := svc.Authenticate(ctx, "never-seen")
	wantErr(t, "identity service down", err, cairn.ErrUnavailable)
	if _, err := service.CreateProject(ctx, cat, "own", "own", cairn.Unlimited, now); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := service.CreateToken(ctx, cat, cairn.Token{ProjectID: "own", Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := svc.Authenticate(ctx, secret); err != nil || c.ProjectID != "own" || c.UserID != tok.ID {
		t.Fatalf("a cairn token beside Keystone: %+v %v", c, err)
	}
}
