package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/testenv"
)

// The end-to-end tests run the built binary, as a user would.

// cairnBin is the binary the end-to-end tests run, built in TestMain with
// the race detector when the tests run with it. binaryFor chooses
// between it and crashBin.
var cairnBin string

// crashBin is the binary the crash tests run: built, once and when first
// needed, without the race detector.
var crashBin struct {
	once sync.Once
	path string
	err  error
}

// binaryFor returns the binary test t runs. A crash test (a top-level test
// whose name has "Kill") runs one built without the race detector. Such a
// test checks what a SIGKILL leaves on disk and in the catalog, over
// many restarts, and the detector's instrumentation made it take 2.5
// times the CPU (TestDataPlaneKill9 alone on an idle machine: 262 s
// against 104 s), which made the suite run past its limit on a busy
// machine. The code it runs runs under the detector in the other
// end-to-end tests and in each package's own tests.
func binaryFor(t testing.TB) string {
	t.Helper()
	top, _, _ := strings.Cut(t.Name(), "/")
	if !raceEnabled || !strings.Contains(top, "Kill") {
		return cairnBin
	}
	crashBin.once.Do(func() {
		crashBin.path = filepath.Join(filepath.Dir(cairnBin), "cairn-norace")
		crashBin.err = buildCairn(crashBin.path, false)
	})
	if crashBin.err != nil {
		t.Fatal(crashBin.err)
	}
	return crashBin.path
}

// buildCairn builds the binary at path, with the test hooks (testhooks.go)
// and, if race, the race detector, stamped with the commit it is built
// from where go build can (whatever GOFLAGS says).
func buildCairn(path string, race bool) error {
	args := []string{"build", "-o", path, "-tags", "cairn_testhooks", "-buildvcs=auto"}
	if race {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		return fmt.Errorf("building cairn: %w\n%s", err, out)
	}
	return nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cairn-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cairnBin = filepath.Join(dir, "cairn")
	if err := buildCairn(cairnBin, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Every cairn serve the tests start registers here, not in the
	// user's runtime directory (tests that look at the registry use their
	// own).
	if err := os.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// skipUnlessCapable skips a test that needs what this machine lacks, and
// fails it instead when CI=true: CI must prove everything.
func skipUnlessCapable(t *testing.T, reason string) {
	t.Helper()
	testenv.SkipOrFail(t, reason)
}

type env struct {
	t    *testing.T
	dir  string
	repo string           // the repository location
	be   objstore.Backend // direct access to the repository's objects
	pw   string
	envs []string
	kit  storeKit
}

// newEnv prepares a test against a repository in a local directory.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := newEnvFor(t, storeKits(t)[0])
	// Tests that start without a repository expect an absent directory.
	if err := os.RemoveAll(e.repo); err != nil {
		t.Fatal(err)
	}
	return e
}

// newEnvFor prepares a test against a fresh repository location of kit.
func newEnvFor(t *testing.T, kit storeKit) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, pw: filepath.Join(dir, "password"), kit: kit, envs: kit.env}
	if kit.envFor != nil {
		e.envs = append(append([]string{}, kit.env...), kit.envFor(t)...)
	}
	e.repo, e.be = kit.fresh(t, dir)
	if err := os.WriteFile(e.pw, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return runCLI(e.t, append(append(os.Environ(), "CAIRN_REPO="+e.repo, "CAIRN_PASSWORD_FILE="+e.pw), e.envs...), args...)
}

func (e *env) ok(args ...string) string { e.t.Helper(); return cliOK(e.t, e.run, args...) }

func (e *env) json(v any, args ...string) { e.t.Helper(); cliJSON(e.t, e.run, v, args...) }

func (e *env) fails(code int, want string, args ...string) result {
	e.t.Helper()
	return cliFails(e.t, e.run, code, want, args...)
}

// runCLI runs the built binary with environment env.
func runCLI(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binaryFor(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running cairn %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// cliOK runs a command that must succeed and returns its output.
func cliOK(t *testing.T, run func(...string) result, args ...string) string {
	t.Helper()
	r := run(args...)
	if r.code != 0 {
		t.Fatalf("cairn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// cliJSON runs a command with --json and decodes its output into v.
func cliJSON(t *testing.T, run func(...string) result, v any, args ...string) {
	t.Helper()
	out := cliOK(t, run, append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("cairn %v: output is not JSON: %v\n%s", args, err, out)
	}
}

// cliFails runs a command that must exit with code, saying want.
func cliFails(t *testing.T, run func(...string) result, code int, want string, args ...string) result {
	t.Helper()
	r := run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Fatalf("cairn %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
	return r
}

// initRepo creates a repository with small chunks and cheap keys.
func (e *env) initRepo(extra ...string) {
	e.t.Helper()
	args := []string{"repo", "init", "--chunk-size", "256KiB", "--kdf-time", "1", "--kdf-memory", "64", "--kdf-threads", "1"}
	args = append(args, e.kit.initArgs...)
	e.ok(append(args, extra...)...)
}

// writeImage writes a sparse image of size bytes: random and text blocks
// of 128 KiB with holes between some of them.
func writeImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 3))
	blk := make([]byte, 128<<10)
	for off := int64(0); off < size; off += int64(len(blk)) {
		switch r.IntN(4) {
		case 0: // hole
			continue
		case 1:
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
		default:
			copy(blk, bytes.Repeat([]byte(fmt.Sprintf("line %d of the image, block at %d\n", r.IntN(100), off)), len(blk)))
		}
		n := min(int64(len(blk)), size-off)
		if _, err := f.WriteAt(blk[:n], off); err != nil {
			t.Fatal(err)
		}
	}
}

// scribble overwrites count random ranges of the file.
func scribble(t *testing.T, path string, seed uint64, count int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	r := rand.New(rand.NewPCG(seed, 4))
	for range count {
		buf := make([]byte, 1+r.IntN(100000))
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(buf, r.Int64N(st.Size()-int64(len(buf)))); err != nil {
			t.Fatal(err)
		}
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

type manifest struct {
	ID     string  `json:"id"`
	Parent *string `json:"parent"`
	Size   int64   `json:"size"`
	Stats  struct {
		BytesNew       int64 `json:"bytes_new"`
		BytesUnchanged int64 `json:"bytes_unchanged"`
		BytesRead      int64 `json:"bytes_read"`
		ChunksNew      int   `json:"chunks_new"`
		ChunksReused   int   `json:"chunks_reused"`
	} `json:"stats"`
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	for _, kit := range append(storeKits(t), keystoneKits()...) {
		t.Run(kit.name, func(t *testing.T) {
			t.Parallel()
			testEndToEnd(t, newEnvFor(t, kit))
		})
	}
}

func testEndToEnd(t *testing.T, e *env) {
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 24<<20, 1)
	e.initRepo()

	var full manifest
	e.json(&full, "repo", "backup", "--tag", "kind=full", img)
	sumFull := sha(t, img)
	orig := filepath.Join(e.dir, "orig.img")
	copyFile(t, img, orig)

	scribble(t, img, 2, 5)
	var inc manifest
	e.json(&inc, "repo", "backup", img)
	if inc.Parent == nil || *inc.Parent != full.ID {
		t.Fatalf("incremental parent %v, want %s", inc.Parent, full.ID)
	}
	if inc.Stats.BytesNew == 0 || inc.Stats.BytesNew > 3<<20 {
		t.Fatalf("incremental stored %d new bytes for 5 small changes", inc.Stats.BytesNew)
	}
	sumInc := sha(t, img)

	// Restore both; compare SHA-256.
	for _, tc := range []struct{ id, sum string }{{full.ID, sumFull}, {inc.ID[:8], sumInc}, {"latest", sumInc}} {
		out := filepath.Join(e.dir, "restore-"+tc.id+".img")
		e.ok("repo", "restore", tc.id, out)
		if got := sha(t, out); got != tc.sum {
			t.Fatalf("restore of %s: sha %s, want %s", tc.id, got, tc.sum)
		}
	}

	// diff lists the changed ranges; fed back as a hint it gives the same backup.
	diff := e.ok("repo", "diff", full.ID, inc.ID)
	if !strings.Contains(diff, "# cairn changed-extents v1") {
		t.Fatalf("diff output:\n%s", diff)
	}
	hint := filepath.Join(e.dir, "changed.txt")
	if err := os.WriteFile(hint, []byte(diff[strings.Index(diff, "# cairn changed-extents v1"):]), 0o600); err != nil {
		t.Fatal(err)
	}
	copyFile(t, img, filepath.Join(e.dir, "cur.img"))
	var hinted manifest
	e.json(&hinted, "repo", "backup", "--parent", full.ID, "--changed-extents", hint, img)
	if hinted.Stats.BytesUnchanged == 0 || hinted.Stats.BytesRead >= full.Size {
		t.Fatalf("hinted backup read %d of %d bytes", hinted.Stats.BytesRead, full.Size)
	}
	out := filepath.Join(e.dir, "restore-hinted.img")
	e.ok("repo", "restore", hinted.ID, out)
	if sha(t, out) != sumInc {
		t.Fatal("hinted backup restores different bytes")
	}

	// Delta restore onto the original image: only what differs is written.
	var delta struct {
		Stats struct {
			BytesSkipped int64 `json:"bytes_skipped"`
			BytesWritten int64 `json:"bytes_written"`
		} `json:"stats"`
	}
	e.fails(exitUsage, "exists", "repo", "restore", inc.ID, orig)
	e.json(&delta, "repo", "restore", "--overwrite", inc.ID, orig)
	if sha(t, orig) != sumInc || delta.Stats.BytesSkipped == 0 || delta.Stats.BytesWritten > 3<<20 {
		t.Fatalf("delta restore: %+v", delta.Stats)
	}

	// ls and show.
	var list []manifest
	e.json(&list, "repo", "ls")
	if len(list) != 3 {
		t.Fatalf("ls lists %d backups", len(list))
	}
	if s := e.ok("repo", "show", full.ID[:6]); !strings.Contains(s, "kind=full") {
		t.Fatalf("show:\n%s", s)
	}

	// forget + gc free exactly what no backup needs.
	before := len(chunkObjects(t, e.be))
	e.ok("repo", "forget", full.ID)
	var gc struct {
		ChunksDeleted int   `json:"chunks_deleted"`
		BytesFreed    int64 `json:"bytes_freed"`
		ChunksPending int   `json:"chunks_pending"`
	}
	e.json(&gc, "repo", "gc")
	if after := len(chunkObjects(t, e.be)); gc.ChunksDeleted == 0 || gc.BytesFreed == 0 || gc.ChunksPending != 0 || after != before-gc.ChunksDeleted {
		t.Fatalf("gc: %+v, %d chunks before, %d after", gc, before, after)
	}
	e.ok("repo", "restore", inc.ID, filepath.Join(e.dir, "after-gc.img"))
	if sha(t, filepath.Join(e.dir, "after-gc.img")) != sumInc {
		t.Fatal("restore after gc differs")
	}

	// check is clean, then finds a flipped bit and a deleted chunk.
	e.ok("repo", "check", "--read-data")
	chunks := chunkObjects(t, e.be)
	corruptObject(t, e.be, chunks[0], 8000)
	r := e.fails(exitCheckFailed, "problems found", "repo", "check", "--read-data")
	if !strings.Contains(r.stdout, "corrupt-chunk") {
		t.Fatalf("check output:\n%s", r.stdout)
	}
	if err := e.be.Delete(t.Context(), chunks[1]); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Problems []struct {
			Kind    string   `json:"kind"`
			Backups []string `json:"affected_backups"`
		} `json:"problems"`
	}
	res := e.run("--json", "repo", "check", "--read-data")
	if res.code != exitCheckFailed {
		t.Fatalf("check exit %d", res.code)
	}
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, p := range rep.Problems {
		kinds[p.Kind] = true
		if len(p.Backups) == 0 {
			t.Fatalf("problem %s names no backup", p.Kind)
		}
	}
	if !kinds["corrupt-chunk"] || !kinds["missing-chunk"] {
		t.Fatalf("problems: %+v", rep.Problems)
	}
	// A restore over the damage fails loudly.
	e.fails(exitError, "corrupt", "repo", "restore", "latest", filepath.Join(e.dir, "damaged.img"))
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 2<<20, 5)

	// No repository yet.
	e.fails(exitNoRepo, "not a cairn repository", "repo", "ls")
	if err := os.MkdirAll(e.repo, 0o700); err != nil {
		t.Fatal(err)
	}
	e.fails(exitNoRepo, "not a cairn repository", "repo", "backup", img)
	e.initRepo()
	e.fails(exitError, "already exists", "repo", "init", "--kdf-memory", "64", "--kdf-time", "1")

	wrong := filepath.Join(e.dir, "wrong")
	_ = os.WriteFile(wrong, []byte("nope"), 0o600)
	e.fails(exitWrongKey, "wrong password", "repo", "ls", "--password-file", wrong)
	e.fails(exitError, "no such file", "repo", "ls", "--password-file", filepath.Join(e.dir, "missing"))
	e.fails(exitError, "no such file", "repo", "backup", filepath.Join(e.dir, "nope.img"))
	e.fails(exitError, "neither a regular file nor a block device", "repo", "backup", e.dir)
	e.fails(exitUsage, "give the SOURCE to back up", "repo", "backup")
	e.fails(exitUsage, "want KEY=VALUE", "repo", "backup", "--tag", "novalue", img)
	e.fails(exitUsage, "unknown flag", "repo", "ls", "--bogus")
	e.fails(exitUsage, "percentage", "repo", "check", "--read-data-subset", "0")

	bad := filepath.Join(e.dir, "bad-extents")
	_ = os.WriteFile(bad, []byte("0 10\n"), 0o600)
	e.fails(exitError, "first line must be", "repo", "backup", "--changed-extents", bad, img)
	_ = os.WriteFile(bad, []byte("# cairn changed-extents v1\n0 10\n"), 0o600)
	e.fails(exitError, "need a parent", "repo", "backup", "--changed-extents", bad, img)
	e.ok("repo", "backup", img)
	_ = os.WriteFile(bad, []byte("# cairn changed-extents v1\n99999999999 10\n"), 0o600)
	e.fails(exitError, "beyond the source", "repo", "backup", "--changed-extents", bad, img)
	e.fails(exitError, "not found", "repo", "restore", "deadbeef", filepath.Join(e.dir, "x.img"))
	e.fails(exitError, "not found", "repo", "forget", "deadbeef")

	// No password at all, off a terminal: a usage error, not a hang.
	r := e.run("repo", "ls", "--password-file", "")
	_ = r
	cmd := exec.Command(binaryFor(t), "repo", "ls", "--repo", e.repo)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	outb, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(outb), "no repository password given") {
		t.Fatalf("without a password: %v %s", err, outb)
	}

	// A truncated chunk: restore fails, check names it.
	chunks := chunkObjects(t, e.be)
	if err := os.Truncate(filepath.Join(e.repo, chunks[0]), 10); err != nil {
		t.Fatal(err)
	}
	e.fails(exitError, "corrupt", "repo", "restore", "latest", filepath.Join(e.dir, "t.img"))
	e.fails(exitCheckFailed, "problems found", "repo", "check", "--read-data")

	// --json errors are JSON too.
	r = e.run("--json", "repo", "restore", "deadbeef", filepath.Join(e.dir, "y.img"))
	var je struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &je); err != nil || je.ExitCode != exitError || je.Error == "" {
		t.Fatalf("json error: %q %v", r.stdout, err)
	}
}

func TestKeysCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.initRepo()
	kf := filepath.Join(e.dir, "keyfile")
	e.ok("repo", "key", "add", "--new-key-file", kf, "--kdf-memory", "64", "--kdf-time", "1")
	if st, err := os.Stat(kf); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("generated key file: %v %v", st, err)
	}
	var keys []struct {
		ID      string `json:"id"`
		Kind    string `json:"kind"`
		Current bool   `json:"current"`
	}
	e.json(&keys, "repo", "key", "list")
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	var pwKey, fileKey string
	for _, k := range keys {
		if k.Kind == "key-file" {
			fileKey = k.ID
		} else {
			pwKey = k.ID
		}
	}
	// The key file opens the repository on its own.
	e.ok("repo", "ls", "--key-file", kf)
	e.fails(exitError, "key in use", "repo", "key", "remove", pwKey[:8])
	e.ok("repo", "key", "remove", pwKey[:8], "--key-file", kf)
	e.fails(exitWrongKey, "wrong password", "repo", "ls")
	e.fails(exitError, "last key", "repo", "key", "remove", fileKey, "--key-file", kf)

	// passwd replaces the key in use.
	newpw := filepath.Join(e.dir, "newpw")
	_ = os.WriteFile(newpw, []byte("a new password\n"), 0o600)
	e.ok("repo", "key", "passwd", "--key-file", kf, "--new-password-file", newpw, "--kdf-memory", "64", "--kdf-time", "1")
	e.fails(exitWrongKey, "wrong password", "repo", "ls", "--key-file", kf)
	e.ok("repo", "ls", "--password-file", newpw)
}

func TestConcurrentInit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Go(func() {
			codes[i] = e.run("repo", "init", "--kdf-memory", "64", "--kdf-time", "1").code
		})
	}
	wg.Wait()
	wins := 0
	for _, c := range codes {
		if c == 0 {
			wins++
		} else if c != exitError {
			t.Fatalf("init exit codes %v", codes)
		}
	}
	if wins != 1 {
		t.Fatalf("%d concurrent inits succeeded (codes %v)", wins, codes)
	}
	var keys []any
	e.json(&keys, "repo", "key", "list")
	if len(keys) != 1 {
		t.Fatalf("%d keys after concurrent inits", len(keys))
	}
}

func TestNoProgressOffTerminal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 4<<20, 6)
	e.initRepo()
	r := e.run("repo", "backup", img)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("backup off a terminal wrote to stderr: %q", r.stderr)
	}
}

// TestKillBackup kills backups with SIGKILL at points the binary's test
// hooks announce: before any chunk is stored, after k chunks, after the
// index, after the manifest. At each, exactly what must be visible is:
// no half backup ever, a whole one once its manifest is stored, the
// chunks stored so far, a repository that checks clean. The next backup
// must succeed and reuse the chunks already stored.
func TestKillBackup(t *testing.T) {
	t.Parallel()
	for _, kit := range storeKits(t) {
		t.Run(kit.name, func(t *testing.T) {
			t.Parallel()
			testKillBackup(t, newEnvFor(t, kit))
		})
	}
}

// distinctChunks counts the distinct chunks a backup of the image stores
// with chunks of size bytes: its regions that are not all zeros.
func distinctChunks(t *testing.T, path string, size int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[[32]byte]bool{}
	buf := make([]byte, size)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 && !allZero(buf[:n]) {
			seen[sha256.Sum256(buf[:n])] = true
		}
		if err != nil {
			return len(seen)
		}
	}
}

func testKillBackup(t *testing.T, e *env) {
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 64<<20, 7)
	e.initRepo() // 256 KiB chunks
	total := distinctChunks(t, img, 256<<10)
	const transfers = 2
	r := rand.New(rand.NewPCG(8, 8))
	// Chunk kills come before the index kill, after which every chunk is
	// stored.
	plan := []string{"session", "chunks", "chunks", "chunks", "chunks"}
	r.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	plan = append(plan, "index", "manifest")
	for round, kind := range plan {
		before := len(chunkObjects(t, e.be))
		k := 0
		var at string
		switch kind {
		case "session":
			at = "store.put " + format.SessionsPrefix + "#1"
		case "chunks":
			// At most half of what is left: the next chunk rounds find some.
			k = 1 + r.IntN(max(1, (total-before)/2))
			at = fmt.Sprintf("store.put %s#%d", format.ChunksPrefix, k)
		case "index":
			at = "store.put " + format.IndexesPrefix + "#1"
		case "manifest":
			at = "store.put " + format.BackupsPrefix + "#1"
		}
		point := newHookPoint(t, at)
		env := append(append(append(os.Environ(), "CAIRN_REPO="+e.repo, "CAIRN_PASSWORD_FILE="+e.pw), e.envs...), point.env()...)
		p := startProc(t, env, "repo", "backup", "--transfers", fmt.Sprint(transfers), img)
		point.reached(p.exited, p.out.String)
		p.kill()

		var list []manifest
		e.json(&list, "repo", "ls")
		stored := len(chunkObjects(t, e.be))
		t.Logf("round %d: killed at %s: %d backups visible, %d of %d chunks stored", round, at, len(list), stored, total)
		switch kind {
		case "session":
			if stored != before {
				t.Fatalf("round %d: killed before any chunk, yet %d chunks stored (%d before)", round, stored, before)
			}
		case "chunks":
			// The k-th and any Put already under way then, no other.
			if stored < before+k || stored > before+k+transfers-1 {
				t.Fatalf("round %d: killed after chunk %d with %d in flight: %d chunks stored, want %d to %d",
					round, k, transfers, stored, before+k, before+k+transfers-1)
			}
		case "index", "manifest":
			if stored != total {
				t.Fatalf("round %d: killed after the chunks: %d stored, want %d", round, stored, total)
			}
		}
		// Whatever is visible must be whole: only a kill after the
		// manifest leaves a backup, and then a complete one.
		if kind != "manifest" {
			if len(list) != 0 {
				t.Fatalf("round %d: killed at %s, and %d backups are visible", round, at, len(list))
			}
		} else {
			if len(list) != 1 {
				t.Fatalf("round %d: killed after the manifest, and %d backups are visible", round, len(list))
			}
			out := filepath.Join(e.dir, "visible.img")
			e.ok("repo", "restore", list[0].ID, out)
			if sha(t, out) != sha(t, img) {
				t.Fatalf("round %d: the backup whose manifest was stored restores different bytes", round)
			}
			os.Remove(out)
			e.ok("repo", "forget", list[0].ID)
		}
		e.ok("repo", "check", "--read-data")
	}
	var m manifest
	e.json(&m, "repo", "backup", img)
	if m.Stats.ChunksNew != 0 || m.Stats.ChunksReused == 0 {
		t.Fatalf("the backup after the kills stored %d new chunks and reused %d; want every chunk reused", m.Stats.ChunksNew, m.Stats.ChunksReused)
	}
	out := filepath.Join(e.dir, "r.img")
	e.ok("repo", "restore", m.ID, out)
	if sha(t, out) != sha(t, img) {
		t.Fatal("restore differs")
	}
	e.ok("repo", "check", "--read-data")
}

// TestKillGC kills gc with SIGKILL at points the binary's test hooks
// announce: after it listed the chunks, after it wrote its condemned set,
// after it announced its sweep, after it deleted k chunks, after it marked
// the set swept. At each, exactly the chunks deleted so far are gone,
// every surviving backup restores byte-identical, the repository checks
// clean, and a later gc completes.
func TestKillGC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 32<<20, 9)
	e.initRepo()
	r := rand.New(rand.NewPCG(10, 10))
	plan := []string{"listed", "condemned", "sweeping", "deleting", "swept"}
	r.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	for round, kind := range plan {
		// Three backups; forget two; keep the newest.
		var ids []string
		var sums []string
		for j := range 3 {
			scribble(t, img, uint64(100*round+j), 20)
			var m manifest
			e.json(&m, "repo", "backup", img)
			ids = append(ids, m.ID)
			sums = append(sums, sha(t, img))
		}
		e.ok("repo", "forget", ids[0], ids[1])
		var dry struct {
			ChunksCondemned int `json:"chunks_condemned"`
		}
		e.json(&dry, "repo", "gc", "--dry-run")
		doomed := dry.ChunksCondemned
		if doomed == 0 {
			t.Fatalf("round %d: forgetting two backups left no chunk to collect", round)
		}
		before := len(chunkObjects(t, e.be))
		k := 0
		var at string
		switch kind {
		case "listed":
			at = "store.list " + format.ChunksPrefix + "#1"
		case "condemned":
			at = "store.put " + format.CondemnedPrefix + "#1"
		case "sweeping":
			at = "store.put " + format.SweepingPrefix + "#1"
		case "deleting":
			k = 1 + r.IntN(doomed)
			at = fmt.Sprintf("store.delete %s#%d", format.ChunksPrefix, k)
		case "swept":
			at = "store.put " + format.SweptPrefix + "#1"
		}
		point := newHookPoint(t, at)
		env := append(append(os.Environ(), "CAIRN_REPO="+e.repo, "CAIRN_PASSWORD_FILE="+e.pw), point.env()...)
		p := startProc(t, env, "repo", "gc", "--transfers", "1")
		point.reached(p.exited, p.out.String)
		p.kill()

		after := len(chunkObjects(t, e.be))
		t.Logf("round %d: killed at %s: %d of %d chunks, %d doomed", round, at, after, before, doomed)
		want := before
		switch kind {
		case "deleting":
			want = before - k
		case "swept":
			want = before - doomed
		}
		if after != want {
			t.Fatalf("round %d: killed at %s: %d chunks left of %d, want %d", round, at, after, before, want)
		}
		out := filepath.Join(e.dir, fmt.Sprintf("r%d.img", round))
		e.ok("repo", "restore", ids[2], out)
		if sha(t, out) != sums[2] {
			t.Fatalf("round %d: restore after a killed gc differs", round)
		}
		os.Remove(out)
		e.ok("repo", "check", "--read-data")
		// A later gc finishes the work: the next round starts clean.
		var gc struct {
			ChunksPending int `json:"chunks_pending"`
		}
		e.json(&gc, "repo", "gc")
		if left := len(chunkObjects(t, e.be)); gc.ChunksPending != 0 || left != before-doomed {
			t.Fatalf("round %d: the gc after the kill left %d chunks (%d pending), want %d", round, left, gc.ChunksPending, before-doomed)
		}
		e.ok("repo", "check", "--read-data")
	}
}

// TestRestoreToSmallBlockDevice needs a loop device.
func TestRestoreToBlockDevice(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		skipUnlessCapable(t, "loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		skipUnlessCapable(t, "losetup is not installed")
	}
	e := newEnv(t)
	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 8<<20, 11)
	e.initRepo()
	var m manifest
	e.json(&m, "repo", "backup", img)

	small := loopDevice(t, filepath.Join(e.dir, "small.bin"), 4<<20)
	e.fails(exitError, "the backup needs", "repo", "restore", "--overwrite", m.ID, small)
	big := loopDevice(t, filepath.Join(e.dir, "big.bin"), 8<<20)
	e.fails(exitUsage, "block device", "repo", "restore", m.ID, big)
	e.ok("repo", "restore", "--overwrite", m.ID, big)
	// The device now holds the image; a second restore skips everything.
	var again struct {
		Stats struct {
			BytesSkipped int64 `json:"bytes_skipped"`
			BytesWritten int64 `json:"bytes_written"`
		} `json:"stats"`
	}
	e.json(&again, "repo", "restore", "--overwrite", m.ID, big)
	if again.Stats.BytesWritten != 0 || again.Stats.BytesSkipped != 8<<20 {
		t.Fatalf("second restore to the device: %+v", again.Stats)
	}
	if sha(t, big) != sha(t, img) {
		t.Fatal("block device content differs")
	}
	// And the device backs up like a file.
	var fromDev manifest
	e.json(&fromDev, "repo", "backup", big)
	if fromDev.Stats.ChunksNew != 0 {
		t.Fatalf("backup of the restored device stored %d new chunks", fromDev.Stats.ChunksNew)
	}
}

func loopDevice(t *testing.T, file string, size int64) string {
	t.Helper()
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		skipUnlessCapable(t, fmt.Sprintf("losetup: %v: %s", err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestSecondDeployment: another machine pointed at the same repository
// with the same key lists and restores every backup; nothing outside the
// repository is needed.
func TestSecondDeployment(t *testing.T) {
	t.Parallel()
	for _, kit := range storeKits(t) {
		t.Run(kit.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvFor(t, kit)
			img := filepath.Join(e.dir, "disk.img")
			writeImage(t, img, 6<<20, 12)
			e.initRepo()
			var ids []string
			var sums []string
			for i := range 3 {
				scribble(t, img, uint64(20+i), 3)
				var m manifest
				e.json(&m, "repo", "backup", img)
				ids = append(ids, m.ID)
				sums = append(sums, sha(t, img))
			}
			// The second deployment: its own home, temporary and working
			// directories; the key file's content is all it shares.
			other := t.TempDir()
			second := *e
			second.envs = append(append([]string{}, e.envs...), "HOME="+other, "TMPDIR="+other, "XDG_CACHE_HOME="+other, "XDG_CONFIG_HOME="+other)
			var list []manifest
			second.json(&list, "repo", "ls")
			if len(list) != 3 {
				t.Fatalf("second deployment lists %d backups", len(list))
			}
			for i, id := range ids {
				out := filepath.Join(other, fmt.Sprintf("r%d.img", i))
				second.ok("repo", "restore", id, out)
				if sha(t, out) != sums[i] {
					t.Fatalf("backup %d restores differently in the second deployment", i)
				}
			}
			second.ok("repo", "check", "--read-data")
		})
	}
}
