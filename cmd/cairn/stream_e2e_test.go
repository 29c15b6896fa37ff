package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/cairnproject/cairn/internal/repo/repotest"
)

// pipe runs cairn with stdin on its standard input, as in
// 'pg_dump | cairn repo backup --stdin', and returns its standard output
// and error; the command must succeed.
func (e *env) pipe(stdin []byte, args ...string) ([]byte, string) {
	e.t.Helper()
	cmd := exec.CommandContext(e.t.Context(), binaryFor(e.t), args...)
	cmd.Env = append(append(os.Environ(), "CAIRN_REPO="+e.repo, "CAIRN_PASSWORD_FILE="+e.pw), e.envs...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			e.t.Fatalf("running cairn %v: %v", args, err)
		}
		e.t.Fatalf("cairn %s: exit %d\nstderr: %s", strings.Join(args, " "), ee.ExitCode(), errb.String())
	}
	return out.Bytes(), errb.String()
}

type streamManifest struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	Source string `json:"source"`
	Stream struct {
		Blake3 string `json:"blake3"`
	} `json:"stream"`
	Stats struct {
		ChunksNew    int `json:"chunks_new"`
		ChunksReused int `json:"chunks_reused"`
	} `json:"stats"`
}

// TestStreamCLI pipes dumps into 'repo backup --stdin' and back out of
// 'repo restore --stdout', byte for byte, and checks what the other
// commands say of stream backups.
func TestStreamCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.initRepo()
	// More than the chunker's largest chunk (8 MiB): at least two chunks.
	dump := repotest.PgbenchDump(1, 10<<20)

	var m1 streamManifest
	out, _ := e.pipe(dump, "--json", "repo", "backup", "--stdin", "--name", "db1", "--tag", "db=db1")
	if err := json.Unmarshal(out, &m1); err != nil {
		t.Fatalf("backup output: %v\n%s", err, out)
	}
	sum := blake3.Sum256(dump)
	if m1.Kind != "stream" || m1.Size != int64(len(dump)) || m1.Source != "db1" || m1.Stream.Blake3 != hex.EncodeToString(sum[:]) {
		t.Fatalf("stream backup %+v", m1)
	}
	// Rows appended: every chunk but the last is shared.
	dump2 := append(slices.Clone(dump), repotest.PgbenchDump(2, 100<<10)...)
	var m2 streamManifest
	out, _ = e.pipe(dump2, "--json", "repo", "backup", "--stdin", "--name", "db1")
	if err := json.Unmarshal(out, &m2); err != nil {
		t.Fatalf("backup output: %v\n%s", err, out)
	}
	if m2.Stats.ChunksReused == 0 || m2.Stats.ChunksNew == 0 || m2.Stats.ChunksNew > 2 {
		t.Fatalf("the grown dump stored %d chunks and reused %d", m2.Stats.ChunksNew, m2.Stats.ChunksReused)
	}

	// Standard output is the stream alone; the report goes to stderr.
	for _, tc := range []struct {
		id   string
		want []byte
		json bool
	}{{m1.ID, dump, false}, {m2.ID[:8], dump2, true}} {
		args := []string{"repo", "restore", tc.id, "--stdout"}
		if tc.json {
			args = append([]string{"--json"}, args...)
		}
		got, stderr := e.pipe(nil, args...)
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("restore %s --stdout: %d bytes, want the %d of the dump", tc.id, len(got), len(tc.want))
		}
		var report struct {
			Target string `json:"target"`
		}
		if tc.json && (json.Unmarshal([]byte(stderr), &report) != nil || report.Target != "stdout") {
			t.Fatalf("restore --json --stdout reported on stderr: %s", stderr)
		}
		if !tc.json && !strings.Contains(stderr, "restored "+tc.id[:8]) {
			t.Fatalf("restore --stdout reported on stderr: %s", stderr)
		}
	}
	// A stream restores to a file too.
	file := filepath.Join(e.dir, "dump.restored")
	e.ok("repo", "restore", m1.ID, file)
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("restore to a file: %v", err)
	}

	if ls := e.ok("repo", "ls"); !strings.Contains(ls, "KIND") || strings.Count(ls, " stream ") != 2 {
		t.Fatalf("ls:\n%s", ls)
	}
	show := e.ok("repo", "show", m1.ID)
	if !strings.Contains(show, "kind         stream") || !strings.Contains(show, m1.Stream.Blake3) {
		t.Fatalf("show:\n%s", show)
	}
	e.ok("repo", "check", "--read-data")

	img := filepath.Join(e.dir, "disk.img")
	writeImage(t, img, 2<<20, 3)
	var vol manifest
	e.json(&vol, "repo", "backup", img)
	for _, tc := range []struct {
		code int
		want string
		args []string
	}{
		{2, "--stdin needs --name", []string{"repo", "backup", "--stdin"}},
		{2, "--name names a stream", []string{"repo", "backup", "--name", "db1", img}},
		{2, "not several", []string{"repo", "backup", "--stdin", "--name", "db1", img}},
		{2, "a stream dedups against every stored chunk", []string{"repo", "backup", "--stdin", "--name", "db1", "--no-parent"}},
		{2, "no TARGET", []string{"repo", "restore", m1.ID, "--stdout", file}},
		{1, "is a volume backup", []string{"repo", "restore", vol.ID, "--stdout"}},
		{1, "is a stream backup", []string{"repo", "diff", m1.ID, m2.ID}},
	} {
		r := e.fails(tc.code, tc.want, tc.args...)
		if tc.args[1] == "restore" && r.stdout != "" {
			t.Fatalf("cairn %v wrote %q to standard output", tc.args, r.stdout)
		}
	}

	// Forgetting the first dump frees only its last chunk.
	e.ok("repo", "forget", m1.ID)
	var gc struct {
		ChunksDeleted int `json:"chunks_deleted"`
	}
	e.json(&gc, "repo", "gc")
	if gc.ChunksDeleted != 1 {
		t.Fatalf("gc after forgetting the first dump deleted %d chunks, want its last one", gc.ChunksDeleted)
	}
	if got, _ := e.pipe(nil, "repo", "restore", m2.ID, "--stdout"); !bytes.Equal(got, dump2) {
		t.Fatal("the second dump does not restore after the first was forgotten")
	}
	e.ok("repo", "check", "--read-data")
}
