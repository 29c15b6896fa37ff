package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
	"github.com/cairnproject/cairn/internal/wire"
)

// startService runs the real API over a real service in a temporary
// directory and returns its URL and a function that makes a project's
// token.
func startService(t *testing.T) (string, func(project string, admin bool) string) {
	t.Helper()
	return startServiceWith(t, filepath.Join(t.TempDir(), "backups"))
}

// startServiceWith is startService with its backup store in the
// directory backups, which another service may share.
func startServiceWith(t *testing.T, backups string) (string, func(project string, admin bool) string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	sqlitetest.Create(t, filepath.Join(dir, "catalog.db"))
	cat, err := sqlite.Open(ctx, filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := volume.Open(filepath.Join(dir, "data"), volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := repo.Secret{Kind: format.KeyKindFile, Bytes: []byte("0123456789abcdef0123456789abcdef\n")}
	var mu sync.Mutex
	openRepo := func(ctx context.Context, container string) (*repo.Repository, error) {
		mu.Lock()
		defer mu.Unlock()
		be, err := local.New(filepath.Join(backups, container), true)
		if err != nil {
			return nil, err
		}
		if _, err := repo.ReadConfig(ctx, be); errors.Is(err, cairn.ErrNotRepository) {
			return repo.Init(ctx, be, secret, repo.InitOptions{ChunkSize: 256 << 10, GC: repo.DefaultGC}, repo.Options{})
		} else if err != nil {
			return nil, err
		}
		return repo.Open(ctx, be, secret, repo.Options{})
	}
	exports, err := volumectl.OpenExportTable(filepath.Join(dir, "data"), eng)
	if err != nil {
		t.Fatal(err)
	}
	ops := volumectl.Direct{E: eng, X: exports}
	svc := service.New(service.Config{Catalog: cat, Engine: service.NewEngine(ops),
		OpenRepo: service.Repositories(openRepo, ops, nil), Workers: 4,
		NBDSocket: filepath.Join(dir, "nbd.sock")})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(svc, nil, nil))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		svc.Stop()
		eng.Close()
		cat.Close()
	})
	token := func(project string, admin bool) string {
		t.Helper()
		if _, err := service.CreateProject(ctx, cat, project, project, cairn.Unlimited, time.Now()); err != nil && !errors.Is(err, cairn.ErrExists) {
			t.Fatal(err)
		}
		s, _, err := service.CreateToken(ctx, cat, cairn.Token{ProjectID: project, Name: "test", Admin: admin})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return srv.URL, token
}

// TestClientRealService drives the real API: a volume's life, a
// snapshot, full and incremental backups, a restore, and what another
// project may see.
func TestClientRealService(t *testing.T) {
	base, token := startService(t)
	ctx := t.Context()
	c := New(base+"/v3", token("admin", true), nil)
	c.PollInterval = 10 * time.Millisecond
	info, err := c.Whoami(ctx)
	if err != nil || info.ProjectID != "admin" || !info.Admin {
		t.Fatalf("Whoami: %+v %v", info, err)
	}
	wait := func(kind Kind, id, want string) {
		t.Helper()
		st, err := c.Wait(ctx, kind, id, nil)
		if err != nil || st != want {
			t.Fatalf("Wait %s %s: %q %v, want %q", kind, id, st, err, want)
		}
	}

	var vreq wire.VolumeCreateRequest
	one := int64(1)
	vreq.Volume.Size, vreq.Volume.Name = &one, "db"
	v, err := c.CreateVolume(ctx, vreq)
	if err != nil || v.Status != "creating" || v.Size != 1 {
		t.Fatalf("CreateVolume: %+v %v", v, err)
	}
	wait(Volume, v.ID, "available")
	if err := c.ExtendVolume(ctx, v.ID, 2); err != nil {
		t.Fatal(err)
	}
	wait(Volume, v.ID, "available")
	desc := "the database"
	if v, err = c.UpdateVolume(ctx, v.ID, nil, &desc); err != nil || v.Size != 2 || v.Description != desc || v.Name != "db" {
		t.Fatalf("UpdateVolume: %+v %v", v, err)
	}
	a, err := c.AttachVolume(ctx, v.ID)
	if err != nil || len(a.URIs) == 0 {
		t.Fatalf("AttachVolume: %+v %v", a, err)
	}
	// The volume says where it is exported, as long as it is.
	if v, err = c.GetVolume(ctx, v.ID); err != nil || len(v.Attachments) != 1 || !slices.Equal(v.Attachments[0].URIs(), a.URIs) {
		t.Fatalf("attached volume: %+v %v; want the URIs %q", v, err, a.URIs)
	}
	if _, err := c.AttachVolume(ctx, v.ID); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("attaching an attached volume: %v", err)
	}
	if err := c.DeleteVolume(ctx, v.ID); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("deleting an in-use volume: %v", err)
	}
	if err := c.DetachVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if v, err = c.GetVolume(ctx, v.ID); err != nil || len(v.Attachments) != 0 {
		t.Fatalf("detached volume: %+v %v", v, err)
	}

	var sreq wire.SnapshotCreateRequest
	name := "s1"
	sreq.Snapshot.VolumeID, sreq.Snapshot.Name = json.RawMessage(`"`+v.ID+`"`), &name
	s, err := c.CreateSnapshot(ctx, sreq)
	if err != nil {
		t.Fatal(err)
	}
	wait(Snapshot, s.ID, "available")

	var breq wire.BackupCreateRequest
	breq.Backup.VolumeID = v.ID
	full, err := c.CreateBackup(ctx, breq)
	if err != nil {
		t.Fatal(err)
	}
	wait(Backup, full.ID, "available")
	breq.Backup.Incremental = true
	inc, err := c.CreateBackup(ctx, breq)
	if err != nil {
		t.Fatal(err)
	}
	wait(Backup, inc.ID, "available")
	if inc, err = c.GetBackup(ctx, inc.ID); err != nil || !inc.IsIncremental || inc.ParentID == nil || *inc.ParentID != full.ID {
		t.Fatalf("incremental: %+v %v", inc, err)
	}
	res, err := c.RestoreBackup(ctx, inc.ID, "", "restored")
	if err != nil || res.VolumeName != "restored" {
		t.Fatalf("RestoreBackup: %+v %v", res, err)
	}
	wait(Volume, res.VolumeID, "available")
	rec, err := c.ExportRecord(ctx, full.ID)
	if err != nil || rec.BackupURL == "" {
		t.Fatalf("ExportRecord: %+v %v", rec, err)
	}
	if _, err := c.ImportRecord(ctx, rec); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("importing a backup already here: %v", err)
	}
	if tl, err := c.Tasks(ctx, full.ID); err != nil || len(tl) != 1 || tl[0].Kind != "backup.create" || tl[0].State != cairn.TaskDone {
		t.Fatalf("Tasks: %+v %v", tl, err)
	}
	l, err := c.Limits(ctx)
	if err != nil || l.Usage.Volumes != 2 || l.Usage.Backups != 2 || l.Usage.Snapshots != 1 {
		t.Fatalf("Limits: %+v %v", l, err)
	}
	vols, _, err := c.ListVolumes(ctx, true, url.Values{"sort": {"name:asc"}})
	if err != nil || len(vols) != 2 || vols[0].Name != "db" || vols[1].Name != "restored" {
		t.Fatalf("ListVolumes: %+v %v", vols, err)
	}
	page, links, err := c.ListVolumes(ctx, false, url.Values{"limit": {"1"}, "sort": {"name:asc"}})
	if err != nil || len(page) != 1 || NextMarker(links) != page[0].ID {
		t.Fatalf("a page of volumes: %+v %+v %v", page, links, err)
	}

	// Another project sees nothing of these; the admin acts in it.
	other := New(base, token("other", false), nil)
	if vols, _, err := other.ListVolumes(ctx, true, nil); err != nil || len(vols) != 0 {
		t.Fatalf("another project's volumes: %+v %v", vols, err)
	}
	_, err = other.GetVolume(ctx, v.ID)
	var ae *APIError
	if !errors.Is(err, cairn.ErrNotFound) || !errors.As(err, &ae) || !strings.HasPrefix(ae.RequestID, "req-") {
		t.Fatalf("another project's volume: %#v", err)
	}
	if err := other.ResetVolumeStatus(ctx, v.ID, "error"); !errors.Is(err, cairn.ErrForbidden) && !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("reset-status by a member: %v", err)
	}
	c.SetProject("other")
	if vols, _, err := c.ListVolumes(ctx, true, nil); err != nil || len(vols) != 0 {
		t.Fatalf("the admin in project other: %+v %v", vols, err)
	}
	c.SetProject("")

	// Everything goes.
	for _, id := range []string{res.VolumeID} {
		if err := c.DeleteVolume(ctx, id); err != nil {
			t.Fatal(err)
		}
		wait(Volume, id, Gone)
	}
	if err := c.DeleteSnapshot(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	wait(Snapshot, s.ID, Gone)
	if err := c.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	wait(Volume, v.ID, Gone)
	for _, id := range []string{inc.ID, full.ID} {
		if err := c.DeleteBackup(ctx, id); err != nil {
			t.Fatal(err)
		}
		wait(Backup, id, Gone)
	}
	if l, err = c.Limits(ctx); err != nil || l.Usage != (cairn.Usage{}) {
		t.Fatalf("Limits at the end: %+v %v", l, err)
	}
}

// TestClientImportRecord: a backup exported from one deployment is
// imported into another with the same backup store and key. The API
// answers the import with the block storage API's summary; ImportRecord
// returns the whole backup, read back.
func TestClientImportRecord(t *testing.T) {
	backups := filepath.Join(t.TempDir(), "backups")
	ctx := t.Context()
	baseA, tokenA := startServiceWith(t, backups)
	a := New(baseA+"/v3", tokenA("p", false), nil)
	a.PollInterval = 10 * time.Millisecond
	var vreq wire.VolumeCreateRequest
	one := int64(1)
	vreq.Volume.Size = &one
	v, err := a.CreateVolume(ctx, vreq)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := a.Wait(ctx, Volume, v.ID, nil); err != nil || st != "available" {
		t.Fatalf("volume: %s %v", st, err)
	}
	var breq wire.BackupCreateRequest
	breq.Backup.VolumeID, breq.Backup.Name = v.ID, "b1"
	b, err := a.CreateBackup(ctx, breq)
	if err != nil || b.ID == "" || b.Name != "b1" || len(b.Links) != 2 {
		t.Fatalf("CreateBackup: %+v %v", b, err)
	}
	if st, err := a.Wait(ctx, Backup, b.ID, nil); err != nil || st != "available" {
		t.Fatalf("backup: %s %v", st, err)
	}
	rec, err := a.ExportRecord(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}

	baseB, tokenB := startServiceWith(t, backups)
	c := New(baseB+"/v3", tokenB("q", false), nil)
	got, err := c.ImportRecord(ctx, rec)
	if err != nil || got.ID != b.ID || got.Name != "b1" || got.Status != "available" || got.Size != 1 ||
		got.VolumeID != v.ID || got.ProjectID != "q" {
		t.Fatalf("ImportRecord: %+v %v", got, err)
	}
}
