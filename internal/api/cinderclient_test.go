package api_test

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/testenv"
)

// cinderCLI runs the `cinder` command (python3-cinderclient) against a
// test server: the block storage API's real handlers and authentication
// (a project's cairn token, sent by keystoneauth's admin_token plugin to
// the given endpoint, no Keystone involved).
type cinderCLI struct {
	t        *testing.T
	env      *env
	capture  *captureRequests
	endpoint string
	home     string
}

func newCinderCLI(t *testing.T) *cinderCLI {
	t.Helper()
	if _, err := exec.LookPath("cinder"); err != nil {
		testenv.SkipOrFail(t, "the cinder command is missing: apt-get install python3-cinderclient")
	}
	e := newEnv(t)
	capture := &captureRequests{h: api.New(e.svc, nil, nil)}
	srv := httptest.NewServer(capture)
	t.Cleanup(srv.Close)
	return &cinderCLI{t: t, env: e, capture: capture, endpoint: srv.URL + "/v3/alpha", home: t.TempDir()}
}

// run runs `cinder ARGS...` with the project's token and returns its
// exit status, output and the requests it made. Its environment holds
// no OS_* variable of the test's.
func (c *cinderCLI) run(args ...string) (code int, stdout, stderr string, reqs []captured) {
	c.t.Helper()
	all := append([]string{"--os-auth-type", "admin_token", "--os-endpoint", c.endpoint, "--os-token", c.env.tokA,
		"--os-project-id", "alpha"}, args...)
	cmd := exec.CommandContext(c.t.Context(), "cinder", all...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "LC_ALL=C.UTF-8"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			c.t.Fatalf("cinder %s: %v", strings.Join(args, " "), err)
		}
		code = exit.ExitCode()
	}
	reqs = c.capture.take()
	c.t.Logf("cinder %s: exit %d\n%s", strings.Join(args, " "), code, formatRequests(reqs))
	return code, out.String(), errOut.String(), reqs
}

// ok runs a command that must succeed and returns its output.
func (c *cinderCLI) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr, _ := c.run(args...)
	if code != 0 {
		c.t.Fatalf("cinder %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestCinderVersionDiscovery: the cinder command reads the versions
// document and negotiates the microversion it sends with what the
// server says it serves (`version-list` prints the range).
func TestCinderVersionDiscovery(t *testing.T) {
	c := newCinderCLI(t)
	out := c.ok("version-list")
	if !strings.Contains(out, "v3.0") || !strings.Contains(out, "CURRENT") || !strings.Contains(out, "3.0") {
		t.Fatalf("version-list printed:\n%s", out)
	}
	for _, want := range []string{"Client supported API versions", "Server supported API versions"} {
		if !strings.Contains(out, want) {
			t.Errorf("version-list: no %q in:\n%s", want, out)
		}
	}
}
