package dbagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a server started by Start: a command and the goroutine that
// waits for it, which ends when the process does.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited is closed
}

// Start starts cmd (from Instance.Command) and returns its process. The
// caller must let the process end (Instance.Stop) and may then Wait.
func Start(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Server returns the handle Instance.Ready and Instance.Stop take.
func (p *Process) Server() Server { return Server{Process: p.cmd.Process, Exited: p.exited} }

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns how it ended.
func (p *Process) Wait() error {
	<-p.exited
	return p.err
}

// WaitReady polls connect, with backoff from 10 ms to 250 ms, until it
// succeeds, srv exits or ctx ends: the readiness check both engines use.
// Polling stops the moment the process is gone, so a server that failed
// to start is reported at once, not after a timeout.
func WaitReady(ctx context.Context, srv Server, connect func(ctx context.Context) error) error {
	delay := 10 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := connect(attempt)
		cancel()
		if err == nil {
			return nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-srv.Exited:
			timer.Stop()
			return fmt.Errorf("server exited before it accepted connections (last attempt: %v)", err)
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("server not ready (last attempt: %v): %w", err, ctx.Err())
		case <-timer.C:
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// StopServer sends srv the clean shutdown signal and waits for it to
// exit; when ctx ends first it sends the immediate one and waits again.
func StopServer(ctx context.Context, srv Server, clean, immediate syscall.Signal) error {
	if srv.Process == nil || srv.Exited == nil {
		return errors.New("stopping a server: no process")
	}
	select {
	case <-srv.Exited:
		return nil
	default:
	}
	if err := srv.Process.Signal(clean); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping the server (pid %d): %w", srv.Process.Pid, err)
	}
	select {
	case <-srv.Exited:
		return nil
	case <-ctx.Done():
	}
	if err := srv.Process.Signal(immediate); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping the server (pid %d) at once: %w", srv.Process.Pid, err)
	}
	<-srv.Exited
	return fmt.Errorf("server (pid %d) did not stop cleanly in time and was stopped at once: %w", srv.Process.Pid, ctx.Err())
}
