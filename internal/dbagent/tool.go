package dbagent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
)

// OSUser is the account a server and the tools that write its files run as.
type OSUser struct {
	Name     string
	UID, GID uint32
	// switchTo is set when the agent runs as root and the account is
	// another: commands then switch to it and files are given to it.
	switchTo bool
}

// ServerUser returns the account to run a datastore's server as: the
// named one (postgres, mysql: the Debian packages create them) when the
// agent runs as root, which servers refuse to run as; the agent's own
// account otherwise.
func ServerUser(name string) (OSUser, error) {
	if os.Geteuid() != 0 {
		cur, err := user.Current()
		if err != nil {
			return OSUser{}, fmt.Errorf("current user: %w", err)
		}
		return OSUser{Name: cur.Username, UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return OSUser{}, fmt.Errorf("the server's OS user %s (created by the datastore's package): %w", name, cairn.ErrNotFound)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return OSUser{}, fmt.Errorf("OS user %s: ids %s/%s: %w", name, u.Uid, u.Gid, cairn.ErrInvalid)
	}
	return OSUser{Name: name, UID: uint32(uid), GID: uint32(gid), switchTo: uid != 0}, nil
}

// RunAs makes cmd run as u.
func (u OSUser) RunAs(cmd *exec.Cmd) {
	if !u.switchTo {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, NoSetGroups: true}
}

// Own gives path to u (not following symlinks).
func (u OSUser) Own(path string) error {
	if !u.switchTo {
		return nil
	}
	if err := os.Lchown(path, int(u.UID), int(u.GID)); err != nil {
		return fmt.Errorf("giving %s to %s: %w", path, u.Name, err)
	}
	return nil
}

// OwnTree gives dir and everything under it to u.
func (u OSUser) OwnTree(dir string) error {
	if !u.switchTo {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return u.Own(path)
	})
}

// MakeDir creates dir (and its parents) with mode 0700 owned by u, or
// checks that an existing dir is a directory and gives it to u. When
// empty is set, an existing dir must be empty.
func (u OSUser) MakeDir(dir string, empty bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if empty {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("directory %s: %w", dir, err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("directory %s is not empty (holds %s): %w", dir, entries[0].Name(), cairn.ErrExists)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	return u.Own(dir)
}

// ToolDir is the working directory of the programs the agent starts.
// Never the data directory: on a data plane the data directory's file
// system is served by the starting process itself (NBD), and the child
// changes directory between fork and exec, while the parent's thread
// waits for it without yielding to the Go scheduler; a lookup that must
// read the volume then waits for a process whose garbage collector waits
// for that thread, for ever. The servers and initdb change into their data
// directories themselves, after exec.
const ToolDir = "/"

// ToolEnv is the environment the agent runs programs with: nothing of
// the agent's own, so no user configuration (a home directory's
// password or option files) reaches them.
func ToolEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "TZ=UTC"}, extra...)
}

// stderrKept is how much of a program's standard error RunTool keeps,
// and errTail how much of it an error carries.
const (
	stderrKept = 64 << 10
	errTail    = 2 << 10
)

// RunTool runs cmd (made with exec.CommandContext) to completion, keeping
// the last 64 KiB of its standard error, which it returns. A failure's
// error names the program and ends with the last 2 KiB of its standard
// error.
func RunTool(cmd *exec.Cmd) (string, error) {
	tail := &TailBuffer{Max: stderrKept}
	cmd.Stderr = tail
	if cmd.WaitDelay == 0 {
		// A program's children may keep its pipes open after it exits.
		cmd.WaitDelay = 10 * time.Second
	}
	err := cmd.Run()
	stderr := tail.String()
	if err != nil {
		return stderr, ToolError(cmd, err, stderr)
	}
	return stderr, nil
}

// ToolError describes a program's failure with its standard error's tail.
func ToolError(cmd *exec.Cmd, err error, stderr string) error {
	name := filepath.Base(cmd.Path)
	msg := strings.TrimSpace(stderr)
	if len(msg) > errTail {
		msg = "…" + msg[len(msg)-errTail:]
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if msg == "" {
			return fmt.Errorf("%s: %s", name, exit)
		}
		return fmt.Errorf("%s: %s: %s", name, exit, msg)
	}
	if msg == "" {
		return fmt.Errorf("%s: %w", name, err)
	}
	return fmt.Errorf("%s: %w: %s", name, err, msg)
}

// TailBuffer is an io.Writer that keeps the last Max bytes written.
// It is safe for concurrent use.
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.Max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.Max:]...)
	}
	return len(p), nil
}

// String returns the kept bytes.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > t.Max {
		return string(t.buf[len(t.buf)-t.Max:])
	}
	return string(t.buf)
}

// CountingWriter counts the bytes written through it.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
