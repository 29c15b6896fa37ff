package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/volume"
)

// shutdownOrder is the order of cairn serve's shutdown steps with an
// embedded data plane.
var shutdownOrder = []string{"api", "tasks", "nbd", "notifier", "lease", "catalog", "engine"}

// stoppedComponents lists, from a text log, the components in the order
// their "stopped" lines came.
func stoppedComponents(log string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`msg=stopped component=(\w+)`).FindAllStringSubmatch(log, -1) {
		out = append(out, m[1])
	}
	return out
}

// waitLog waits until the process's log contains s, or it exits first
// (false).
func (p *svcProc) waitLog(s string) bool {
	p.t.Helper()
	deadline := time.After(pointTimeout)
	for !strings.Contains(p.log.String(), s) {
		select {
		case <-p.done:
			return strings.Contains(p.log.String(), s)
		case <-deadline:
			p.t.Fatalf("the log never said %q: %s", s, p.log.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// TestServeDrainsNBDOnSIGTERM: SIGTERM while NBD writes are in flight in
// the engine lets them complete, each answered without error, before the
// engine closes; the components stop in the documented order, and the
// writes are there after a restart.
func TestServeDrainsNBDOnSIGTERM(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	// The first write stops at the engine's door; those after it wait
	// behind it, each announced, until the test lets them go. Nothing
	// else is held: the shutdown waits for the task workers, which poll
	// the catalog, before it stops the NBD servers.
	point := newHookPoint(t, "nbd.write#1").withRelease().holding("nbd.")
	p := startServiceEnv(t, data, point.env(), "--data-plane", "embedded")
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "drained"}}, &vol)
	p.settled()
	id := vol.Volume["id"].(string)
	p.mustCall(200, "POST", "/volumes/"+id+"/action", map[string]any{"os-attach": map[string]any{}}, nil)

	const writes = 8
	pattern := func(i int) []byte { return bytes.Repeat([]byte{byte(0xa0 + i)}, 64<<10) }
	c := dialNBD(t, filepath.Join(data, nbdSocket), id)
	for i := range writes {
		c.sendWrite(uint64(i+1), uint64(i)<<20, pattern(i))
	}
	point.reached(p.done, p.log.String)
	// The other writes are held behind it, each announced.
	for range writes - 1 {
		if line := point.next(p.done, p.log.String); !strings.HasPrefix(line, "held nbd.write "+id) {
			t.Fatalf("announced %q, want the writes to %s held", line, id)
		}
	}
	// All eight are in the server, none answered.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.waitLog("msg=stopping component=nbd") {
		t.Fatalf("cairn serve exited with %d NBD writes in flight: %s", writes, p.log.String())
	}
	point.resume()
	seen := map[uint64]bool{}
	for range writes {
		cookie, errno, err := c.reply()
		if err != nil {
			t.Fatalf("reply %d: %v; log: %s", len(seen)+1, err, p.log.String())
		}
		if errno != 0 {
			t.Fatalf("write %d in flight at SIGTERM failed with NBD error %d", cookie, errno)
		}
		seen[cookie] = true
	}
	if len(seen) != writes {
		t.Fatalf("replies for %d distinct writes, want %d", len(seen), writes)
	}
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("cairn serve exited %d after SIGTERM: %s", code, p.log.String())
	}
	if got := stoppedComponents(p.log.String()); !slices.Equal(got, shutdownOrder) {
		t.Fatalf("components stopped in the order %v, want %v", got, shutdownOrder)
	}

	startService(t, data, "--data-plane", "embedded")
	c = dialNBD(t, filepath.Join(data, nbdSocket), id)
	for i := range writes {
		if got := c.read(uint64(i)<<20, 64<<10); !bytes.Equal(got, pattern(i)) {
			t.Fatalf("write %d, acknowledged during the shutdown, is not there after the restart", i+1)
		}
	}
}

// TestServeShutdownOrder holds a task in flight at SIGTERM: while the
// shutdown waits for it, the API no longer accepts connections and the
// NBD servers still do; then everything stops in the documented order,
// and the task cut short finishes on the next start.
func TestServeShutdownOrder(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	point := newHookPoint(t, "catalog.task volume.create running#1").withRelease()
	p := startServiceEnv(t, data, point.env(), "--data-plane", "embedded")
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "cut"}}, &vol)
	point.reached(p.done, p.log.String)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.waitLog("msg=stopping component=tasks") {
		t.Fatalf("cairn serve exited with a task in flight: %s", p.log.String())
	}
	// The task runner waits for the task: the API is closed, NBD open.
	if resp, err := http.Get(p.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the API still answers while the tasks stop: %s", resp.Status)
	}
	conn, err := net.Dial("unix", filepath.Join(data, nbdSocket))
	if err != nil {
		t.Fatalf("the NBD server stopped before the tasks did: %v", err)
	}
	conn.Close()
	point.resume()
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("cairn serve exited %d after SIGTERM: %s", code, p.log.String())
	}
	if got := stoppedComponents(p.log.String()); !slices.Equal(got, shutdownOrder) {
		t.Fatalf("components stopped in the order %v, want %v", got, shutdownOrder)
	}
	p = startService(t, data, "--data-plane", "embedded")
	p.settled()
	var got struct{ Volume map[string]any }
	p.mustCall(200, "GET", "/volumes/"+vol.Volume["id"].(string), nil, &got)
	if got.Volume["status"] != "available" || !strings.Contains(p.log.String(), "task interrupted by a restart") {
		t.Fatalf("the task cut short by the shutdown did not finish on the next start: %v: %s", got.Volume, p.log.String())
	}
}

// TestServeFailingNBDServer: an NBD server whose listener fails ends
// cairn serve with its error, after the same orderly shutdown, and the
// files that announced the service are gone.
func TestServeFailingNBDServer(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	point := newHookPoint(t, "nbd.accept#1").failing()
	p := startServiceEnv(t, data, point.env(), "--data-plane", "embedded")
	conn, err := net.Dial("unix", filepath.Join(data, nbdSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-p.done:
	case <-time.After(pointTimeout):
		t.Fatalf("cairn serve kept running after its NBD server failed: %s", p.log.String())
	}
	log := p.log.String()
	if code := p.cmd.ProcessState.ExitCode(); code != exitError {
		t.Fatalf("exit %d, want %d: %s", code, exitError, log)
	}
	if !regexp.MustCompile(`cairn: nbd server on unix \S+: test hook: injected failure at nbd.accept #1`).MatchString(log) {
		t.Fatalf("the error does not say which server failed and why: %s", log)
	}
	if got := stoppedComponents(log); !slices.Equal(got, shutdownOrder) {
		t.Fatalf("components stopped in the order %v, want %v: %s", got, shutdownOrder, log)
	}
	if _, err := os.Stat(filepath.Join(data, serviceFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the service file outlived the service: %v", err)
	}
	entry := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "cairn", strconv.Itoa(p.cmd.Process.Pid)+".json")
	if _, err := os.Stat(entry); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the registry entry outlived the service: %v", err)
	}
}

// ourGoroutines lists the goroutines running code of this module.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/cairnproject/cairn/internal/") || strings.Contains(g, "main.(*app)") ||
			strings.Contains(g, "main.(*shutdown)") {
			out = append(out, g)
		}
	}
	return out
}

// TestServeStopsEverything runs cairn serve in this process with idle API
// and NBD connections (unix socket and TCP) open, cancels it, and checks
// that it returned only once everything it started had stopped: no
// goroutine of ours is left, the engine is closed (its directory lock
// free), and the files that announced the service are gone.
func TestServeStopsEverything(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	runtimeDir := filepath.Join(dir, "run")
	env := map[string]string{"XDG_RUNTIME_DIR": runtimeDir}
	pr, pw := io.Pipe()
	a := &app{stdout: pw, stderr: io.Discard, getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	nbdAddr := freePort(t)
	code := make(chan int, 1)
	go func() {
		code <- a.run(ctx, []string{"serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--nbd-listen", nbdAddr,
			"--data-plane", "embedded", "--log-format", "text", "--kdf-time", "1", "--kdf-memory", "64", "--kdf-threads", "1"})
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatalf("cairn serve printed nothing; exit %d", <-code)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	url, _, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "cairn serving on "), " ")
	tok, err := os.ReadFile(filepath.Join(data, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	p := &svcProc{t: t, data: data, url: url, token: strings.TrimSpace(string(tok))}
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "idle"}}, &vol)
	p.settled()
	id := vol.Volume["id"].(string)
	p.mustCall(200, "POST", "/volumes/"+id+"/action", map[string]any{"os-attach": map[string]any{}}, nil)
	// Idle connections: NBD in transmission on both servers, and an API
	// keep-alive connection.
	onSocket := dialNBD(t, filepath.Join(data, nbdSocket), id)
	onTCP := dialNBDNet(t, "tcp", nbdAddr, id)
	req, _ := http.NewRequest("GET", url+"/healthz", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("cairn serve exited %d after its context ended", c)
	}
	// Goroutines that signalled their end may still be returning: allow
	// them that, as goleak does.
	for deadline := time.Now().Add(pointTimeout); ; {
		left := ourGoroutines()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of cairn serve outlived it:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	eng, err := volume.Open(data, volume.Options{})
	if err != nil {
		t.Fatalf("the engine is still open after cairn serve returned: %v", err)
	}
	eng.Close()
	for _, f := range []string{filepath.Join(data, serviceFile), filepath.Join(runtimeDir, "cairn", strconv.Itoa(os.Getpid())+".json")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s outlived cairn serve: %v", f, err)
		}
	}
	for name, c := range map[string]*nbdClient{"socket": onSocket, "TCP": onTCP} {
		if !c.closed() {
			t.Fatalf("the NBD connection on the %s is still open", name)
		}
	}
}

// TestServeBusyAddress: cairn serve on a busy address fails before it
// creates or changes anything, and the error names the flag to change.
func TestServeBusyAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"api", []string{"--listen", addr}, fmt.Sprintf("cairn: --listen %s: address already in use", addr)},
		{"nbd", []string{"--listen", "127.0.0.1:0", "--nbd-listen", addr}, fmt.Sprintf("cairn: --nbd-listen %s: address already in use", addr)},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			var stderr bytes.Buffer
			a := &app{stdout: io.Discard, stderr: &stderr, getenv: func(string) string { return "" }}
			code := a.run(t.Context(), append([]string{"serve", "--data-dir", data, "--log-format", "text"}, c.args...))
			if code != exitError || !strings.Contains(stderr.String(), c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), exitError, c.want)
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the failed start made the data directory: %v", err)
			}
		})
	}
}

// TestServeOneServicePerCatalog: a second cairn serve on a catalog a
// running one holds is refused before it changes anything, naming the
// holder, and the first serves on; after the first is killed (-9), a
// service on the same host takes the catalog at once, without waiting
// for the lease to lapse; after a clean stop, at once and without a
// takeover.
func TestServeOneServicePerCatalog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cat := filepath.Join(dir, "catalog.db")
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startService(t, dataA, "--catalog", cat, "--data-plane", "embedded")
	// B shares A's catalog, and so its admin token.
	if err := os.MkdirAll(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(dataA, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, adminTokenFile), tok, 0o600); err != nil {
		t.Fatal(err)
	}

	refused := exec.Command(binaryFor(t), "serve", "--data-dir", dataB, "--catalog", cat, "--data-plane", "embedded",
		"--listen", freePort(t), "--log-format", "text")
	out, err := refused.CombinedOutput()
	want := fmt.Sprintf("this catalog is in use by another service, cairn serve host=%s pid=%d ", hostname(t), a.cmd.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "run one service per catalog") {
		t.Fatalf("a second service on the catalog: %v\n%s\nwant a refusal saying %q", err, out, want)
	}
	if code := a.call("GET", "/volumes", nil, nil); code != http.StatusOK {
		t.Fatalf("the first service after the refusal: %d", code)
	}

	a.kill()
	b := startService(t, dataB, "--catalog", cat, "--data-plane", "embedded")
	if !strings.Contains(b.log.String(), "took over the catalog's lease from a service that is gone") {
		t.Fatalf("the service after a kill -9 did not say it took the lease over:\n%s", b.log.String())
	}
	b.stop()
	a = startService(t, dataA, "--catalog", cat, "--data-plane", "embedded")
	if strings.Contains(a.log.String(), "took over") {
		t.Fatalf("a service after a clean stop took the lease over, want it free:\n%s", a.log.String())
	}
	if code := a.call("GET", "/volumes", nil, nil); code != http.StatusOK {
		t.Fatalf("the service after a clean stop: %d", code)
	}
}

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
