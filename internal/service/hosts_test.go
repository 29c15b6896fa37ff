package service_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

func newHostsService(t *testing.T, hc service.HostConfig) *service.Service {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	sqlitetest.Create(t, path)
	cat, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	return service.New(service.Config{Catalog: cat, Hosts: hc})
}

var hostsAdmin = service.Caller{ProjectID: "admin", Admin: true}

func TestHostNames(t *testing.T) {
	hn, err := os.Hostname()
	if err != nil {
		testenv.SkipOrFail(t, "the host has no name to compare the default with: "+err.Error())
	}
	for _, tc := range []struct {
		name string
		cfg  service.HostConfig
		host string
	}{
		{"configured", service.HostConfig{Name: "node7"}, "node7"},
		{"default", service.HostConfig{}, hn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHostsService(t, tc.cfg)
			if s.HostName() != tc.host || s.BackendHost() != tc.host+"@cairn" || s.PoolName() != tc.host+"@cairn#cairn" {
				t.Errorf("names %s %s %s", s.HostName(), s.BackendHost(), s.PoolName())
			}
		})
	}
}

func TestProcessesAndActions(t *testing.T) {
	s := newHostsService(t, service.HostConfig{Name: "n1"})
	ctx := t.Context()
	user := service.Caller{ProjectID: "p"}
	for _, tc := range []struct {
		name string
		call func(c service.Caller) error
		want error // for an admin
	}{
		{"processes", func(c service.Caller) error { _, err := s.Processes(ctx, c, service.ProcessFilter{}); return err }, nil},
		{"enable", func(c service.Caller) error {
			_, err := s.EnableProcess(ctx, c, "n1@cairn", service.BinaryVolume)
			return err
		}, nil},
		{"enable wrong host", func(c service.Caller) error {
			_, err := s.EnableProcess(ctx, c, "n2", service.BinaryBackup)
			return err
		}, cairn.ErrNotFound},
		{"disable", func(c service.Caller) error { return s.DisableProcess(ctx, c, "n1", service.BinaryBackup, nil, false) }, cairn.ErrInvalid},
		{"disable wrong binary", func(c service.Caller) error { return s.DisableProcess(ctx, c, "n1", "x", nil, false) }, cairn.ErrNotFound},
		{"freeze", func(c service.Caller) error { return s.FreezeHost(ctx, c, "n1") }, cairn.ErrInvalid},
		{"thaw", func(c service.Caller) error { return s.ThawHost(ctx, c, "n1@cairn") }, nil},
		{"thaw wrong host", func(c service.Caller) error { return s.ThawHost(ctx, c, "n1@lvm") }, cairn.ErrInvalid},
		{"show host", func(c service.Caller) error { _, err := s.ShowHost(ctx, c, "n1@cairn"); return err }, nil},
		{"pools", func(c service.Caller) error { _, err := s.Pools(ctx, c); return err }, nil},
		{"capabilities", func(c service.Caller) error { _, err := s.BackendCapabilities(ctx, c, "n1@cairn#cairn"); return err }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(user); !errors.Is(err, cairn.ErrForbidden) {
				t.Errorf("non-admin: %v, want forbidden", err)
			}
			if err := tc.call(hostsAdmin); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("admin: %v, want %v", err, tc.want)
			}
		})
	}
	ps, _ := s.Processes(ctx, hostsAdmin, service.ProcessFilter{Host: "n1", Binary: service.BinaryVolume})
	if len(ps) != 1 || ps[0].Host != "n1@cairn" {
		t.Errorf("volume service on n1: %+v", ps)
	}
}

func TestFileSystemGiB(t *testing.T) {
	dir := t.TempDir()
	total, free, err := service.FileSystemGiB(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := math.Round(float64(st.Blocks)*float64(st.Bsize)/(1<<30)*100) / 100
	if total != want || free > total || free < 0 {
		t.Errorf("total %v free %v, want total %v", total, free, want)
	}
	if _, _, err := service.FileSystemGiB(filepath.Join(dir, "missing")); err == nil {
		t.Error("statfs of a missing directory succeeded")
	}
	// Without a reachable directory the pool's capacity is unknown.
	s := newHostsService(t, service.HostConfig{Name: "n1", DataDir: filepath.Join(dir, "missing")})
	pools, err := s.Pools(t.Context(), hostsAdmin)
	if err != nil || len(pools) != 1 || !math.IsNaN(pools[0].TotalGiB) || !math.IsNaN(pools[0].FreeGiB) {
		t.Errorf("pools %+v, %v", pools, err)
	}
	if got := []string{pools[0].Name, pools[0].VendorName, pools[0].StorageProtocol, pools[0].DriverVersion}; !slices.Equal(got, []string{"n1@cairn#cairn", "cairn", "nbd", "1.0"}) {
		t.Errorf("pool %v", got)
	}
}
