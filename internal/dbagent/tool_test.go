package dbagent

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

func TestTailBuffer(t *testing.T) {
	tb := &TailBuffer{Max: 10}
	for i := 0; i < 100; i++ {
		tb.Write([]byte("0123456789"[i%10 : i%10+1]))
	}
	if got := tb.String(); got != "0123456789" {
		t.Errorf("tail %q", got)
	}
	tb.Write([]byte(strings.Repeat("x", 25) + "end"))
	if got := tb.String(); got != "xxxxxxxend" {
		t.Errorf("tail %q", got)
	}
}

func TestRunToolError(t *testing.T) {
	// 100 KiB of standard error, then a marker; exit status 3.
	cmd := exec.CommandContext(t.Context(), "sh", "-c", `i=0; while [ $i -lt 1600 ]; do printf '%064d\n' $i >&2; i=$((i+1)); done; echo last-words >&2; exit 3`)
	stderr, err := RunTool(cmd)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "sh: exit status 3: …") || !strings.HasSuffix(msg, "last-words") {
		t.Errorf("error %.80q … %q", msg, msg[max(0, len(msg)-40):])
	}
	if len(msg) > errTail+100 {
		t.Errorf("error has %d bytes, want about %d", len(msg), errTail)
	}
	if len(stderr) != stderrKept {
		t.Errorf("kept %d bytes of standard error, want %d", len(stderr), stderrKept)
	}
	if _, err := RunTool(exec.CommandContext(t.Context(), "/nonexistent/tool")); err == nil || !strings.Contains(err.Error(), "tool") {
		t.Errorf("missing program: %v", err)
	}
	if _, err := RunTool(exec.CommandContext(t.Context(), "true")); err != nil {
		t.Errorf("true: %v", err)
	}
}

func TestToolEnvAndConfig(t *testing.T) {
	env := ToolEnv("X=1")
	if !slices.Contains(env, "X=1") || !slices.Contains(env, "TZ=UTC") {
		t.Errorf("ToolEnv = %v", env)
	}
	good := Config{DataDir: "/v/data", RunDir: "/run/x", Address: "127.0.0.1", Port: 5432, Settings: map[string]string{"shared_buffers": "16MB"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"relative data":   func(c *Config) { c.DataDir = "data" },
		"relative run":    func(c *Config) { c.RunDir = "run" },
		"no address":      func(c *Config) { c.Address = "" },
		"port 0":          func(c *Config) { c.Port = 0 },
		"port 70000":      func(c *Config) { c.Port = 70000 },
		"long run dir":    func(c *Config) { c.RunDir = "/" + strings.Repeat("r", 100) },
		"setting name":    func(c *Config) { c.Settings = map[string]string{"a b": "1"} },
		"setting newline": func(c *Config) { c.Settings = map[string]string{"a": "1\n-c x=y"} },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	c := Config{Settings: map[string]string{"b": "2", "a": "1"}}
	if got := c.SortedSettings(); len(got) != 2 || got[0] != [2]string{"a", "1"} {
		t.Errorf("SortedSettings = %v", got)
	}
}

func TestDatastores(t *testing.T) {
	one := func(context.Context) ([]Datastore, error) {
		return []Datastore{{Type: PostgreSQL, Release: "15.18"}, {Type: PostgreSQL, Release: "13.2"}}, nil
	}
	two := func(context.Context) ([]Datastore, error) {
		return []Datastore{{Type: MariaDB, Release: "10.11.19"}}, nil
	}
	list, err := Datastores(t.Context(), one, two)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range list {
		got = append(got, d.Type+" "+d.Release)
	}
	if strings.Join(got, ", ") != "mariadb 10.11.19, postgresql 13.2, postgresql 15.18" {
		t.Errorf("Datastores = %v", got)
	}
	failing := func(context.Context) ([]Datastore, error) { return nil, errors.New("boom") }
	if _, err := Datastores(t.Context(), one, failing); err == nil {
		t.Error("a failing finder's error was lost")
	}
}

func TestWaitReadyStopServer(t *testing.T) {
	ctx := t.Context()
	// A process that exits: WaitReady fails as soon as it does.
	p, err := Start(exec.Command("true"))
	if err != nil {
		t.Fatal(err)
	}
	err = WaitReady(ctx, p.Server(), func(context.Context) error { return errors.New("refused") })
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady on an exited process: %v", err)
	}
	// Ready at the third attempt.
	p, err = Start(exec.Command("sleep", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	err = WaitReady(ctx, p.Server(), func(context.Context) error {
		attempts++
		if attempts < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || attempts != 3 {
		t.Errorf("WaitReady: %v after %d attempts", err, attempts)
	}
	// Cancelled.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitReady(cctx, p.Server(), func(context.Context) error { return errors.New("no") }); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitReady cancelled: %v", err)
	}
	// A clean stop.
	if err := StopServer(ctx, p.Server(), syscall.SIGTERM, syscall.SIGKILL); err != nil {
		t.Errorf("StopServer: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Error("StopServer returned before the process exited")
	}
	if err := StopServer(ctx, p.Server(), syscall.SIGTERM, syscall.SIGKILL); err != nil {
		t.Errorf("StopServer of an exited process: %v", err)
	}
	// A process that ignores the clean signal is stopped at once when the
	// context ends, and waited for.
	cmd := exec.Command("sh", "-c", `trap "" TERM; echo trapped; read x`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err = Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := stdout.Read(buf); err != nil { // the trap is set
		t.Fatal(err)
	}
	cctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = StopServer(cctx, p.Server(), syscall.SIGTERM, syscall.SIGKILL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("StopServer of a process ignoring SIGTERM: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Error("StopServer returned before the process exited")
	}
}
