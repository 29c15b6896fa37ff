// Package attach turns an NBD export into a local block device and back.
//
// Two ways exist on Linux. Where the kernel has the nbd module and the
// nbd-client tool is installed, the kernel speaks NBD itself (/dev/nbdN).
// Elsewhere (containers, kernels without the module) nbdfuse presents the
// export as a file in a FUSE mount and a loop device with direct I/O
// turns that file into a block device; direct I/O keeps the page cache
// from holding a second copy of every block and makes a flush reach the
// server.
//
// Each attachment is recorded as a JSON file in a state directory, so
// detach works from another process and after a restart of the caller;
// detach only ever touches the processes, mounts and loop devices its
// record names.
package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
)

// Record describes one attachment.
type Record struct {
	// Export is the NBD export name; Socket the server's unix socket.
	Export string `json:"export"`
	Socket string `json:"socket"`
	// Device is the block device the caller uses.
	Device   string `json:"device"`
	ReadOnly bool   `json:"read_only"`
	// Method is "kernel" (nbd-client) or "fuse-loop" (nbdfuse + loop).
	Method string `json:"method"`
	// FuseDir and FusePID are the nbdfuse mount point and process.
	FuseDir string `json:"fuse_dir,omitempty"`
	FusePID int    `json:"fuse_pid,omitempty"`
}

// Manager attaches exports, keeping records under Dir.
type Manager struct {
	// Dir holds the records and the FUSE mount points.
	Dir string
	// PreferFUSE skips the kernel client even where it is available.
	PreferFUSE bool
}

func (m Manager) recordPath(export string) string {
	return filepath.Join(m.Dir, export+".json")
}

// Records lists the current attachments.
func (m Manager) Records() ([]Record, error) {
	paths, err := filepath.Glob(filepath.Join(m.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	return readRecords(paths)
}

// readRecords reads the records at paths. A record removed since it was
// listed (a detach of another export, concurrently) is left out: it is
// no attachment any more, and no error of this lookup's.
func readRecords(paths []string) ([]Record, error) {
	var out []Record
	for _, p := range paths {
		r, err := readRecord(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Lookup returns the attachment of an export or of a device path.
func (m Manager) Lookup(exportOrDevice string) (Record, error) {
	list, err := m.Records()
	if err != nil {
		return Record{}, err
	}
	for _, r := range list {
		if r.Export == exportOrDevice || r.Device == exportOrDevice {
			return r, nil
		}
	}
	return Record{}, fmt.Errorf("%s is not attached: %w", exportOrDevice, cairn.ErrNotFound)
}

func readRecord(path string) (Record, error) {
	var r Record
	data, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("attachment record: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("attachment record %s: %v: %w", path, err, cairn.ErrCorrupt)
	}
	return r, nil
}

func (m Manager) save(r Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.recordPath(r.Export) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("attachment record: %w", err)
	}
	return os.Rename(tmp, m.recordPath(r.Export))
}

// KernelAvailable reports whether the kernel NBD client can be used.
func KernelAvailable() bool {
	if _, err := exec.LookPath("nbd-client"); err != nil {
		return false
	}
	_, err := os.Stat("/sys/block/nbd0")
	return err == nil
}

// Attach connects the export served on socket to a new block device.
func (m Manager) Attach(ctx context.Context, socket, export string, readOnly bool) (Record, error) {
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return Record{}, fmt.Errorf("attachments: %w", err)
	}
	if r, err := m.Lookup(export); err == nil {
		return Record{}, fmt.Errorf("%s is already attached as %s: %w", export, r.Device, cairn.ErrExists)
	}
	r := Record{Export: export, Socket: socket, ReadOnly: readOnly}
	var err error
	if !m.PreferFUSE && KernelAvailable() {
		err = m.attachKernel(ctx, &r)
	} else {
		err = m.attachFUSE(ctx, &r)
	}
	if err != nil {
		return Record{}, err
	}
	if err := m.save(r); err != nil {
		_ = m.teardown(ctx, r)
		return Record{}, err
	}
	return r, nil
}

// Detach removes an attachment: the loop device, the FUSE mount and the
// nbdfuse process, or the kernel client. The device must not be mounted.
func (m Manager) Detach(ctx context.Context, exportOrDevice string) (Record, error) {
	r, err := m.Lookup(exportOrDevice)
	if err != nil {
		return r, err
	}
	if mounted, where := isMounted(r.Device); mounted {
		return r, fmt.Errorf("%s is mounted on %s; unmount it first: %w", r.Device, where, cairn.ErrConflict)
	}
	if err := m.teardown(ctx, r); err != nil {
		return r, err
	}
	return r, os.Remove(m.recordPath(r.Export))
}

func (m Manager) attachKernel(ctx context.Context, r *Record) error {
	for i := 0; ; i++ {
		dev := "/dev/nbd" + strconv.Itoa(i)
		if _, err := os.Stat("/sys/block/nbd" + strconv.Itoa(i)); err != nil {
			return fmt.Errorf("no free /dev/nbd device: %w", cairn.ErrUnavailable)
		}
		if _, err := os.Stat("/sys/block/nbd" + strconv.Itoa(i) + "/pid"); err == nil {
			continue // in use
		}
		args := []string{"-unix", r.Socket, "-N", r.Export, dev}
		if r.ReadOnly {
			args = append([]string{"-readonly"}, args...)
		}
		if err := run(ctx, "nbd-client", args...); err != nil {
			return err
		}
		r.Device, r.Method = dev, "kernel"
		return nil
	}
}

func (m Manager) attachFUSE(ctx context.Context, r *Record) error {
	for _, tool := range []string{"nbdfuse", "losetup", "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("attach needs %s (Debian packages libnbd-bin, mount, fuse3): %w", tool, cairn.ErrUnsupported)
		}
	}
	dir := filepath.Join(m.Dir, r.Export+".fuse")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fuse mount point: %w", err)
	}
	pidFile := filepath.Join(m.Dir, r.Export+".pid")
	_ = os.Remove(pidFile)
	logFile, err := os.Create(filepath.Join(m.Dir, r.Export+".log"))
	if err != nil {
		return fmt.Errorf("nbdfuse log: %w", err)
	}
	defer logFile.Close()
	uri := "nbd+unix:///" + r.Export + "?socket=" + r.Socket
	args := []string{"-P", pidFile}
	if r.ReadOnly {
		args = append(args, "-r")
	}
	args = append(args, filepath.Join(dir, "nbd"), uri)
	// nbdfuse outlives this command: its own session, no context.
	cmd := exec.Command("nbdfuse", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting nbdfuse: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.FuseDir, r.FusePID, r.Method = dir, cmd.Process.Pid, "fuse-loop"
	file := filepath.Join(dir, "nbd")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err := os.Stat(pidFile); err == nil && st.Size() > 0 {
			if _, err := os.Stat(file); err == nil {
				break
			}
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logFile.Name())
			return fmt.Errorf("nbdfuse exited (%v): %s: %w", err, strings.TrimSpace(string(log)), cairn.ErrUnavailable)
		case <-ctx.Done():
			_ = m.teardown(context.WithoutCancel(ctx), *r)
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = m.teardown(context.WithoutCancel(ctx), *r)
			return fmt.Errorf("nbdfuse did not come up within 15s: %w", cairn.ErrUnavailable)
		}
	}
	args = []string{"-f", "--show", "--direct-io=on"}
	if r.ReadOnly {
		args = append(args, "-r")
	}
	out, err := output(ctx, "losetup", append(args, file)...)
	if err != nil {
		_ = m.teardown(context.WithoutCancel(ctx), *r)
		return err
	}
	r.Device = strings.TrimSpace(out)
	return nil
}

func (m Manager) teardown(ctx context.Context, r Record) error {
	var errs []error
	switch r.Method {
	case "kernel":
		if r.Device != "" {
			errs = append(errs, run(ctx, "nbd-client", "-d", r.Device))
		}
	case "fuse-loop":
		file := filepath.Join(r.FuseDir, "nbd")
		if r.Device != "" {
			// Only the loop device backed by our file: the number may
			// have been reused after a reboot.
			back, err := output(ctx, "losetup", "-n", "-O", "BACK-FILE", r.Device)
			if err == nil && strings.TrimSpace(back) == file {
				errs = append(errs, run(ctx, "losetup", "-d", r.Device))
			}
		}
		if isMountPoint(r.FuseDir) {
			if err := run(ctx, "fusermount3", "-u", r.FuseDir); err != nil {
				errs = append(errs, run(ctx, "fusermount3", "-uz", r.FuseDir))
			}
		}
		if r.FusePID > 0 && isNBDFuse(r.FusePID) {
			deadline := time.Now().Add(10 * time.Second)
			for isNBDFuse(r.FusePID) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if isNBDFuse(r.FusePID) {
				_ = syscall.Kill(r.FusePID, syscall.SIGTERM)
			}
		}
		_ = os.Remove(r.FuseDir)
		_ = os.Remove(filepath.Join(filepath.Dir(r.FuseDir), r.Export+".pid"))
		_ = os.Remove(filepath.Join(filepath.Dir(r.FuseDir), r.Export+".log"))
	}
	return errors.Join(errs...)
}

// isNBDFuse reports whether pid is a live nbdfuse process (and not a
// reused PID).
func isNBDFuse(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(comm)) == "nbdfuse"
}

// mounts returns /proc/self/mounts as (source, target) pairs.
func mounts() [][2]string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out [][2]string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			out = append(out, [2]string{f[0], unescapeMount(f[1])})
		}
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// MountedAt returns the source of the mount at dir, if dir is a mount
// point (the last mount there, the one that is seen).
func MountedAt(dir string) (source string, ok bool) {
	for _, m := range mounts() {
		if m[1] == dir {
			source, ok = m[0], true
		}
	}
	return source, ok
}

func isMountPoint(dir string) bool {
	for _, m := range mounts() {
		if m[1] == dir {
			return true
		}
	}
	return false
}

func isMounted(dev string) (bool, string) {
	for _, m := range mounts() {
		if m[0] == dev {
			return true, m[1]
		}
	}
	return false, ""
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
