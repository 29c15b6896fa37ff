package main

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionString(t *testing.T) {
	stamped := []debug.BuildSetting{{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "8cea3314393c058dff95cf90c6095ec67a8b4644"},
		{Key: "vcs.time", Value: "2026-12-05T10:11:12Z"}, {Key: "vcs.modified", Value: "false"}}
	modified := append(append([]debug.BuildSetting(nil), stamped[:3]...), debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	build := func(version string, settings []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/cairnproject/cairn", Version: version}, Settings: settings}
	}
	for _, c := range []struct {
		name, set string
		info      *debug.BuildInfo
		ok        bool
		want      string
	}{
		{"checkout", "", build("(devel)", stamped), true, "devel (rev 8cea3314393c, 2026-12-05)"},
		{"modified checkout", "", build("v0.0.0-20261205101112-8cea3314393c+dirty", modified), true, "devel (rev 8cea3314393c, 2026-12-05, modified)"},
		{"later pseudo-version", "", build("v0.4.1-0.20261205101112-8cea3314393c", stamped), true, "devel (rev 8cea3314393c, 2026-12-05)"},
		{"tagged module", "", build("v0.4.0", nil), true, "v0.4.0"},
		{"tagged checkout", "", build("v0.4.0", stamped), true, "v0.4.0 (rev 8cea3314393c, 2026-12-05)"},
		{"linker flag wins", "v0.5.0-rc1", build("v0.0.0-20261205101112-8cea3314393c", modified), true, "v0.5.0-rc1 (rev 8cea3314393c, 2026-12-05, modified)"},
		{"nothing stamped", "", build("(devel)", nil), true, "devel (no revision stamped: build in a git checkout with -buildvcs=auto)"},
		{"no build information", "v0.5.0", nil, false, "v0.5.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := versionString(c.set, c.info, c.ok); got != c.want {
				t.Fatalf("versionString = %q, want %q", got, c.want)
			}
		})
	}
}

// TestVersionStamped: the binary go build makes in a git checkout says
// which commit it was built from.
func TestVersionStamped(t *testing.T) {
	t.Parallel()
	gitDir, err := exec.Command("git", "rev-parse", "--absolute-git-dir").Output()
	if err != nil {
		skipUnlessCapable(t, "not in a git checkout: go build stamps no revision")
	}
	common, err := exec.Command("git", "rev-parse", "--path-format=absolute", "--git-common-dir").Output()
	if err == nil && filepath.Clean(strings.TrimSpace(string(common))) != filepath.Clean(strings.TrimSpace(string(gitDir))) {
		skipUnlessCapable(t, "a git worktree: go build stamps the revision of a checkout's .git directory only")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(runTool(t, cairnBin, "--version"))
	if out == "cairn dev" || !strings.HasPrefix(out, "cairn ") || !strings.Contains(out, "(rev "+string(head[:12])) {
		t.Fatalf("cairn --version printed %q; want the revision of HEAD, %s", out, head[:12])
	}
}
