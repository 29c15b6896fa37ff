package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// TokenPrefix starts every API token, so a leaked one is recognisable.
const TokenPrefix = "cairn_"

// HashToken is how a token's secret is stored: SHA-256 (tokens are 256
// random bits, so a slow hash adds nothing).
func HashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// tokenTTL is how long a verified token is trusted without asking the
// catalog again: a token deleted with the CLI (another process) stops
// working within this time.
const tokenTTL = 5 * time.Second

// maxCachedTokens bounds the token cache; it is emptied when full.
const maxCachedTokens = 4096

type cachedToken struct {
	caller  Caller
	expires time.Time
}

// Authenticate returns the caller a token secret belongs to.
func (s *Service) Authenticate(ctx context.Context, secret string) (Caller, error) {
	if !strings.HasPrefix(secret, TokenPrefix) {
		return Caller{}, errorf(cairn.ErrUnauthenticated, "not a cairn token")
	}
	key := string(HashToken(secret))
	now := s.now()
	s.tokensMu.Lock()
	ct, ok := s.tokens[key]
	s.tokensMu.Unlock()
	if ok && now.Before(ct.expires) {
		return ct.caller, nil
	}
	c, err := s.authenticate(ctx, secret)
	if err != nil {
		return c, err
	}
	s.tokensMu.Lock()
	if len(s.tokens) >= maxCachedTokens {
		clear(s.tokens)
	}
	s.tokens[key] = cachedToken{caller: c, expires: now.Add(tokenTTL)}
	s.tokensMu.Unlock()
	return c, nil
}

func (s *Service) authenticate(ctx context.Context, secret string) (Caller, error) {
	var t cairn.Token
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		t, err = tx.TokenByHash(ctx, HashToken(secret))
		return err
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return Caller{}, errorf(cairn.ErrUnauthenticated, "unknown or revoked token")
	}
	if err != nil {
		return Caller{}, err
	}
	return Caller{ProjectID: t.ProjectID, Admin: t.Admin}, nil
}

// AdminProject is the project of the service's administrators, made on
// the first start.
const AdminProject = "admin"

// CreateProject records a project; id "" makes a UUID. Projects and
// tokens are administered over the catalog alone: the CLI does it on the
// host, without the API.
func CreateProject(ctx context.Context, cat catalog.Store, id, name string, q cairn.Quota, now time.Time) (cairn.Project, error) {
	p := cairn.Project{CreatedAt: now.UTC().Truncate(time.Microsecond)}
	if id == "" {
		id = cairn.NewUUID()
	}
	if !containerName.MatchString(id) {
		return cairn.Project{}, errorf(cairn.ErrInvalid, "project id %q: want letters, digits, '.', '_' or '-'", id)
	}
	p.ID, p.Name, p.Quota = id, name, q
	err := cat.Update(ctx, func(tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
	return p, err
}

// NewTokenSecret returns a fresh token secret.
func NewTokenSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// CreateToken records a token of project and returns its secret, which
// is shown once and never stored.
func CreateToken(ctx context.Context, cat catalog.Store, t cairn.Token) (string, cairn.Token, error) {
	secret := NewTokenSecret()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now().UTC().Truncate(time.Microsecond)
	}
	t.ID = cairn.NewUUID()
	t.Hash = HashToken(secret)
	err := cat.Update(ctx, func(tx catalog.Tx) error {
		if _, err := tx.Project(ctx, t.ProjectID); err != nil {
			return err
		}
		return tx.InsertToken(ctx, t)
	})
	if err != nil {
		return "", cairn.Token{}, err
	}
	return secret, t, nil
}

// Limits is a project's quotas and usage.
type Limits struct {
	Quota cairn.Quota `json:"quota"`
	Usage cairn.Usage `json:"usage"`
}

// Limits returns the quotas and usage of project.
func (s *Service) Limits(ctx context.Context, c Caller, project string) (Limits, error) {
	if !c.may(project) {
		return Limits{}, fmt.Errorf("project %s: %w", project, cairn.ErrNotFound)
	}
	var l Limits
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		p, err := tx.Project(ctx, project)
		if err != nil {
			return err
		}
		l.Quota = p.Quota
		l.Usage, err = tx.Usage(ctx, project)
		return err
	})
	return l, err
}

// ProjectExists reports whether project is in the catalog (a token's
// project may have been deleted).
func (s *Service) ProjectExists(ctx context.Context, project string) (bool, error) {
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		_, err := tx.Project(ctx, project)
		return err
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
