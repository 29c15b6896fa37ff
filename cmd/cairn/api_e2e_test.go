package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// apiEnv runs cairn serve on a data directory of its own and the client
// commands against it, in an environment free of the caller's CAIRN_*
// settings and client config.
type apiEnv struct {
	t     *testing.T
	dir   string
	data  string
	url   string
	pid   int
	base  []string // the environment of every command
	extra []string // added for the next commands (see with)
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	dir := t.TempDir()
	e := &apiEnv{t: t, dir: dir, data: filepath.Join(dir, "data")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			e.base = append(e.base, kv)
		}
	}
	e.base = append(e.base, "CAIRN_DATA_DIR="+e.data, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if os.Getenv("GORACE") == "" {
		// A binary built with -race sleeps a second when it exits 0, to
		// let other goroutines report; this test runs a hundred of them.
		e.base = append(e.base, "GORACE=atexit_sleep_ms=50")
	}
	return e
}

// with returns a copy of e whose commands also get the variables kv.
func (e *apiEnv) with(kv ...string) *apiEnv {
	c := *e
	c.extra = append(append([]string(nil), e.extra...), kv...)
	return &c
}

// serve starts cairn serve on an ephemeral port and returns once it
// answers; it is stopped (by its PID) when the test ends.
func (e *apiEnv) serve() {
	e.t.Helper()
	logPath := filepath.Join(e.dir, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logFile.Close()
	cleanupDataPlane(e.t, e.data)
	cmd := exec.Command(binaryFor(e.t), "serve", "--data-dir", e.data, "--listen", "127.0.0.1:0",
		"--log-format", "text", "--workers", "4")
	cmd.Env = e.base
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.pid = cmd.Process.Pid
	exited := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	e.t.Cleanup(func() {
		_ = syscall.Kill(e.pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(e.pid, syscall.SIGKILL)
			<-exited
		}
	})
	serveLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	select {
	case line := <-lines:
		// cairn serving on http://ADDR (data directory DIR)
		_, rest, ok := strings.Cut(line, "cairn serving on ")
		if !ok {
			e.t.Fatalf("cairn serve printed %q\n%s", line, serveLog())
		}
		e.url, _, _ = strings.Cut(rest, " ")
	case <-exited:
		e.t.Fatalf("cairn serve exited:\n%s", serveLog())
	case <-time.After(pointTimeout):
		e.t.Fatalf("cairn serve did not start:\n%s", serveLog())
	}
}

// stop stops the server and waits until it is gone.
func (e *apiEnv) stop() {
	e.t.Helper()
	if err := syscall.Kill(e.pid, syscall.SIGTERM); err != nil {
		e.t.Fatal(err)
	}
	for range 2000 {
		if err := syscall.Kill(e.pid, 0); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("cairn serve (pid %d) did not stop", e.pid)
}

func (e *apiEnv) run(args ...string) result {
	e.t.Helper()
	return runCLI(e.t, append(append([]string(nil), e.base...), e.extra...), args...)
}

func (e *apiEnv) ok(args ...string) string { e.t.Helper(); return cliOK(e.t, e.run, args...) }

func (e *apiEnv) json(v any, args ...string) { e.t.Helper(); cliJSON(e.t, e.run, v, args...) }

func (e *apiEnv) fails(code int, want string, args ...string) result {
	e.t.Helper()
	return cliFails(e.t, e.run, code, want, args...)
}

// haveNBDTools reports whether nbdcopy is here to read and write volumes;
// under CI=true it must be.
func haveNBDTools(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("nbdcopy"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and nbdcopy is not installed (test.sh installs libnbd-bin)")
		}
		t.Log("nbdcopy is not installed: skipping the parts that read and write volume data")
		return false
	}
	return true
}

// volumeHash reads a whole volume through NBD and returns its SHA-256
// and size.
func volumeHash(t *testing.T, uri string) (string, int64) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "nbdcopy", uri, "-")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, cerr := io.Copy(h, out)
	if err := cmd.Wait(); err != nil || cerr != nil {
		t.Fatalf("nbdcopy %s -: %v %v\n%s", uri, err, cerr, stderr.String())
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

// imageHash is the SHA-256 of a volume of size bytes holding data at its
// start and zeros after.
func imageHash(data []byte, size int64) string {
	h := sha256.New()
	h.Write(data)
	zeros := make([]byte, 1<<20)
	for left := size - int64(len(data)); left > 0; left -= int64(len(zeros)) {
		h.Write(zeros[:min(left, int64(len(zeros)))])
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

const gibBytes = int64(1) << 30

// TestAPIEndToEnd runs cairn serve and drives it with the CLI as a user
// would: volumes, data through NBD, snapshots, full and incremental
// backups, restores checked byte for byte, projects and tokens, errors.
func TestAPIEndToEnd(t *testing.T) {
	nbd := haveNBDTools(t)
	e := newAPIEnv(t)
	e.serve()

	// No URL or token: the CLI finds the local cairn serve.
	var orig wire.Volume
	e.json(&orig, "volume", "create", "--size", "1", "--name", "orig", "--description", "the original", "--wait")
	if orig.Status != "available" || orig.Size != 1 || orig.Name != "orig" || orig.ProjectID != "admin" {
		t.Fatalf("created volume: %+v", orig)
	}

	// Write a pattern through the NBD export of the attached volume.
	img1 := filepath.Join(e.dir, "img1")
	data1 := randomFile(t, img1, 4<<20, 1)
	var att wire.Attachment
	e.json(&att, "volume", "attach", "orig")
	if att.VolumeID != orig.ID || len(att.URIs) == 0 || !strings.HasPrefix(att.URIs[0], "nbd+unix:///"+orig.ID) {
		t.Fatalf("attachment: %+v", att)
	}
	var shown wire.Volume
	e.json(&shown, "volume", "show", orig.ID)
	if shown.Status != "in-use" || len(shown.Attachments) != 1 {
		t.Fatalf("attached volume: %+v", shown)
	}
	if nbd {
		runTool(t, "nbdcopy", img1, att.URIs[0])
	}
	e.ok("volume", "detach", "orig")

	var snap wire.Snapshot
	e.json(&snap, "snapshot", "create", "orig", "--name", "s1", "--wait")
	if snap.Status != "available" || snap.VolumeID != orig.ID || snap.Name != "s1" {
		t.Fatalf("snapshot: %+v", snap)
	}
	var full wire.Backup
	e.json(&full, "backup", "create", "--volume-id", orig.ID, "--name", "full", "--wait")
	if full.Status != "available" || full.IsIncremental || full.VolumeID != orig.ID {
		t.Fatalf("full backup: %+v", full)
	}

	// Change the start of the volume, then back it up incrementally.
	img2 := filepath.Join(e.dir, "img2")
	data2 := randomFile(t, img2, 1<<20, 2)
	e.json(&att, "volume", "attach", orig.ID)
	if nbd {
		runTool(t, "nbdcopy", img2, att.URIs[0])
	}
	e.ok("volume", "detach", orig.ID)
	var inc wire.Backup
	e.json(&inc, "backup", "create", "--volume-id", "orig", "--incremental", "--wait")
	if inc.Status != "available" || !inc.IsIncremental || inc.ParentID == nil || *inc.ParentID != full.ID {
		t.Fatalf("incremental backup: %+v", inc)
	}

	// Restore the incremental into a new volume, the full one through
	// volume create --backup-id.
	var restored, fromFull wire.Volume
	e.json(&restored, "backup", "restore", inc.ID, "--name", "restored", "--wait")
	if restored.Status != "available" || restored.Name != "restored" || restored.Size != 1 {
		t.Fatalf("restored volume: %+v", restored)
	}
	e.json(&fromFull, "volume", "create", "--backup-id", "full", "--name", "from-full", "--wait")
	if fromFull.Status != "available" || fromFull.BackupID == nil || *fromFull.BackupID != full.ID {
		t.Fatalf("volume from the full backup: %+v", fromFull)
	}
	if nbd {
		now := append(append([]byte(nil), data2...), data1[len(data2):]...)
		want := map[string]string{orig.ID: imageHash(now, gibBytes), restored.ID: imageHash(now, gibBytes),
			fromFull.ID: imageHash(data1, gibBytes)}
		for id, w := range want {
			e.json(&att, "volume", "attach", id)
			got, n := volumeHash(t, att.URIs[0])
			if n != gibBytes || got != w {
				t.Errorf("volume %s: read %d bytes, sha256 %s; want %d bytes, %s", id, n, got, gibBytes, w)
			}
			e.ok("volume", "detach", id)
		}
	}

	// Lists, shows and limits, as JSON and as text.
	var vols []wire.Volume
	e.json(&vols, "volume", "list", "--sort", "name:asc")
	if len(vols) != 3 || vols[0].Name != "from-full" || vols[1].Name != "orig" || vols[2].Name != "restored" {
		t.Fatalf("volume list: %+v", vols)
	}
	e.json(&vols, "volume", "list", "--limit", "1")
	if len(vols) != 1 {
		t.Fatalf("volume list --limit 1: %+v", vols)
	}
	var snaps []wire.Snapshot
	e.json(&snaps, "snapshot", "list", "--volume-id", "orig")
	if len(snaps) != 1 || snaps[0].ID != snap.ID {
		t.Fatalf("snapshot list: %+v", snaps)
	}
	var backups []wire.Backup
	e.json(&backups, "backup", "list", "--volume-id", orig.ID)
	if len(backups) != 2 {
		t.Fatalf("backup list: %+v", backups)
	}
	var lim wire.Limits
	e.json(&lim, "limits")
	if lim.Usage.Volumes != 3 || lim.Usage.Snapshots != 1 || lim.Usage.Backups != 2 || lim.Quota.Volumes != -1 {
		t.Fatalf("limits: %+v", lim)
	}
	out := e.ok("volume", "list")
	if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "STATUS") || !strings.Contains(out, orig.ID+"  orig") {
		t.Fatalf("volume list:\n%s", out)
	}
	out = e.ok("volume", "show", "orig")
	for _, want := range []string{"id:          " + orig.ID, "status:      available", "description: the original", "size:        1 GiB"} {
		if !strings.Contains(out, want) {
			t.Fatalf("volume show lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"snapshot", "show", "s1"}, {"backup", "show", full.ID}, {"limits"},
		{"backup", "list"}, {"snapshot", "list"}} {
		if out := e.ok(args...); out == "" {
			t.Fatalf("cairn %v printed nothing", args)
		}
	}
	var updated wire.Volume
	e.json(&updated, "volume", "update", "from-full", "--name", "copy", "--description", "")
	if updated.Name != "copy" || updated.Description != "" || updated.ID != fromFull.ID {
		t.Fatalf("volume update: %+v", updated)
	}
	var extended wire.Volume
	e.json(&extended, "volume", "extend", "copy", "--size", "2G", "--wait")
	if extended.Size != 2 || extended.Status != "available" {
		t.Fatalf("volume extend: %+v", extended)
	}
	var reset wire.Volume
	e.json(&reset, "volume", "reset-status", "copy", "--status", "error")
	if reset.Status != "error" {
		t.Fatalf("volume reset-status: %+v", reset)
	}

	// Export and import a record: this deployment has the backup already.
	recFile := filepath.Join(e.dir, "record.json")
	if err := os.WriteFile(recFile, []byte(e.ok("--json", "backup", "export-record", "full")), 0o600); err != nil {
		t.Fatal(err)
	}
	var rec wire.BackupRecord
	e.json(&rec, "backup", "export-record", full.ID)
	if rec.BackupService == "" || rec.BackupURL == "" {
		t.Fatalf("export-record: %+v", rec)
	}
	e.fails(exitError, "already exists", "backup", "import-record", recFile)

	// A backup that fails ends --wait with its fail reason; the volume is
	// available again.
	if err := os.WriteFile(filepath.Join(e.data, "backups", "broken"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.fails(exitError, "ended in status error", "backup", "create", "--volume-id", "orig", "--container", "broken", "--name", "doomed", "--wait")
	if !strings.Contains(r.stderr, "broken") {
		t.Fatalf("the failure does not say why: %s", r.stderr)
	}
	var doomed []wire.Backup
	e.json(&doomed, "backup", "list", "--name", "doomed")
	if len(doomed) != 1 || doomed[0].Status != "error" || doomed[0].FailReason == nil || *doomed[0].FailReason == "" {
		t.Fatalf("failed backup: %+v", doomed)
	}
	if err := os.Remove(filepath.Join(e.data, "backups", "broken")); err != nil {
		t.Fatal(err)
	}
	e.ok("backup", "delete", "doomed", "--wait")
	e.json(&shown, "volume", "show", "orig")
	if shown.Status != "available" {
		t.Fatalf("volume after a failed backup: %+v", shown)
	}

	// Bad input.
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"volume", "show", "nosuch"}, exitError, "volume nosuch: not found"},
		{[]string{"volume", "delete", "nosuch"}, exitError, "not found"},
		{[]string{"volume", "create", "x", "--size", "0"}, exitUsage, "positive number of GiB"},
		{[]string{"volume", "create", "x", "--size", "1.5G"}, exitUsage, "whole number of GiB"},
		{[]string{"volume", "create", "x"}, exitUsage, "--size is required"},
		{[]string{"volume", "create", "--size", "1", "--snapshot-id", "s1", "--backup-id", "full"}, exitUsage, "not both"},
		{[]string{"volume", "create", "a", "b", "--size", "1"}, exitUsage, "at most a NAME"},
		{[]string{"volume", "extend", "orig", "--size", "1"}, exitError, "must be larger"},
		{[]string{"volume", "delete", "orig"}, exitError, "has snapshots"},
		{[]string{"volume", "update", "orig"}, exitUsage, "nothing to update"},
		{[]string{"volume", "reset-status", "orig"}, exitUsage, "--status is required"},
		{[]string{"volume", "reset-status", "orig", "--status", "deleted"}, exitError, "want one of"},
		{[]string{"backup", "create", "--volume-id", orig.ID, "--snapshot-id", snap.ID}, exitUsage, "not both"},
		{[]string{"backup", "create"}, exitUsage, "give --volume-id or --snapshot-id"},
		{[]string{"backup", "create", "--volume-id", orig.ID, "--container", "no/slash"}, exitError, "container"},
		{[]string{"backup", "restore", full.ID, "--volume-id", orig.ID, "--name", "x"}, exitUsage, "not both"},
		{[]string{"backup", "import-record"}, exitUsage, "give a FILE"},
		{[]string{"snapshot", "create"}, exitUsage, "accepts 1 arg"},
		{[]string{"snapshot", "show", "nosuch"}, exitError, "snapshot nosuch: not found"},
		{[]string{"volume", "list", "--status", "x", "extra"}, exitUsage, "no arguments"},
		{[]string{"volume", "list", "--sort", "colour"}, exitError, "sort key"},
		// Direct-only commands refuse while cairn serve owns the directory.
		{[]string{"volume", "revert", "orig", "s1"}, exitError, fmt.Sprintf("belongs to cairn serve (pid %d at %s)", e.pid, e.url)},
		{[]string{"volume", "snapshot", "list"}, exitError, "belongs to cairn serve"},
		{[]string{"volume", "clone", "s1", "c"}, exitError, "belongs to cairn serve"},
		{[]string{"volume", "serve"}, exitError, "belongs to cairn serve"},
		{[]string{"volume", "revert", "orig", "s1", "--url", e.url}, exitUsage, "unknown flag: --url"},
	} {
		r := e.run(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("cairn %s: exit %d (want %d), stderr %q (want %q)", strings.Join(c.args, " "), r.code, c.code, r.stderr, c.msg)
		}
	}
	// --json errors are JSON too.
	r = e.run("--json", "volume", "show", "nosuch")
	var jerr struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
	}
	if r.code != exitError || json.Unmarshal([]byte(r.stdout), &jerr) != nil || jerr.ExitCode != exitError || !strings.Contains(jerr.Error, "not found") {
		t.Fatalf("--json error: exit %d, %q", r.code, r.stdout)
	}

	// Connection settings: explicit ones, the config file, and their errors.
	adminToken := strings.TrimSpace(readFile(t, filepath.Join(e.data, adminTokenFile)))
	elsewhere := e.with("CAIRN_DATA_DIR=" + filepath.Join(e.dir, "empty"))
	elsewhere.fails(exitUsage, "no token for the API", "--json", "volume", "list", "--url", e.url)
	elsewhere.with("CAIRN_URL="+e.url).fails(exitUsage, "no token", "volume", "list")
	elsewhere.with("CAIRN_TOKEN="+adminToken).fails(exitUsage, "no API URL", "volume", "list")
	elsewhere.with("CAIRN_URL="+e.url, "CAIRN_TOKEN=cairn_bogus").fails(exitError, "unknown or revoked token", "volume", "list")
	elsewhere.with("CAIRN_URL=ftp://x", "CAIRN_TOKEN=t").fails(exitUsage, "want http://HOST:PORT", "volume", "list")
	elsewhere.fails(exitUsage, "works through the API", "snapshot", "list")
	elsewhere.fails(exitUsage, "works through the API", "limits")
	elsewhere.fails(exitUsage, "--backup-id needs the API", "volume", "create", "x", "--size", "1G", "--backup-id", "b")
	elsewhere.with("CAIRN_CLIENT_CONFIG="+filepath.Join(e.dir, "nosuch.yaml")).fails(exitError, "client config", "volume", "list")
	var list []wire.Volume
	elsewhere.json(&list, "volume", "list", "--url", e.url, "--token", adminToken)
	if len(list) != 3 {
		t.Fatalf("volume list with --url and --token: %+v", list)
	}
	cfgDir := filepath.Join(e.dir, "config", "cairn")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("url: %s\ntoken: %s\n", e.url, adminToken)
	if err := os.WriteFile(filepath.Join(cfgDir, "client.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere.json(&lim, "limits")
	if lim.Usage.Volumes != 3 {
		t.Fatalf("limits through the config file: %+v", lim)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "client.yaml"), []byte("uri: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere.fails(exitUsage, "field uri not found", "limits")
	if err := os.Remove(filepath.Join(cfgDir, "client.yaml")); err != nil {
		t.Fatal(err)
	}

	// A second project and its token see none of the first's resources.
	var proj projectJSON
	e.json(&proj, "project", "create", "second", "--quota-volumes", "1", "--quota-gigabytes", "10")
	if proj.Name != "second" || proj.Quota.Volumes != 1 || proj.Quota.Gigabytes != 10 || proj.Quota.Snapshots != -1 {
		t.Fatalf("project create: %+v", proj)
	}
	e.fails(exitError, "already exists", "project", "create", "again", "--id", proj.ID)
	e.fails(exitUsage, "-1 (unlimited) or more", "project", "create", "x", "--quota-backups", "-2")
	var tok tokenJSON
	e.json(&tok, "token", "create", "--project", proj.ID, "--name", "second's")
	if !strings.HasPrefix(tok.Secret, "cairn_") || tok.ProjectID != proj.ID || tok.Admin {
		t.Fatalf("token create: %+v", tok)
	}
	plain := e.ok("token", "create", "--project", proj.ID)
	if !strings.HasPrefix(plain, "cairn_") || strings.Count(plain, "\n") != 1 {
		t.Fatalf("token create prints %q", plain)
	}
	e.fails(exitError, "not found", "token", "create", "--project", "nosuch")
	e.fails(exitUsage, "--project is required", "token", "create")
	second := elsewhere.with("CAIRN_URL="+e.url, "CAIRN_TOKEN="+tok.Secret)
	for _, kind := range []string{"volume", "snapshot", "backup"} {
		var items []json.RawMessage
		second.json(&items, kind, "list")
		if len(items) != 0 {
			t.Fatalf("the second project sees %ss: %s", kind, items)
		}
	}
	second.fails(exitError, "not found", "volume", "show", orig.ID)
	second.fails(exitError, "not found", "backup", "restore", full.ID)
	second.fails(exitError, "not found", "volume", "list", "--project", "admin")
	var own wire.Volume
	second.json(&own, "volume", "create", "--size", "1", "--name", "theirs", "--wait")
	if own.ProjectID != proj.ID {
		t.Fatalf("the second project's volume: %+v", own)
	}
	// Every project's, asked with a project's token: its own, as the
	// block storage API answers (the clients' name lookups ask so).
	second.json(&list, "volume", "list", "--all-projects")
	if len(list) != 1 || list[0].ID != own.ID {
		t.Fatalf("a project's --all-projects: %+v, want its own volume only", list)
	}
	second.fails(exitError, "quota", "volume", "create", "--size", "1", "--name", "one-too-many")
	second.fails(exitError, "reset-status is for admins", "volume", "reset-status", "theirs", "--status", "error")
	// The admin sees it in that project, and every project's at once.
	e.json(&list, "volume", "list", "--project", proj.ID)
	if len(list) != 1 || list[0].ID != own.ID {
		t.Fatalf("the admin in the second project: %+v", list)
	}
	e.json(&list, "volume", "list", "--all-projects")
	if len(list) != 4 {
		t.Fatalf("every project's volumes: %+v", list)
	}
	var projects []projectJSON
	e.json(&projects, "project", "list")
	if len(projects) != 2 {
		t.Fatalf("project list: %+v", projects)
	}
	if out := e.ok("project", "list"); !strings.Contains(out, "1/1") || !strings.Contains(out, "3/-") {
		t.Fatalf("project list:\n%s", out)
	}
	e.json(&proj, "project", "set-quota", proj.ID, "--quota-volumes", "2")
	if proj.Quota.Volumes != 2 || proj.Quota.Gigabytes != 10 || proj.Usage.Volumes != 1 {
		t.Fatalf("project set-quota: %+v", proj)
	}
	e.fails(exitUsage, "at least one", "project", "set-quota", proj.ID)
	e.fails(exitError, "not found", "project", "set-quota", "nosuch", "--quota-volumes", "1")
	e.fails(exitError, "conflict", "project", "delete", proj.ID)
	var tokens []tokenJSON
	e.json(&tokens, "token", "list", "--project", proj.ID)
	if len(tokens) != 2 || tokens[0].Secret != "" {
		t.Fatalf("token list: %+v", tokens)
	}
	e.json(&tokens, "token", "list")
	if len(tokens) != 3 {
		t.Fatalf("every token: %+v", tokens)
	}
	second.ok("volume", "delete", "theirs", "--wait")
	e.ok("token", "delete", tok.ID)
	e.fails(exitError, "not found", "token", "delete", tok.ID)
	// The service may trust a verified token for a few seconds.
	deadline := time.Now().Add(pointTimeout)
	for {
		r := second.run("volume", "list")
		if r.code == exitError && strings.Contains(r.stderr, "unknown or revoked token") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted token still works: exit %d, %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.ok("project", "delete", proj.ID)
	e.json(&projects, "project", "list")
	if len(projects) != 1 || projects[0].ID != "admin" {
		t.Fatalf("projects left: %+v", projects)
	}

	// Everything goes.
	var gone []deleted
	e.json(&gone, "volume", "delete", "restored", "copy", "--wait")
	if len(gone) != 2 || gone[0].Status != "deleted" || gone[1].Status != "deleted" {
		t.Fatalf("volume delete --wait: %+v", gone)
	}
	e.ok("snapshot", "delete", "s1", "--wait")
	e.ok("volume", "delete", "orig", "--wait")
	if out := e.ok("backup", "delete", inc.ID, full.ID, "--wait"); !strings.Contains(out, "deleted backup "+full.ID) {
		t.Fatalf("backup delete --wait: %s", out)
	}
	e.json(&lim, "limits")
	if lim.Usage != (cairn.Usage{}) {
		t.Fatalf("limits at the end: %+v", lim)
	}

	// Once cairn serve stops, the volume commands work directly again.
	e.stop()
	var direct []volJSON
	e.json(&direct, "volume", "list")
	if len(direct) != 0 {
		t.Fatalf("direct list after the service: %+v", direct)
	}
}

// TestAPIStaleServiceFile checks that a service file whose process is
// gone leaves the volume commands direct.
func TestAPIStaleServiceFile(t *testing.T) {
	e := newAPIEnv(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.data, 0o700); err != nil {
		t.Fatal(err)
	}
	info := `{"pid":` + strconv.Itoa(dead.Process.Pid) + `,"url":"http://127.0.0.1:1"}`
	if err := os.WriteFile(filepath.Join(e.data, serviceFile), []byte(info), 0o600); err != nil {
		t.Fatal(err)
	}
	var vols []volJSON
	e.json(&vols, "volume", "create", "direct", "--size", "1M")
	if len(vols) != 1 || vols[0].Name != "direct" || vols[0].Size != 1<<20 {
		t.Fatalf("direct create: %+v", vols)
	}
	e.ok("volume", "snapshot", "create", "direct")
	e.fails(exitUsage, "--wait needs the API", "volume", "create", "x", "--size", "1G", "--wait")
	e.fails(exitUsage, "works through the API", "volume", "update", "direct", "--name", "y")
	e.fails(exitError, "catalog", "project", "list")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
