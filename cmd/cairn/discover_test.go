package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
)

// TestCLIFindsRunningService: after 'cairn serve --data-dir X' the CLI
// finds the service with nothing exported; with two running it names
// both and asks which; a stale registration is ignored and removed; a
// named data directory is the one used.
func TestCLIFindsRunningService(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	runtimeDir := filepath.Join(home, "run")
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			base = append(base, kv)
		}
	}
	// A user whose default data directory (~/.local/share/cairn) is
	// empty and who has no client config.
	base = append(base, "HOME="+home, "XDG_RUNTIME_DIR="+runtimeDir)
	run := func(args ...string) result { return runCLI(t, base, args...) }

	x := startServiceEnv(t, filepath.Join(home, "x"), []string{"HOME=" + home, "XDG_RUNTIME_DIR=" + runtimeDir})
	var lim service.Limits
	cliJSON(t, run, &lim, "limits")
	var made map[string]any
	cliJSON(t, run, &made, "volume", "create", "--size", "1", "--name", "found", "--wait")
	x.mustCall(200, "GET", "/volumes/"+made["id"].(string), nil, nil)

	y := startServiceEnv(t, filepath.Join(home, "y"), []string{"HOME=" + home, "XDG_RUNTIME_DIR=" + runtimeDir})
	r := cliFails(t, run, exitUsage, "2 cairn serve processes are running", "limits")
	for _, p := range []*svcProc{x, y} {
		if !strings.Contains(r.stderr, fmt.Sprintf("pid %d at %s (data directory %s)", p.cmd.Process.Pid, p.url, p.data)) {
			t.Fatalf("the error does not list pid %d: %s", p.cmd.Process.Pid, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "--url") || !strings.Contains(r.stderr, "--data-dir") {
		t.Fatalf("the error does not say how to choose: %s", r.stderr)
	}
	// A named data directory chooses.
	cliJSON(t, run, &lim, "limits", "--data-dir", y.data)
	if lim.Usage.Volumes != 0 {
		t.Fatalf("limits of y: %+v", lim)
	}

	// A registration whose process is gone is ignored and removed.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(runtimeDir, "cairn", strconv.Itoa(dead.Process.Pid)+".json")
	entry, _ := json.Marshal(map[string]any{"pid": dead.Process.Pid, "url": "http://127.0.0.1:1", "data_dir": x.data})
	if err := os.WriteFile(stale, entry, 0o600); err != nil {
		t.Fatal(err)
	}
	y.stop()
	cliJSON(t, run, &lim, "limits")
	if lim.Usage.Volumes != 1 {
		t.Fatalf("limits of x, the one service left: %+v", lim)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale registration is still there: %v", err)
	}

	// A data directory named in the environment is the one meant: no
	// service runs there, so the API commands have none.
	named := append(append([]string(nil), base...), "CAIRN_DATA_DIR="+filepath.Join(home, "z"))
	cliFails(t, func(args ...string) result { return runCLI(t, named, args...) }, exitUsage, "none is in use", "limits")

	x.stop()
	if left, _ := filepath.Glob(filepath.Join(runtimeDir, "cairn", "*")); len(left) != 0 {
		t.Fatalf("registrations left after both services stopped: %v", left)
	}
	cliFails(t, run, exitUsage, "none is in use", "limits")
}
