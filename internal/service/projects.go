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

// TokenValidator checks tokens an identity service issued (Keystone's).
// It is safe for concurrent use. Validate returns cairn.ErrUnauthenticated
// for a token that is not valid (unknown, revoked, expired, or not scoped
// to a project) and cairn.ErrUnavailable when the identity service cannot
// say; it may cache answers, for no longer than the token lives.
type TokenValidator interface {
	Validate(ctx context.Context, token string) (cairn.Identity, error)
}

// DefaultIdentityQuota is the block storage API's default quota, which
// the catalog's quota class "default" starts with: the quota a project
// made on an identity service token's first use gets (an admin changes
// the class with PUT /os-quota-class-sets/default, a project's with
// `cairn project quota` or PUT /os-quota-sets/{project}).
func DefaultIdentityQuota() cairn.Quota {
	return cairn.Quota{Volumes: 10, Gigabytes: 1000, Snapshots: 10, Backups: 10, BackupGigabytes: 1000, PerVolumeGigabytes: -1}
}

// The roles of an identity service token, as the block storage API's
// default policy reads them: admin may do anything in any project,
// member anything in its own, reader only read there.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleReader = "reader"
)

// Authenticate returns the caller a token secret belongs to: a cairn
// token, or, with an identity service, one of its tokens.
func (s *Service) Authenticate(ctx context.Context, secret string) (Caller, error) {
	if !strings.HasPrefix(secret, TokenPrefix) && s.identity == nil {
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
	expires := now.Add(tokenTTL)
	var c Caller
	var err error
	if strings.HasPrefix(secret, TokenPrefix) {
		c, err = s.authenticate(ctx, secret)
	} else {
		var until time.Time
		c, until, err = s.authenticateIdentity(ctx, secret)
		if until.Before(expires) {
			expires = until
		}
	}
	if err != nil {
		return c, err
	}
	s.tokensMu.Lock()
	if len(s.tokens) >= maxCachedTokens {
		clear(s.tokens)
	}
	s.tokens[key] = cachedToken{caller: c, expires: expires}
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
	return Caller{ProjectID: t.ProjectID, Admin: t.Admin, UserID: t.ID}, nil
}

// authenticateIdentity asks the identity service about a token and
// returns its caller, until when the token lives. The token's project
// becomes a cairn project of the same ID on first use.
func (s *Service) authenticateIdentity(ctx context.Context, secret string) (Caller, time.Time, error) {
	id, err := s.identity.Validate(ctx, secret)
	if err != nil {
		return Caller{}, time.Time{}, err
	}
	c := Caller{ProjectID: id.ProjectID, UserID: id.UserID, Admin: id.HasRole(RoleAdmin)}
	switch {
	case c.Admin, id.HasRole(RoleMember):
	case id.HasRole(RoleReader):
		c.ReadOnly = true
	default:
		return Caller{}, time.Time{}, fmt.Errorf("user %s in project %s has none of the roles %s, %s, %s: %w",
			id.UserID, id.ProjectID, RoleAdmin, RoleMember, RoleReader, cairn.ErrForbidden)
	}
	if err := s.ensureProject(ctx, id); err != nil {
		return Caller{}, time.Time{}, err
	}
	return c, id.ExpiresAt, nil
}

// ensureProject makes the cairn project of an identity's project, with
// the default quota, unless it exists.
func (s *Service) ensureProject(ctx context.Context, id cairn.Identity) error {
	ok, err := s.ProjectExists(ctx, id.ProjectID)
	if err != nil || ok {
		return err
	}
	name := id.ProjectName
	if name == "" {
		name = id.ProjectID
	}
	q, err := s.defaultQuota(ctx)
	if err != nil {
		return err
	}
	ps := &Projects{cat: s.cat, now: s.now}
	_, err = ps.Create(ctx, id.ProjectID, name, q)
	if errors.Is(err, cairn.ErrExists) {
		return nil // made meanwhile by another request
	}
	if err != nil {
		return fmt.Errorf("project of identity %s: %w", id.ProjectID, err)
	}
	s.log.Info("created project on its first token", "project", id.ProjectID, "name", name, "user", id.UserID)
	return nil
}

// AdminProject is the project of the service's administrators, made on
// the first start.
const AdminProject = "admin"

// Projects administers projects and tokens over the catalog alone: the
// CLI does it on the host, whether or not the service runs. A project is
// named by its ID or, when no project has that ID, by its name if one
// project alone has it.
type Projects struct {
	cat catalog.Store
	now func() time.Time
}

// NewProjects returns the administration of cat's projects.
func NewProjects(cat catalog.Store) *Projects {
	return &Projects{cat: cat, now: time.Now}
}

// ProjectUsage is a project with what it holds.
type ProjectUsage struct {
	cairn.Project
	Usage cairn.Usage `json:"usage"`
}

// QuotaChange names the limits to change; nil ones stay.
type QuotaChange struct {
	Volumes, Gigabytes, Snapshots, Backups, BackupGigabytes, PerVolumeGigabytes *int64
}

// apply changes q's limits c names.
func (c QuotaChange) apply(q *cairn.Quota) {
	for _, f := range []struct {
		dst *int64
		src *int64
	}{{&q.Volumes, c.Volumes}, {&q.Gigabytes, c.Gigabytes}, {&q.Snapshots, c.Snapshots},
		{&q.Backups, c.Backups}, {&q.BackupGigabytes, c.BackupGigabytes}, {&q.PerVolumeGigabytes, c.PerVolumeGigabytes}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
}

// ValidQuota checks every limit: -1 (unlimited) or more.
func ValidQuota(q cairn.Quota) error {
	for _, l := range []struct {
		name string
		n    int64
	}{{"volumes", q.Volumes}, {"gigabytes", q.Gigabytes}, {"snapshots", q.Snapshots},
		{"backups", q.Backups}, {"backup_gigabytes", q.BackupGigabytes}, {"per_volume_gigabytes", q.PerVolumeGigabytes}} {
		if l.n < -1 {
			return errorf(cairn.ErrInvalid, "quota %s %d: want -1 (unlimited) or more", l.name, l.n)
		}
	}
	return nil
}

// resolveProject finds the project ref names: the one with that ID, or
// the one project with that name.
func resolveProject(ctx context.Context, tx catalog.Tx, ref string) (cairn.Project, error) {
	if ref == "" {
		return cairn.Project{}, errorf(cairn.ErrInvalid, "name a project by its ID or name")
	}
	p, err := tx.Project(ctx, ref)
	if !errors.Is(err, cairn.ErrNotFound) {
		return p, err
	}
	all, err := tx.Projects(ctx)
	if err != nil {
		return cairn.Project{}, err
	}
	var named []cairn.Project
	for _, p := range all {
		if p.Name == ref {
			named = append(named, p)
		}
	}
	switch len(named) {
	case 0:
		return cairn.Project{}, fmt.Errorf("project %q: no project has this ID or name: %w", ref, cairn.ErrNotFound)
	case 1:
		return named[0], nil
	}
	ids := make([]string, len(named))
	for i, p := range named {
		ids[i] = p.ID
	}
	return cairn.Project{}, errorf(cairn.ErrInvalid, "project name %q is ambiguous: projects %s have it; give an ID", ref, strings.Join(ids, ", "))
}

// Resolve returns the project ref names.
func (ps *Projects) Resolve(ctx context.Context, ref string) (cairn.Project, error) {
	var p cairn.Project
	err := ps.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		p, err = resolveProject(ctx, tx, ref)
		return err
	})
	return p, err
}

// Create records a project; id "" makes a UUID.
func (ps *Projects) Create(ctx context.Context, id, name string, q cairn.Quota) (cairn.Project, error) {
	if err := ValidQuota(q); err != nil {
		return cairn.Project{}, err
	}
	if id == "" {
		id = cairn.NewUUID()
	}
	if !containerName.MatchString(id) {
		return cairn.Project{}, errorf(cairn.ErrInvalid, "project id %q: want letters, digits, '.', '_' or '-'", id)
	}
	if err := validText("name", name, 255); err != nil {
		return cairn.Project{}, err
	}
	p := cairn.Project{ID: id, Name: name, Quota: q, CreatedAt: ps.now().UTC().Truncate(time.Microsecond)}
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
	if err != nil {
		return cairn.Project{}, fmt.Errorf("project %s: %w", id, err)
	}
	return p, nil
}

// List returns every project with its usage, oldest first.
func (ps *Projects) List(ctx context.Context) ([]ProjectUsage, error) {
	var out []ProjectUsage
	err := ps.cat.View(ctx, func(tx catalog.Tx) error {
		out = nil
		list, err := tx.Projects(ctx)
		if err != nil {
			return err
		}
		for _, p := range list {
			u, err := tx.Usage(ctx, p.ID)
			if err != nil {
				return err
			}
			out = append(out, ProjectUsage{p, u})
		}
		return nil
	})
	return out, err
}

// Show returns one project with its usage.
func (ps *Projects) Show(ctx context.Context, ref string) (ProjectUsage, error) {
	var out ProjectUsage
	err := ps.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if out.Project, err = resolveProject(ctx, tx, ref); err != nil {
			return err
		}
		out.Usage, err = tx.Usage(ctx, out.ID)
		return err
	})
	return out, err
}

// Delete removes a project and its tokens; it must own no volumes,
// snapshots or backups (cairn.ErrConflict).
func (ps *Projects) Delete(ctx context.Context, ref string) (cairn.Project, error) {
	var p cairn.Project
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if p, err = resolveProject(ctx, tx, ref); err != nil {
			return err
		}
		return tx.DeleteProject(ctx, p.ID)
	})
	return p, err
}

// SetQuota changes some of a project's limits.
func (ps *Projects) SetQuota(ctx context.Context, ref string, c QuotaChange) (ProjectUsage, error) {
	var out ProjectUsage
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error {
		p, err := resolveProject(ctx, tx, ref)
		if err != nil {
			return err
		}
		c.apply(&p.Quota)
		if err := ValidQuota(p.Quota); err != nil {
			return err
		}
		if err := tx.UpdateProject(ctx, p); err != nil {
			return err
		}
		out.Project = p
		out.Usage, err = tx.Usage(ctx, p.ID)
		return err
	})
	return out, err
}

// NewTokenSecret returns a fresh token secret.
func NewTokenSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// newToken completes t (ID, hash, time) and returns its secret.
func newToken(t *cairn.Token, now time.Time) string {
	secret := NewTokenSecret()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now.UTC().Truncate(time.Microsecond)
	}
	t.ID = cairn.NewUUID()
	t.Hash = HashToken(secret)
	return secret
}

// CreateToken records a token of the project ref names and returns its
// secret, which is shown once and never stored.
func (ps *Projects) CreateToken(ctx context.Context, ref, name string, admin bool) (string, cairn.Token, error) {
	if err := validText("name", name, 255); err != nil {
		return "", cairn.Token{}, err
	}
	t := cairn.Token{Name: name, Admin: admin}
	secret := newToken(&t, ps.now())
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error {
		p, err := resolveProject(ctx, tx, ref)
		if err != nil {
			return err
		}
		t.ProjectID = p.ID
		return tx.InsertToken(ctx, t)
	})
	if err != nil {
		return "", cairn.Token{}, err
	}
	return secret, t, nil
}

// Tokens lists the tokens of the project ref names, or every token for
// ref "", oldest first.
func (ps *Projects) Tokens(ctx context.Context, ref string) ([]cairn.Token, error) {
	var list []cairn.Token
	err := ps.cat.View(ctx, func(tx catalog.Tx) error {
		id := ""
		if ref != "" {
			p, err := resolveProject(ctx, tx, ref)
			if err != nil {
				return err
			}
			id = p.ID
		}
		var err error
		list, err = tx.Tokens(ctx, id)
		return err
	})
	return list, err
}

// DeleteToken removes a token: it stops working at once for new
// processes, and within the token cache's lifetime for a running service.
func (ps *Projects) DeleteToken(ctx context.Context, id string) error {
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteToken(ctx, id) })
	if err != nil {
		return fmt.Errorf("token %s: %w", id, err)
	}
	return nil
}

// Bootstrap makes the admin project and an admin token when the catalog
// has no project (a first start) and returns the token's secret; "" when
// there were projects. Both are made in one transaction: of services
// starting at once on one catalog, one makes them.
func (ps *Projects) Bootstrap(ctx context.Context) (string, error) {
	var secret string
	err := ps.cat.Update(ctx, func(tx catalog.Tx) error {
		secret = ""
		list, err := tx.Projects(ctx)
		if err != nil || len(list) > 0 {
			return err
		}
		now := ps.now()
		p := cairn.Project{ID: AdminProject, Name: "admin", Quota: cairn.Unlimited, CreatedAt: now.UTC().Truncate(time.Microsecond)}
		if err := tx.InsertProject(ctx, p); err != nil {
			return err
		}
		t := cairn.Token{ProjectID: p.ID, Name: "admin (first start)", Admin: true}
		s := newToken(&t, now)
		if err := tx.InsertToken(ctx, t); err != nil {
			return err
		}
		secret = s
		return nil
	})
	return secret, err
}

// CreateProject records a project; id "" makes a UUID (Projects.Create
// at the time now).
func CreateProject(ctx context.Context, cat catalog.Store, id, name string, q cairn.Quota, now time.Time) (cairn.Project, error) {
	ps := &Projects{cat: cat, now: func() time.Time { return now }}
	return ps.Create(ctx, id, name, q)
}

// CreateToken records a token of project t.ProjectID (an ID) and
// returns its secret, which is shown once and never stored.
func CreateToken(ctx context.Context, cat catalog.Store, t cairn.Token) (string, cairn.Token, error) {
	secret := newToken(&t, time.Now())
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
