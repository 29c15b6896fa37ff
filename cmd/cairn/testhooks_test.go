package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pointTimeout bounds the wait for a process to reach a point: only a
// broken test waits that long, and it fails rather than hangs.
const pointTimeout = 5 * time.Minute

// hookPoint is a point where a process built with the test hooks
// (testhooks.go) stops, and says so: a crash test kills it there, by
// construction, instead of after a wall-clock window.
type hookPoint struct {
	t        *testing.T
	at       string
	fail     bool
	announce string
	release  string
	lines    chan string
	relf     *os.File
	onceFile string
	holds    string
}

// newHookPoint prepares the point at (EVENT#N); the process is held there
// until it is killed.
func newHookPoint(t *testing.T, at string) *hookPoint {
	t.Helper()
	dir := t.TempDir()
	p := &hookPoint{t: t, at: at, announce: filepath.Join(dir, "announce"), lines: make(chan string, 1024)}
	if err := syscall.Mkfifo(p.announce, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read and write: the open does not wait for the process, and the
	// process's writes never find the FIFO without a reader.
	f, err := os.OpenFile(p.announce, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	go func() {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// withRelease makes the process wait at the point until resume.
func (p *hookPoint) withRelease() *hookPoint {
	p.t.Helper()
	p.release = filepath.Join(filepath.Dir(p.announce), "release")
	if err := syscall.Mkfifo(p.release, 0o600); err != nil {
		p.t.Fatal(err)
	}
	f, err := os.OpenFile(p.release, os.O_RDWR, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { f.Close() })
	p.relf = f
	return p
}

// once makes the point one of the process tree's: the data plane the
// process starts may reach it, and one started after that one was killed
// passes it by.
func (p *hookPoint) once() *hookPoint {
	p.onceFile = filepath.Join(filepath.Dir(p.announce), "once")
	return p
}

// holding makes the process hold, after the point, only the operations
// whose name starts with prefix; the others go on.
func (p *hookPoint) holding(prefix string) *hookPoint { p.holds = prefix; return p }

// failing makes the operation at the point fail instead of stopping.
func (p *hookPoint) failing() *hookPoint { p.fail = true; return p }

// env is what the process's environment needs.
func (p *hookPoint) env() []string {
	env := []string{"CAIRN_TESTHOOK_AT=" + p.at, "CAIRN_TESTHOOK_ANNOUNCE=" + p.announce}
	if p.release != "" {
		env = append(env, "CAIRN_TESTHOOK_RELEASE="+p.release)
	}
	if p.onceFile != "" {
		env = append(env, "CAIRN_TESTHOOK_ONCE="+p.onceFile)
	}
	if p.holds != "" {
		env = append(env, "CAIRN_TESTHOOK_HOLD="+p.holds)
	}
	if p.fail {
		env = append(env, "CAIRN_TESTHOOK_ACTION=fail")
	}
	return env
}

// next returns the process's next announcement. It fails the test when
// the process exits first (the point was never reached) or after
// pointTimeout.
func (p *hookPoint) next(exited <-chan struct{}, describe func() string) string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("%s: the announcements ended", p.at)
		}
		return line
	case <-exited:
		// An announcement written just before the exit is still read.
		select {
		case line, ok := <-p.lines:
			if ok {
				return line
			}
		default:
		}
		p.t.Fatalf("the process exited before it reached %s: %s", p.at, describe())
	case <-time.After(pointTimeout):
		p.t.Fatalf("%s not reached in %v: %s", p.at, pointTimeout, describe())
	}
	return ""
}

// reached waits until the process says it reached the point.
func (p *hookPoint) reached(exited <-chan struct{}, describe func() string) {
	p.t.Helper()
	if line := p.next(exited, describe); !strings.HasPrefix(line, "reached ") {
		p.t.Fatalf("%s: the process announced %q first", p.at, line)
	}
}

// resume lets a process stopped at the point go on.
func (p *hookPoint) resume() {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.relf); err != nil {
		p.t.Fatal(err)
	}
}

// proc is a process the test started and waits for.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer // stdout and stderr
}

// startProc starts cairn with args and env; it is killed, if still
// running, when the test ends.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binaryFor(t), args...), exited: make(chan struct{}), out: &lockedBuffer{}}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	return p
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// either is closed when a or b is.
func either(a, b <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		select {
		case <-a:
		case <-b:
		}
		close(c)
	}()
	return c
}
