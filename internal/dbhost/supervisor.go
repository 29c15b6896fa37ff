package dbhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// supervisor runs one instance's server: it starts it, and when it ends
// on its own starts it again after a delay that doubles from BackoffMin
// to BackoffMax and returns to BackoffMin once the server answers. Its
// goroutine is owned by the Host (h.wg) and ends when stop is closed,
// after a clean shutdown of the server.
type supervisor struct {
	h    *Host
	inst dbagent.Instance
	id   string
	// started is called with each new process, to record its PID.
	started func(pid int)

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	// ready is closed the first time the server answers; failed gets
	// the error of a first start that never answered.
	ready     chan struct{}
	readyOnce sync.Once
	// gaveUp is closed when the first maxFirstStarts starts all failed:
	// a new instance whose server cannot start fails its Provision.
	gaveUp     chan struct{}
	gaveUpOnce sync.Once

	mu        sync.Mutex
	operating cairn.OperatingStatus
	// healthy is closed while operating is HEALTHY; leaving HEALTHY puts
	// an open one in its place.
	healthy  chan struct{}
	restarts int
	lastExit string
}

func (s *supervisor) status() (cairn.OperatingStatus, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.operating, s.restarts, s.lastExit
}

func (s *supervisor) set(op cairn.OperatingStatus) {
	s.mu.Lock()
	s.setLocked(op)
	s.mu.Unlock()
}

func (s *supervisor) setLocked(op cairn.OperatingStatus) {
	s.operating = op
	up := isClosed(s.healthy)
	switch {
	case op == cairn.OperatingHealthy && !up:
		close(s.healthy)
	case op != cairn.OperatingHealthy && up:
		s.healthy = make(chan struct{})
	}
}

// waitHealthy waits until the server answers, at most limit: a backup
// asked for while the server starts (after the data plane or the server
// restarted) waits for it rather than fail.
func (s *supervisor) waitHealthy(ctx context.Context, limit time.Duration) error {
	s.mu.Lock()
	up := s.healthy
	s.mu.Unlock()
	if isClosed(up) {
		return nil // without starting the clock
	}
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the database server: %w", ctx.Err())
	case <-s.done:
		return fmt.Errorf("the database server is stopped: %w", cairn.ErrConflict)
	case <-s.h.o.After(limit):
		op, n, last := s.status()
		return fmt.Errorf("the database server is %s after %v (%d restarts, last: %s): %w", op, limit, n, last, cairn.ErrConflict)
	}
}

// maxFirstStarts is how many failed starts of a server that never
// answered fail the Provision waiting for it.
const maxFirstStarts = 3

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// stopTimeout bounds a clean shutdown before the server is stopped at
// once.
const stopTimeout = 60 * time.Second

// run is the supervisor's goroutine.
func (s *supervisor) run() {
	defer close(s.done)
	delay := s.h.o.BackoffMin
	logPath := s.h.logPath(s.id)
	for {
		proc, err := s.start(logPath)
		if err == nil {
			err = s.waitReady(proc)
			if err == nil {
				delay = s.h.o.BackoffMin
				s.set(cairn.OperatingHealthy)
				s.readyOnce.Do(func() { close(s.ready) })
				s.h.event(s.id, "healthy")
				select {
				case <-s.stop:
					s.shutdown(proc)
					return
				case <-proc.Exited():
					err = fmt.Errorf("server exited: %v", proc.Wait())
				}
			}
		}
		if proc != nil && isClosed(proc.Exited()) {
			// The server's own children (PostgreSQL's backends) may
			// outlive it and hold what a new server needs: end its
			// process group, which is its own (Setpgid) and cannot be
			// reused while any member lives.
			if err := syscall.Kill(-proc.Pid(), syscall.SIGKILL); err == nil {
				s.h.o.Logger.Warn("stopped what the database server left running", "id", s.id, "pgid", proc.Pid())
			}
		}
		if s.stopped() {
			if proc != nil {
				s.shutdown(proc)
			}
			return
		}
		if proc != nil {
			// Ready failed while the process runs (it does not answer):
			// stop it before starting another.
			s.shutdown(proc)
		}
		s.mu.Lock()
		s.setLocked(cairn.OperatingRestarting)
		s.restarts++
		s.lastExit = err.Error()
		neverReady := s.restarts >= maxFirstStarts && !isClosed(s.ready)
		s.mu.Unlock()
		if neverReady {
			s.gaveUpOnce.Do(func() { close(s.gaveUp) })
		}
		s.h.o.Logger.Warn("database server ended; restarting", "id", s.id, "err", err, "in", delay)
		s.h.event(s.id, "exited")
		select {
		case <-s.stop:
			s.set(cairn.OperatingShutdown)
			return
		case <-s.h.o.After(delay):
		}
		delay = min(2*delay, s.h.o.BackoffMax)
	}
}

// start starts the server with its output appended to the log.
func (s *supervisor) start(logPath string) (*dbagent.Process, error) {
	cmd, err := s.inst.Command()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logFile, logFile
	proc, err := dbagent.Start(cmd)
	if err != nil {
		return nil, err
	}
	s.started(proc.Pid())
	s.h.event(s.id, "started")
	return proc, nil
}

// waitReady waits until the server answers, it exits, or the
// supervisor is stopped.
func (s *supervisor) waitReady(proc *dbagent.Process) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.inst.Ready(ctx, proc.Server())
}

func (s *supervisor) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// shutdown stops the server cleanly, at once after stopTimeout.
func (s *supervisor) shutdown(proc *dbagent.Process) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.inst.Stop(ctx, proc.Server()); err != nil {
		s.h.o.Logger.Warn("stopping the database server", "id", s.id, "err", err)
	}
	s.set(cairn.OperatingShutdown)
}

// startServer starts the supervisor of a prepared instance. With wait,
// it returns once the server first answers; when the server's first
// starts all fail, it stops the supervisor and fails with the server's
// last exit (a new instance that cannot start). Without, the supervisor
// goes on restarting it with backoff, and the state shows RESTARTING.
func (h *Host) startServer(ctx context.Context, inst *instance, eng dbagent.Engine, wait bool) error {
	inst.mu.Lock()
	sup := inst.sup
	inst.mu.Unlock()
	if sup == nil {
		ai, err := eng.Instance(h.config(&inst.rec))
		if err != nil {
			return err
		}
		sup = &supervisor{
			h: h, inst: ai, id: inst.rec.Spec.ID,
			stop: make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{}), gaveUp: make(chan struct{}),
			healthy: make(chan struct{}),
		}
		sup.started = func(pid int) {
			// Recorded so a restarted data plane can stop it; a failed
			// save only loses that.
			inst.saveMu.Lock()
			defer inst.saveMu.Unlock()
			inst.mu.Lock()
			inst.view.PID, inst.view.PIDStart = pid, processStart(pid)
			rec := inst.view
			inst.mu.Unlock()
			if err := h.save(rec); err != nil {
				h.o.Logger.Warn("recording the server's pid", "id", rec.Spec.ID, "err", err)
			}
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return fmt.Errorf("instance host: closing: %w", cairn.ErrUnavailable)
		}
		h.supervisors.Add(1)
		h.mu.Unlock()
		inst.mu.Lock()
		inst.sup = sup
		inst.mu.Unlock()
		go func() {
			defer h.supervisors.Done()
			sup.run()
		}()
	}
	if !wait {
		return nil
	}
	select {
	case <-sup.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the database server: %w", ctx.Err())
	case <-sup.done:
		return fmt.Errorf("database server stopped: %w", cairn.ErrUnavailable)
	case <-sup.gaveUp:
		_, n, last := sup.status()
		err := fmt.Errorf("the database server did not start (%d attempts; last: %s; log %s): %w", n, last, h.logPath(inst.rec.Spec.ID), cairn.ErrUnavailable)
		if serr := h.stopServer(ctx, inst); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
}

// stopServer stops the supervisor and its server and waits for them.
func (h *Host) stopServer(ctx context.Context, inst *instance) error {
	inst.mu.Lock()
	sup := inst.sup
	inst.mu.Unlock()
	if sup == nil {
		return nil
	}
	sup.stopOnce.Do(func() { close(sup.stop) })
	select {
	case <-sup.done:
	case <-ctx.Done():
		return fmt.Errorf("stopping the database server: %w", ctx.Err())
	}
	inst.mu.Lock()
	inst.sup = nil
	inst.rec.PID, inst.rec.PIDStart = 0, ""
	inst.view.PID, inst.view.PIDStart = 0, ""
	inst.mu.Unlock()
	h.event(inst.rec.Spec.ID, "stopped")
	return nil
}

// processStart returns the start time of pid in clock ticks since boot
// (field 22 of /proc/PID/stat), "" when there is no such process: with
// the PID it names one process, never a later one that reused the PID.
func processStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(data)
	// The command name (field 2) may hold spaces; fields after it do not.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// killAndWait kills the process pid started at start and waits until it
// is gone. The process is not our child (a previous data plane started
// it), so it is polled.
func killAndWait(ctx context.Context, pid int, start string) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping the server left running (pid %d): %w", pid, err)
	}
	// And its children, in its process group (the server leads it).
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for processStart(pid) == start {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for pid %d to end: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// serving waits, at most ServingWait, until the server of inst (whose op
// lock the caller holds) answers.
func (h *Host) serving(ctx context.Context, inst *instance) error {
	inst.mu.Lock()
	sup := inst.sup
	inst.mu.Unlock()
	if sup == nil {
		return fmt.Errorf("the database server is not running: %w", cairn.ErrConflict)
	}
	return sup.waitHealthy(ctx, h.o.ServingWait)
}
