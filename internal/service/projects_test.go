package service_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

func openCatalog(t *testing.T) catalog.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	sqlitetest.Create(t, path)
	cat, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	return cat
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: %v, want an error wrapping %v", what, err, target)
	}
}

// TestProjectResolve: a project is named by its ID, or by a name only
// one project has; an ID wins over another project's name.
func TestProjectResolve(t *testing.T) {
	ctx := t.Context()
	ps := service.NewProjects(openCatalog(t))
	acme1 := must[cairn.Project](t)(ps.Create(ctx, "", "acme", cairn.Unlimited))
	acme2 := must[cairn.Project](t)(ps.Create(ctx, "", "acme", cairn.Unlimited))
	solo := must[cairn.Project](t)(ps.Create(ctx, "solo-id", "solo", cairn.Unlimited))
	// A project whose name is another's ID.
	must[cairn.Project](t)(ps.Create(ctx, "", "solo-id", cairn.Unlimited))
	for _, c := range []struct {
		ref, want string
		err       error
		says      []string
	}{
		{ref: acme1.ID, want: acme1.ID},
		{ref: "solo", want: solo.ID},
		{ref: "solo-id", want: solo.ID},
		{ref: "acme", err: cairn.ErrInvalid, says: []string{"ambiguous", acme1.ID, acme2.ID}},
		{ref: "nosuch", err: cairn.ErrNotFound, says: []string{"nosuch"}},
		{ref: "", err: cairn.ErrInvalid},
	} {
		p, err := ps.Resolve(ctx, c.ref)
		if c.err != nil {
			wantErr(t, "resolve "+c.ref, err, c.err)
			for _, s := range c.says {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("resolve %q: %v; want it to say %q", c.ref, err, s)
				}
			}
			continue
		}
		if err != nil || p.ID != c.want {
			t.Errorf("resolve %q: %s, %v; want %s", c.ref, p.ID, err, c.want)
		}
	}
}

func TestProjectAdministration(t *testing.T) {
	ctx := t.Context()
	cat := openCatalog(t)
	ps := service.NewProjects(cat)
	q := cairn.Quota{Volumes: 2, Gigabytes: 10, Snapshots: -1, Backups: -1, BackupGigabytes: -1, PerVolumeGigabytes: -1}
	p := must[cairn.Project](t)(ps.Create(ctx, "", "acme", q))
	if p.Name != "acme" || p.Quota != q || p.CreatedAt.IsZero() {
		t.Errorf("created %+v", p)
	}
	if _, err := cairn.ParseID(strings.ReplaceAll(p.ID, "-", "")); err != nil {
		t.Errorf("a made ID %q is not a UUID", p.ID)
	}
	_, err := ps.Create(ctx, p.ID, "again", q)
	wantErr(t, "create with a used ID", err, cairn.ErrExists)
	_, err = ps.Create(ctx, "bad id/x", "x", q)
	wantErr(t, "create with a bad ID", err, cairn.ErrInvalid)
	_, err = ps.Create(ctx, "", "x", cairn.Quota{Volumes: -2})
	wantErr(t, "create with a bad quota", err, cairn.ErrInvalid)

	// A volume counts in its project's usage and keeps it from deletion.
	svc := service.New(service.Config{Catalog: cat, Engine: servicetest.NewEngine(nil)})
	if _, err := svc.CreateVolume(ctx, service.Caller{ProjectID: p.ID}, service.VolumeCreate{Size: 3}); err != nil {
		t.Fatal(err)
	}
	shown := must[service.ProjectUsage](t)(ps.Show(ctx, "acme"))
	if shown.ID != p.ID || shown.Usage.Volumes != 1 || shown.Usage.Gigabytes != 3 {
		t.Errorf("show: %+v", shown)
	}
	list := must[[]service.ProjectUsage](t)(ps.List(ctx))
	if len(list) != 1 || list[0].ID != p.ID || list[0].Usage.Volumes != 1 {
		t.Errorf("list: %+v", list)
	}
	_, err = ps.Delete(ctx, "acme")
	wantErr(t, "delete a project that owns a volume", err, cairn.ErrConflict)

	five := int64(5)
	set := must[service.ProjectUsage](t)(ps.SetQuota(ctx, "acme", service.QuotaChange{Volumes: &five}))
	if set.Quota.Volumes != 5 || set.Quota.Gigabytes != 10 || set.Usage.Volumes != 1 {
		t.Errorf("set-quota: %+v", set)
	}
	bad := int64(-3)
	_, err = ps.SetQuota(ctx, "acme", service.QuotaChange{Gigabytes: &bad})
	wantErr(t, "set a bad quota", err, cairn.ErrInvalid)
	if got := must[service.ProjectUsage](t)(ps.Show(ctx, p.ID)); got.Quota.Gigabytes != 10 {
		t.Errorf("a refused quota change changed the quota: %+v", got.Quota)
	}

	// Tokens, by the project's name; a token authenticates in its project.
	secret, tok, err := ps.CreateToken(ctx, "acme", "ci", false)
	if err != nil || tok.ProjectID != p.ID || tok.Name != "ci" || tok.Admin || !strings.HasPrefix(secret, service.TokenPrefix) {
		t.Fatalf("create token: %+v, %v", tok, err)
	}
	c, err := svc.Authenticate(ctx, secret)
	if err != nil || c.ProjectID != p.ID || c.Admin {
		t.Errorf("the token authenticates as %+v, %v", c, err)
	}
	_, _, err = ps.CreateToken(ctx, "nosuch", "", false)
	wantErr(t, "token of a missing project", err, cairn.ErrNotFound)
	other := must[cairn.Project](t)(ps.Create(ctx, "other", "other", cairn.Unlimited))
	if _, _, err := ps.CreateToken(ctx, other.ID, "", true); err != nil {
		t.Fatal(err)
	}
	if toks := must[[]cairn.Token](t)(ps.Tokens(ctx, "acme")); len(toks) != 1 || toks[0].ID != tok.ID || toks[0].Hash == nil {
		t.Errorf("tokens of acme: %+v", toks)
	}
	if toks := must[[]cairn.Token](t)(ps.Tokens(ctx, "")); len(toks) != 2 {
		t.Errorf("every token: %+v", toks)
	}
	_, err = ps.Tokens(ctx, "nosuch")
	wantErr(t, "tokens of a missing project", err, cairn.ErrNotFound)
	if err := ps.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete a deleted token", ps.DeleteToken(ctx, tok.ID), cairn.ErrNotFound)

	// Deleting a project takes its tokens.
	gone := must[cairn.Project](t)(ps.Delete(ctx, "other"))
	if gone.ID != other.ID {
		t.Errorf("deleted %+v", gone)
	}
	if toks := must[[]cairn.Token](t)(ps.Tokens(ctx, "")); len(toks) != 0 {
		t.Errorf("tokens after the project's deletion: %+v", toks)
	}
	_, err = ps.Show(ctx, "other")
	wantErr(t, "show a deleted project", err, cairn.ErrNotFound)
}

// TestBootstrap: the first start makes the admin project and an admin
// token; later starts make nothing.
func TestBootstrap(t *testing.T) {
	ctx := t.Context()
	cat := openCatalog(t)
	ps := service.NewProjects(cat)
	secret := must[string](t)(ps.Bootstrap(ctx))
	if secret == "" {
		t.Fatal("the first start made no admin token")
	}
	svc := service.New(service.Config{Catalog: cat, Engine: servicetest.NewEngine(nil)})
	if c, err := svc.Authenticate(ctx, secret); err != nil || c.ProjectID != service.AdminProject || !c.Admin {
		t.Errorf("the first start's token authenticates as %+v, %v", c, err)
	}
	if again := must[string](t)(ps.Bootstrap(ctx)); again != "" {
		t.Error("a second start made another admin token")
	}
	if toks := must[[]cairn.Token](t)(ps.Tokens(ctx, "")); len(toks) != 1 {
		t.Errorf("tokens: %+v", toks)
	}
}
