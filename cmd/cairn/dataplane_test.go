package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cleanupDataPlane stops, when the test ends, a data plane left serving
// data: one that kept serving attached volumes after its service stopped,
// or whose service was killed. Register it before the service's own
// clean-up, so that it runs after.
func cleanupDataPlane(t *testing.T, data string) {
	t.Cleanup(func() {
		dp := findDataPlane(context.Background(), data)
		if dp == nil {
			return
		}
		if err := stopDataPlane(context.Background(), data, dp.info.PID); err != nil {
			t.Errorf("stopping the data plane left behind: %v", err)
		}
	})
}

// dataDirFree reports whether no process holds data's volume engine.
func dataDirFree(t *testing.T, data string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(data, "engine.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return true
}

// TestDataPlaneOutlivesService: cairn serve runs the volume engine and its
// NBD exports in a process of their own. Killed with SIGKILL, the service
// takes none of it down: an NBD connection open at the kill goes on
// writing and reading, and a real client (nbdcopy) connects afterwards.
// The service started again uses the running data plane and finds the
// volume attached; a SIGTERM with a volume attached leaves the data plane
// serving it; once nothing is attached, stopping the service stops the
// data plane too, and the data directory is free.
func TestDataPlaneOutlivesService(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("nbdcopy"); err != nil {
		skipUnlessCapable(t, "nbdcopy (Debian libnbd-bin) is not installed")
	}
	data := filepath.Join(t.TempDir(), "data")
	p := startService(t, data)
	var vol struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "kept"}}, &vol)
	p.settled()
	id := vol.Volume["id"].(string)
	p.mustCall(200, "POST", "/volumes/"+id+"/action", map[string]any{"os-attach": map[string]any{}}, nil)
	dp := findDataPlane(t.Context(), data)
	if dp == nil || dp.info.AllExports || dp.info.PID == p.cmd.Process.Pid {
		t.Fatalf("no data plane of its own behind the service: %+v", dp)
	}

	sock := filepath.Join(data, nbdSocket)
	c := dialNBD(t, sock, id)
	before := bytes.Repeat([]byte("before the kill "), 4096)
	c.sendWrite(1, 0, before)
	if _, errno, err := c.reply(); err != nil || errno != 0 {
		t.Fatalf("write before the kill: errno %d, %v", errno, err)
	}
	p.kill()

	after := bytes.Repeat([]byte("after the kill! "), 4096)
	c.sendWrite(2, 1<<20, after)
	if _, errno, err := c.reply(); err != nil || errno != 0 {
		t.Fatalf("write on the connection open at the kill: errno %d, %v", errno, err)
	}
	if got := c.read(0, uint32(len(before))); !bytes.Equal(got, before) {
		t.Fatal("the connection open at the kill reads other bytes than were written before it")
	}
	img := filepath.Join(t.TempDir(), "copy.img")
	runTool(t, "nbdcopy", "nbd+unix:///"+id+"?socket="+sock, img)
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1<<30 || !bytes.Equal(got[:len(before)], before) || !bytes.Equal(got[1<<20:1<<20+len(after)], after) {
		t.Fatalf("nbdcopy after the kill read %d bytes, not what was written", len(got))
	}

	p = startService(t, data)
	if !p.waitLog("using the running data plane") {
		t.Fatalf("the restarted service did not use the running data plane: %s", p.log.String())
	}
	var shown struct{ Volume map[string]any }
	p.mustCall(200, "GET", "/volumes/"+id, nil, &shown)
	if shown.Volume["status"] != "in-use" {
		t.Fatalf("volume after the restart: %v", shown.Volume)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if !strings.Contains(p.log.String(), "the data plane keeps serving the attached volumes") || findDataPlane(t.Context(), data) == nil {
		t.Fatalf("the data plane stopped with a volume attached: %s", p.log.String())
	}
	if got := c.read(1<<20, uint32(len(after))); !bytes.Equal(got, after) {
		t.Fatal("the connection does not read what it wrote after the service stopped")
	}
	c.conn.Close()

	p = startService(t, data)
	p.mustCall(202, "POST", "/volumes/"+id+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
	p.stop()
	if dp := findDataPlane(t.Context(), data); dp != nil {
		t.Fatalf("the data plane (pid %d) still serves with nothing attached: %s", dp.info.PID, p.log.String())
	}
	if !dataDirFree(t, data) {
		t.Fatalf("the data directory is still held after the service and its data plane stopped: %s", p.log.String())
	}
}
