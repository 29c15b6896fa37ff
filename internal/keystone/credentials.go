package keystone

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/cairnproject/cairn"
)

// Credentials are cairn's service user's, as an openrc file gives them:
// a password with a project scope, or an application credential.
type Credentials struct {
	// AuthURL is OS_AUTH_URL, used when no URL is given otherwise.
	AuthURL string

	Username, Password           string
	UserDomainName, UserDomainID string
	ProjectName, ProjectID       string
	// ProjectDomainName and ProjectDomainID qualify ProjectName.
	ProjectDomainName, ProjectDomainID string

	ApplicationCredentialID, ApplicationCredentialSecret string
}

// field returns the field an openrc variable sets; nil for others.
func (c *Credentials) field(key string) *string {
	switch key {
	case "OS_AUTH_URL":
		return &c.AuthURL
	case "OS_USERNAME":
		return &c.Username
	case "OS_PASSWORD":
		return &c.Password
	case "OS_USER_DOMAIN_NAME":
		return &c.UserDomainName
	case "OS_USER_DOMAIN_ID":
		return &c.UserDomainID
	case "OS_PROJECT_NAME", "OS_TENANT_NAME":
		return &c.ProjectName
	case "OS_PROJECT_ID", "OS_TENANT_ID":
		return &c.ProjectID
	case "OS_PROJECT_DOMAIN_NAME":
		return &c.ProjectDomainName
	case "OS_PROJECT_DOMAIN_ID":
		return &c.ProjectDomainID
	case "OS_APPLICATION_CREDENTIAL_ID":
		return &c.ApplicationCredentialID
	case "OS_APPLICATION_CREDENTIAL_SECRET":
		return &c.ApplicationCredentialSecret
	}
	return nil
}

// ParseCredentials reads an openrc file: lines `[export ]OS_NAME=value`,
// the value bare or in single or double quotes, taken literally (no
// shell expansion); blank lines and # comments are skipped. Other OS_
// variables an openrc sets (OS_REGION_NAME, OS_INTERFACE,
// OS_IDENTITY_API_VERSION, OS_AUTH_TYPE, ...) are accepted and ignored;
// anything else is an error, so a typo is not silently dropped.
func ParseCredentials(data []byte) (Credentials, error) {
	var c Credentials
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return Credentials{}, fmt.Errorf("credentials line %d: want NAME=value: %w", n, cairn.ErrInvalid)
		}
		key = strings.TrimSpace(key)
		val, err := unquote(val)
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials line %d (%s): %w", n, key, err)
		}
		if f := c.field(key); f != nil {
			*f = val
			continue
		}
		if !strings.HasPrefix(key, "OS_") {
			return Credentials{}, fmt.Errorf("credentials line %d: %q is not an OS_ variable: %w", n, key, cairn.ErrInvalid)
		}
	}
	if err := sc.Err(); err != nil {
		return Credentials{}, fmt.Errorf("credentials: %w: %w", err, cairn.ErrInvalid)
	}
	if err := c.check(); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// unquote takes a value bare, or in one pair of single or double quotes.
func unquote(v string) (string, error) {
	v = strings.TrimSpace(v)
	if len(v) >= 1 && (v[0] == '"' || v[0] == '\'') {
		q := v[0]
		if len(v) < 2 || v[len(v)-1] != q {
			return "", fmt.Errorf("unterminated quote: %w", cairn.ErrInvalid)
		}
		v = v[1 : len(v)-1]
		if strings.IndexByte(v, q) >= 0 {
			return "", fmt.Errorf("quote inside a quoted value: %w", cairn.ErrInvalid)
		}
		return v, nil
	}
	if strings.ContainsAny(v, "\"'`$ \t") {
		return "", fmt.Errorf("a bare value with quotes, spaces or $ (shell expansion is not done; quote the literal value): %w", cairn.ErrInvalid)
	}
	return v, nil
}

// check says what is missing for Keystone to issue a token.
func (c Credentials) check() error {
	if c.ApplicationCredentialID != "" || c.ApplicationCredentialSecret != "" {
		if c.ApplicationCredentialID == "" || c.ApplicationCredentialSecret == "" {
			return fmt.Errorf("keystone credentials: give both OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET: %w", cairn.ErrInvalid)
		}
		return nil
	}
	if c.Username == "" || c.Password == "" {
		return fmt.Errorf("keystone credentials: give OS_USERNAME and OS_PASSWORD with a project, or an application credential: %w", cairn.ErrInvalid)
	}
	if c.UserDomainName == "" && c.UserDomainID == "" {
		return fmt.Errorf("keystone credentials: give OS_USER_DOMAIN_NAME or OS_USER_DOMAIN_ID: %w", cairn.ErrInvalid)
	}
	if c.ProjectID == "" && c.ProjectName == "" {
		return fmt.Errorf("keystone credentials: give OS_PROJECT_NAME or OS_PROJECT_ID (the service user's project): %w", cairn.ErrInvalid)
	}
	if c.ProjectID == "" && c.ProjectDomainName == "" && c.ProjectDomainID == "" {
		return fmt.Errorf("keystone credentials: give OS_PROJECT_DOMAIN_NAME or OS_PROJECT_DOMAIN_ID with OS_PROJECT_NAME: %w", cairn.ErrInvalid)
	}
	return nil
}

// authRequest is the body of POST /v3/auth/tokens for c.
func (c Credentials) authRequest() map[string]any {
	if c.ApplicationCredentialID != "" {
		return map[string]any{"auth": map[string]any{"identity": map[string]any{
			"methods": []string{"application_credential"},
			"application_credential": map[string]any{
				"id": c.ApplicationCredentialID, "secret": c.ApplicationCredentialSecret},
		}}}
	}
	ref := func(id, name string) map[string]any {
		if id != "" {
			return map[string]any{"id": id}
		}
		return map[string]any{"name": name}
	}
	user := ref("", c.Username)
	user["password"] = c.Password
	user["domain"] = ref(c.UserDomainID, c.UserDomainName)
	project := ref(c.ProjectID, c.ProjectName)
	if c.ProjectID == "" {
		project["domain"] = ref(c.ProjectDomainID, c.ProjectDomainName)
	}
	return map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": user}},
		"scope": map[string]any{"project": project},
	}}
}
