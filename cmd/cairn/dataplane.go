package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volumectl"
	"golang.org/x/sys/unix"
)

// The data plane of a data directory is the process that holds its volume
// engine and serves its NBD exports: cairn volume serve. cairn serve
// (the control plane: API, catalog, tasks) drives it through its control
// socket, and starts it when none runs. It runs in a session of its own,
// so it outlives a control plane that crashes, is killed or is upgraded:
// attached volumes stay attached, and their clients (nbdfuse, a loop
// device, the file system and database on it) never notice.

// dataPlaneLog is the data plane's log file in the data directory: it has
// no terminal once started in the background.
const dataPlaneLog = "data-plane.log"

// dataPlaneStartTimeout bounds how long a start in the background waits
// for the new process to answer on its control socket.
const dataPlaneStartTimeout = 2 * time.Minute

// dataPlaneStopTimeout bounds how long stopping the data plane waits for
// it to let go of the data directory.
const dataPlaneStopTimeout = 2 * time.Minute

// dataPlane is a running data plane as its control socket describes it.
type dataPlane struct {
	client *volumectl.Client
	info   volumectl.ServerInfo
}

// findDataPlane returns the data plane of dir, or nil when none answers.
func findDataPlane(ctx context.Context, dir string) *dataPlane {
	c := volumectl.NewClient(filepath.Join(dir, controlSocket))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return &dataPlane{client: c, info: info}
}

// startBackground starts args (a cairn command line) as a process of its
// own session, its output appended to logPath, and waits until ready
// reports it serving or it exits. It returns the process's ID; the
// process is left running, no longer this one's child once this one
// exits.
func startBackground(ctx context.Context, args []string, logPath string, ready func(context.Context) bool) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("finding this program: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("log file: %w", err)
	}
	defer logf.Close()
	start, _ := logf.Seek(0, 2)
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: no signal to this process's group (a ^C in its
	// terminal, a kill of its group) reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", strings.Join(args, " "), err)
	}
	pid := cmd.Process.Pid
	ctx, cancel := context.WithTimeout(ctx, dataPlaneStartTimeout)
	defer cancel()
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		var ws unix.WaitStatus
		if p, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); p == pid {
			return 0, fmt.Errorf("%s exited (%s) before serving: %s", strings.Join(args, " "), exitText(ws), logTail(logPath, start))
		}
		if ready(ctx) {
			_ = cmd.Process.Release()
			return pid, nil
		}
		select {
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			return 0, fmt.Errorf("%s did not start serving: %w: %s", strings.Join(args, " "), ctx.Err(), logTail(logPath, start))
		case <-time.After(wait):
		}
	}
}

func exitText(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "status " + strconv.Itoa(ws.ExitStatus())
}

// logTail returns what was written to path from offset on, at most its
// last 2 KiB, on one line.
func logTail(path string, from int64) string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) <= from {
		return "(nothing logged)"
	}
	data = data[from:]
	if len(data) > 2048 {
		data = data[len(data)-2048:]
	}
	return strings.Join(strings.Fields(string(data)), " ")
}

// stopDataPlane asks the data plane of dir (process pid) to stop, and
// waits until it has let go of the data directory.
func stopDataPlane(ctx context.Context, dir string, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stopping the data plane (pid %d): %w", pid, err)
	}
	lock, err := os.Open(filepath.Join(dir, "engine.lock"))
	if err != nil {
		return fmt.Errorf("data plane lock: %w", err)
	}
	defer lock.Close()
	ctx, cancel := context.WithTimeout(ctx, dataPlaneStopTimeout)
	defer cancel()
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
			_ = unix.Flock(int(lock.Fd()), unix.LOCK_UN)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the data plane (pid %d) still holds %s: %w", pid, dir, cairn.ErrUnavailable)
		case <-time.After(wait):
		}
	}
}

// dataPlane returns the data plane of st's data directory, started in the
// background when none runs. A running one is used as it is: where it
// serves NBD may differ from st's settings (the log says so).
func (a *app) dataPlane(ctx context.Context, st serveSettings, log *slog.Logger) (*dataPlane, error) {
	if dp := findDataPlane(ctx, st.DataDir); dp != nil {
		if dp.info.AllExports {
			return nil, fmt.Errorf("data directory %s is served by cairn volume serve (pid %d), which exports every volume: stop it, and cairn serve starts its own data plane: %w",
				st.DataDir, dp.info.PID, cairn.ErrConflict)
		}
		// What a predecessor killed in the middle of a task left open
		// (a snapshot it was reading, a volume it was restoring into)
		// must not stay in use: the tasks it ran resume, and clean up.
		n, err := dp.client.ReleaseOrphans(ctx)
		if err != nil {
			return nil, fmt.Errorf("data plane: %w", err)
		}
		log.Info("using the running data plane", "pid", dp.info.PID, "nbd_socket", dp.info.NBDSocket, "nbd_listen", dp.info.NBDListen,
			"released_handles", n)
		if dp.info.NBDSocket != st.NBDSocket || dp.info.NBDListen != st.NBDListen {
			log.Warn("the running data plane serves NBD elsewhere than the settings say; it keeps its own until it restarts",
				"nbd_socket", dp.info.NBDSocket, "nbd_listen", dp.info.NBDListen)
		}
		return dp, nil
	}
	o := volumeServeOptions{socket: st.NBDSocket, listen: st.NBDListen, exports: "named",
		db: dbHostOptions{address: st.DBAddress, ports: st.DBPorts, runDir: st.DBRunDir, spoolDir: st.DBSpoolDir, settings: st.DBSettings}}
	var dp *dataPlane
	pid, err := startBackground(ctx, o.args(st.DataDir), filepath.Join(st.DataDir, dataPlaneLog), func(ctx context.Context) bool {
		dp = findDataPlane(ctx, st.DataDir)
		return dp != nil
	})
	if err != nil {
		return nil, fmt.Errorf("data plane: %w", err)
	}
	log.Info("started the data plane", "pid", pid, "log", filepath.Join(st.DataDir, dataPlaneLog))
	return dp, nil
}

// releaseDataPlane is the control plane's last shutdown step: a data plane
// nothing depends on (no volume attached) is stopped; one serving attached
// volumes keeps serving them.
func releaseDataPlane(ctx context.Context, dir string, dp *dataPlane, log *slog.Logger) error {
	exports, err := dp.client.Exported(ctx)
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	if len(exports) > 0 {
		log.Info("the data plane keeps serving the attached volumes", "pid", dp.info.PID, "attached", len(exports))
		return nil
	}
	return stopDataPlane(ctx, dir, dp.info.PID)
}

// dataPlaneRestartBackoff bounds the pause between failed starts of a
// data plane that exited: the first start is at once, each failed one
// doubles the pause up to this.
const dataPlaneRestartBackoff = 30 * time.Second

// waitExit returns nil once process pid has exited (at once when there is
// no such process), or ctx's error when ctx ends first. It waits on a
// pidfd through the runtime's poller, so it works for a process that is
// not this one's child, and a process that is one is reaped.
func waitExit(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	// Non-blocking, so the file joins the poller and its deadline
	// interrupts the wait.
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	// A pidfd is readable once its process has exited.
	err = rc.Read(func(fd uintptr) bool {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil) // ECHILD when not ours
	return nil
}

// superviseDataPlane keeps a data plane serving the data directory until
// ctx ends: whenever the one running exits (killed, crashed), it starts
// another, which brings back the instances and releases what the dead one
// held, while the control plane's tasks that met it dead fail and clean
// up, or go on against the new one. Starts that fail are retried with
// backoff. It returns the data plane running last, for the shutdown.
func (a *app) superviseDataPlane(ctx context.Context, st serveSettings, dp *dataPlane, log *slog.Logger, restarted func(*dataPlane)) *dataPlane {
	for {
		if err := waitExit(ctx, dp.info.PID); err != nil {
			if ctx.Err() == nil {
				log.Error("cannot watch the data plane; it is not restarted if it dies", "pid", dp.info.PID, "err", err)
				<-ctx.Done()
			}
			return dp
		}
		log.Error("the data plane exited; starting another", "pid", dp.info.PID)
		// At once, then 1 s doubling to dataPlaneRestartBackoff.
		for pause := time.Duration(0); ; {
			select {
			case <-ctx.Done():
				return dp
			case <-time.After(pause):
			}
			next, err := a.dataPlane(ctx, st, log)
			if err == nil {
				dp = next
				break
			}
			pause = min(max(2*pause, time.Second), dataPlaneRestartBackoff)
			log.Error("starting the data plane again", "err", err, "retry_in", pause)
		}
		if restarted != nil {
			restarted(dp)
		}
	}
}
