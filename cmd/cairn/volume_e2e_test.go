package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// volEnv runs cairn volume commands against one data directory and, for
// the repository commands, a local repository.
type volEnv struct {
	*env
	data string
}

func newVolEnv(t *testing.T) *volEnv {
	t.Helper()
	e := newEnv(t)
	v := &volEnv{env: e, data: filepath.Join(e.dir, "data")}
	e.envs = append(e.envs, "CAIRN_DATA_DIR="+v.data)
	return v
}

func (v *volEnv) socket() string { return filepath.Join(v.data, nbdSocket) }

func (v *volEnv) uri(export string) string {
	return "nbd+unix:///" + export + "?socket=" + v.socket()
}

// serve starts 'cairn volume serve' and waits for its sockets; the
// process is stopped when the test ends.
func (v *volEnv) serve(args ...string) *proc { v.t.Helper(); return v.serveEnv(nil, args...) }

// serveEnv is serve with env added to the environment.
func (v *volEnv) serveEnv(env []string, args ...string) *proc {
	v.t.Helper()
	p := &proc{cmd: exec.Command(binaryFor(v.t), append([]string{"volume", "serve"}, args...)...), exited: make(chan struct{}), out: &lockedBuffer{}}
	p.cmd.Env = append(append(os.Environ(), v.envs...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	v.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			p.kill()
		}
	})
	deadline := time.Now().Add(pointTimeout)
	for {
		// Dial, not stat: a killed server leaves its socket files behind.
		if c, err := net.Dial("unix", v.socket()); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			v.t.Fatalf("cairn volume serve exited: %s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("cairn volume serve did not start: %s", p.out.String())
		}
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			skipUnlessCapable(t, tool+" is not installed (test.sh installs it)")
		}
	}
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type volJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	Snapshots int    `json:"snapshots"`
	InUse     bool   `json:"in_use"`
	Allocated int64  `json:"allocated"`
}

type snapJSON struct {
	ID     string `json:"id"`
	Volume string `json:"volume"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
}

func (v *volEnv) createVolume(name, size string) volJSON {
	v.t.Helper()
	var out []volJSON
	v.json(&out, "volume", "create", name, "--size", size)
	return out[0]
}

func (v *volEnv) snapshot(vol, name string) snapJSON {
	v.t.Helper()
	var out []snapJSON
	v.json(&out, "volume", "snapshot", "create", vol, "--name", name)
	return out[0]
}

func randomFile(t *testing.T, path string, n int, seed uint64) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// TestVolumeCommands drives the volume commands on a data directory
// nobody serves, including their errors.
func TestVolumeCommands(t *testing.T) {
	v := newVolEnv(t)
	vol := v.createVolume("db", "1T")
	if vol.Size != 1<<40 || vol.Allocated > 1<<20 {
		t.Fatalf("a new 1 TiB volume: %+v", vol)
	}
	// Thin: the whole data directory stays small.
	if du := dirUsage(t, v.data); du > 8<<20 {
		t.Fatalf("a new 1 TiB volume uses %d bytes of disk", du)
	}
	s := v.snapshot("db", "first")
	if s.Volume != vol.ID {
		t.Fatalf("snapshot of %s, want %s", s.Volume, vol.ID)
	}
	var list []volJSON
	v.json(&list, "volume", "list")
	if len(list) != 1 || list[0].Snapshots != 1 {
		t.Fatalf("list: %+v", list)
	}
	v.ok("volume", "extend", "db", "--size", "2T")
	v.ok("volume", "show", vol.ID[:8])
	v.ok("volume", "clone", "first", "copy")
	var shown struct {
		volJSON
		List []snapJSON `json:"snapshot_list"`
	}
	v.json(&shown, "volume", "show", "db")
	if shown.Size != 2<<40 || len(shown.List) != 1 {
		t.Fatalf("show after extend: %+v", shown)
	}
	out := v.ok("volume", "changed-extents", "--from", "first", "db")
	if !strings.HasPrefix(out, "# cairn changed-extents v1\nsize 2199023255552\n") {
		t.Fatalf("changed-extents output:\n%s", out)
	}
	v.ok("volume", "revert", "db", "first")

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"volume", "create", "x", "--size", "0"}, exitUsage, "positive size"},
		{[]string{"volume", "create", "x", "--size", "lots"}, exitUsage, "positive size"},
		{[]string{"volume", "extend", "db", "--size", "1G"}, exitError, ""},
		{[]string{"volume", "show", "nosuch"}, exitError, `no volume "nosuch"`},
		{[]string{"volume", "delete", "db"}, exitError, "has snapshots"},
		{[]string{"volume", "snapshot", "delete", "nosuch"}, exitError, "no snapshot"},
		{[]string{"volume", "revert", "copy", "first"}, exitError, ""},
		{[]string{"volume", "changed-extents", "--from", "nosuch", "db"}, exitError, "no snapshot"},
		{[]string{"volume", "attach", "db"}, exitError, "start 'cairn volume serve' first"},
		{[]string{"volume", "snapshot", "list", "db", "extra"}, exitUsage, "accepts at most 1 arg"},
		{[]string{"volume", "serve", "--cpus", "-1"}, exitUsage, "positive number"},
		{[]string{"volume", "serve", "--no-unix"}, exitUsage, "--no-unix needs --listen"},
		{[]string{"repo", "backup", "--volume", "db", "/dev/null"}, exitUsage, "not both"},
		{[]string{"repo", "backup", "--volume", "db", "--snapshot", "first"}, exitUsage, "not both"},
		{[]string{"repo", "backup", "--volume", "nosuch"}, exitError, `no volume "nosuch"`},
	} {
		r := v.run(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("cairn %s: exit %d (want %d), stderr %q (want %q)", strings.Join(c.args, " "), r.code, c.code, r.stderr, c.msg)
		}
	}
	// The clone needs the snapshot: deleting the snapshot keeps the clone
	// whole; then everything can go.
	v.ok("volume", "snapshot", "delete", "first")
	v.ok("volume", "delete", "db", "copy")
	v.json(&list, "volume", "list")
	if len(list) != 0 {
		t.Fatalf("volumes left: %+v", list)
	}
}

func dirUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestVolumeServeRealClients serves volumes and checks them with libnbd's
// and QEMU's clients, then backs a volume up incrementally with the
// engine's changed extents and restores it.
func TestVolumeServeRealClients(t *testing.T) {
	needTools(t, "nbdinfo", "nbdcopy", "qemu-img")
	v := newVolEnv(t)
	vol := v.createVolume("disk", "64M")
	v.serve()
	img := filepath.Join(v.dir, "img")
	data := randomFile(t, img, 24<<20, 1)
	runTool(t, "nbdcopy", img, v.uri("disk"))
	runTool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, v.uri(vol.ID))

	// The map shows the written part as data and the rest as a hole.
	m := runTool(t, "nbdinfo", "--map", "--json", v.uri(vol.ID))
	var extentsMap []struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
		Type   int   `json:"type"`
	}
	if err := json.Unmarshal([]byte(m), &extentsMap); err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, m)
	}
	if len(extentsMap) != 2 || extentsMap[0].Length != 24<<20 || extentsMap[0].Type != 0 || extentsMap[1].Type != 3 {
		t.Fatalf("nbdinfo --map: %s", m)
	}

	// Commands go through the control socket while the server runs.
	snap := v.snapshot("disk", "before")
	info := runTool(t, "nbdinfo", v.uri(snap.ID))
	if !strings.Contains(info, "is_read_only: true") {
		t.Fatalf("snapshot export is not read-only:\n%s", info)
	}
	if out, err := exec.Command("nbdcopy", img, v.uri(snap.ID)).CombinedOutput(); err == nil {
		t.Fatalf("writing to a snapshot export succeeded: %s", out)
	}
	// Change 1 MiB of the volume; the snapshot keeps the old bytes.
	patch := filepath.Join(v.dir, "patch")
	randomFile(t, patch, 1<<20, 2)
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 40M 1M", "-c", "flush", v.uri(vol.ID))
	snapImg := filepath.Join(v.dir, "snap.img")
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", v.uri(snap.ID), snapImg)
	want := append(bytes.Clone(data), make([]byte, 40<<20)...)
	if got, _ := os.ReadFile(snapImg); !bytes.Equal(got, want) {
		t.Fatal("the snapshot changed after the volume was written")
	}
	out := v.ok("volume", "changed-extents", "--from", "before", "disk")
	if !strings.HasSuffix(out, fmt.Sprintf("%d %d\n", 40<<20, 1<<20)) {
		t.Fatalf("changed extents after a 1 MiB write at 40 MiB:\n%s", out)
	}

	// Backups: a full one, then an incremental that reads only what the
	// engine says changed.
	v.initRepo()
	var full, inc struct {
		ID      string `json:"id"`
		Tracked bool   `json:"changed_block_tracking"`
		Stats   struct {
			BytesRead int64 `json:"bytes_read"`
		} `json:"stats"`
	}
	v.json(&full, "repo", "backup", "--volume", "disk")
	if full.Tracked || full.Stats.BytesRead != 25<<20 {
		t.Fatalf("full backup: %+v", full)
	}
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x17 1M 4k", "-c", "write -P 0x18 50M 64k", "-c", "flush", v.uri(vol.ID))
	v.json(&inc, "repo", "backup", "--volume", "disk")
	if !inc.Tracked || inc.Stats.BytesRead != 4096+65536 {
		t.Fatalf("incremental backup: %+v (want only the 68 KiB written read)", inc)
	}
	// Only one base snapshot remains besides the user's.
	var snaps []snapJSON
	v.json(&snaps, "volume", "snapshot", "list", "disk")
	if len(snaps) != 2 {
		t.Fatalf("snapshots after two backups: %+v", snaps)
	}
	live := filepath.Join(v.dir, "live.img")
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", v.uri(vol.ID), live)
	restored := filepath.Join(v.dir, "restored.img")
	v.ok("repo", "restore", inc.ID, restored)
	if sha(t, restored) != sha(t, live) {
		t.Fatal("the incremental backup does not restore the volume's bytes")
	}
}

// TestVolumeServeKill9: writes acknowledged with a flush survive SIGKILL
// of the server, and snapshots taken before stay intact, whenever the
// kill lands.
func TestVolumeServeKill9(t *testing.T) {
	needTools(t, "nbdcopy", "qemu-io")
	v := newVolEnv(t)
	vol := v.createVolume("disk", "32M")
	r := rand.New(rand.NewPCG(5, 6))
	want := make([]byte, 32<<20)
	type snapState struct {
		id   string
		data []byte
	}
	var snaps []snapState
	for round := range 4 {
		// The kill lands as the k-th of the unflushed writes below reaches
		// the volume; they alone name the export by the volume's name.
		at := fmt.Sprintf("nbd.write disk#%d", 1+r.IntN(32))
		point := newHookPoint(t, at)
		srv := v.serveEnv(point.env())
		// A durable write (flushed, or FUA on odd rounds) in [8M, 32M),
		// then a snapshot of it.
		img := filepath.Join(v.dir, fmt.Sprintf("w%d", round))
		off := 8<<20 + r.Int64N(20<<20)&^4095
		chunk := randomFile(t, img, 2<<20+4096*r.IntN(100), uint64(round+10))
		copy(want[off:], chunk)
		write := fmt.Sprintf("write -s %s %d %d", img, off, len(chunk))
		if round%2 == 1 {
			runTool(t, "qemu-io", "-f", "raw", "-c", strings.Replace(write, "write", "write -f", 1), v.uri(vol.ID))
		} else {
			runTool(t, "qemu-io", "-f", "raw", "-c", write, "-c", "flush", v.uri(vol.ID))
		}
		s := v.snapshot("disk", fmt.Sprint(round))
		snaps = append(snaps, snapState{s.ID, bytes.Clone(want)})
		// Another durable write after the snapshot.
		off2 := 8<<20 + r.Int64N(20<<20)&^4095
		runTool(t, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -f -P %d %d 65536", round+1, off2), v.uri(vol.ID))
		copy(want[off2:off2+65536], bytes.Repeat([]byte{byte(round + 1)}, 65536))
		// Unflushed writes to [0, 8M) in flight when the kill lands: 32
		// writes of 256 KiB.
		junk := filepath.Join(v.dir, "junk")
		randomFile(t, junk, 8<<20, uint64(round+100))
		// (nbdcopy flushes only when told to.)
		bg := exec.Command("nbdcopy", "--request-size=262144", junk, v.uri("disk"))
		bgOut := &lockedBuffer{}
		bg.Stdout, bg.Stderr = bgOut, bgOut
		if err := bg.Start(); err != nil {
			t.Fatal(err)
		}
		bgDone := make(chan struct{})
		go func() { _ = bg.Wait(); close(bgDone) }()
		point.reached(either(srv.exited, bgDone), func() string { return srv.out.String() + bgOut.String() })
		srv.kill()
		<-bgDone

		srv = v.serve()
		for _, sn := range snaps {
			got := filepath.Join(v.dir, "got")
			runTool(t, "nbdcopy", v.uri(sn.id), got)
			if b, _ := os.ReadFile(got); !bytes.Equal(b, sn.data) {
				t.Fatalf("round %d: snapshot %s differs after kill -9", round, sn.id)
			}
		}
		got := filepath.Join(v.dir, "got")
		runTool(t, "nbdcopy", v.uri(vol.ID), got)
		b, _ := os.ReadFile(got)
		if len(b) != len(want) || !bytes.Equal(b[8<<20:], want[8<<20:]) {
			t.Fatalf("round %d: acknowledged durable writes lost after kill -9", round)
		}
		// The junk area holds whatever landed; take it into the model.
		copy(want[:8<<20], b[:8<<20])
		srv.kill()
	}
}

// TestVolumeAttachExt4 runs the whole chain: volume → NBD → nbdfuse →
// loop (direct I/O) → ext4; freeze, snapshot, thaw, keep writing; the
// snapshot, attached read-only, passes e2fsck and holds exactly the files
// from before the freeze.
func TestVolumeAttachExt4(t *testing.T) {
	if os.Geteuid() != 0 {
		skipUnlessCapable(t, "attaching needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipUnlessCapable(t, "no /dev/fuse")
	}
	needTools(t, "nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "e2fsck", "fsfreeze", "mount")
	v := newVolEnv(t)
	v.envs = append(v.envs, "CAIRN_ATTACH=fuse")
	v.createVolume("fs", "256M")
	v.serve()
	mnt := filepath.Join(v.dir, "mnt")
	snapMnt := filepath.Join(v.dir, "snapmnt")
	for _, d := range []string{mnt, snapMnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	dev := strings.TrimSpace(v.ok("volume", "attach", "fs"))
	t.Cleanup(func() {
		// Best effort on failure: never leave a frozen or mounted file
		// system or a loop device behind. Only our own mounts.
		for _, d := range []string{mnt, snapMnt} {
			if isMountOf(d) {
				_ = exec.Command("fsfreeze", "-u", d).Run()
				_ = exec.Command("umount", d).Run()
			}
		}
		for _, ref := range []string{"fs", "frozen"} {
			cmd := exec.Command(binaryFor(t), "volume", "detach", ref)
			cmd.Env = append(os.Environ(), v.envs...)
			_ = cmd.Run()
		}
	})
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("attach printed %q", dev)
	}
	runTool(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	runTool(t, "mount", dev, mnt)
	sums := map[string][32]byte{}
	for i := range 3 {
		name := fmt.Sprintf("f%d", i)
		data := randomFile(t, filepath.Join(mnt, name), 5<<20+i*4097, uint64(i+40))
		sums[name] = sha256sum(data)
	}
	runTool(t, "sync")
	if src := mountSource(mnt); src != dev {
		t.Fatalf("refusing to freeze %s: mounted from %q, not %s", mnt, src, dev)
	}
	runTool(t, "fsfreeze", "-f", mnt)
	r := v.run("volume", "snapshot", "create", "fs", "--name", "frozen")
	runTool(t, "fsfreeze", "-u", mnt)
	if r.code != 0 {
		t.Fatalf("snapshot of a frozen file system: %s", r.stderr)
	}
	// Keep writing: a new file and a changed one.
	randomFile(t, filepath.Join(mnt, "after"), 3<<20, 99)
	randomFile(t, filepath.Join(mnt, "f0"), 1<<20, 98)
	runTool(t, "sync")
	// A mounted device is not detached.
	if r := v.run("volume", "detach", "fs"); r.code == 0 || !strings.Contains(r.stderr, "unmount it first") {
		t.Fatalf("detach of a mounted device: exit %d, %s", r.code, r.stderr)
	}

	sdev := strings.TrimSpace(v.ok("volume", "attach", "frozen"))
	runTool(t, "e2fsck", "-fn", sdev)
	runTool(t, "mount", "-o", "ro,noload", sdev, snapMnt)
	entries, err := os.ReadDir(snapMnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[f0 f1 f2 lost+found]" {
		t.Fatalf("files in the snapshot: %v", names)
	}
	for name, want := range sums {
		data, err := os.ReadFile(filepath.Join(snapMnt, name))
		if err != nil || sha256sum(data) != want {
			t.Fatalf("%s in the snapshot differs from before the freeze (%v)", name, err)
		}
	}
	runTool(t, "umount", snapMnt)
	runTool(t, "umount", mnt)
	v.ok("volume", "detach", "frozen")
	v.ok("volume", "detach", "fs")
	if out := runTool(t, "losetup", "-l", "-n", "-O", "NAME,BACK-FILE"); strings.Contains(out, v.data) {
		t.Fatalf("loop devices left after detach:\n%s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(v.data, attachDir, "*")); len(left) != 0 {
		t.Fatalf("attachment files left: %v", left)
	}
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }

func mountSource(dir string) string {
	data, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == dir {
			return f[0]
		}
	}
	return ""
}

func isMountOf(dir string) bool { return mountSource(dir) != "" }

// TestVolumeServeTCP serves over TCP on loopback as well as the socket.
func TestVolumeServeTCP(t *testing.T) {
	needTools(t, "nbdinfo", "nbdcopy")
	v := newVolEnv(t)
	vol := v.createVolume("disk", "16M")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	v.serve("--listen", fmt.Sprint(port)) // a bare port binds 127.0.0.1
	img := filepath.Join(v.dir, "img")
	randomFile(t, img, 16<<20, 3)
	uri := fmt.Sprintf("nbd://127.0.0.1:%d/%s", port, vol.ID)
	runTool(t, "nbdcopy", img, uri)
	back := filepath.Join(v.dir, "back")
	runTool(t, "nbdcopy", v.uri(vol.ID), back)
	if sha(t, back) != sha(t, img) {
		t.Fatal("data written over TCP reads back differently over the socket")
	}
	if out := runTool(t, "nbdinfo", "--list", uri); !strings.Contains(out, vol.ID) {
		t.Fatalf("export list over TCP:\n%s", out)
	}
}

// TestVolumeDiskFull fills the data directory's file system: the writes
// that do not fit fail with ENOSPC at the client, the server goes on
// serving, and data flushed before reads back intact.
func TestVolumeDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		skipUnlessCapable(t, "mounting a small tmpfs needs root")
	}
	needTools(t, "nbdcopy", "qemu-io", "mount", "umount")
	v := newVolEnv(t)
	if err := os.MkdirAll(v.data, 0o700); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", v.data)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", v.data).Run() })
	vol := v.createVolume("v", "64M")
	v.serve()
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 48M 4M", "-c", "flush", v.uri(vol.ID))
	big := filepath.Join(v.dir, "big")
	randomFile(t, big, 40<<20, 7)
	out, err := exec.Command("nbdcopy", big, v.uri(vol.ID)).CombinedOutput()
	if err == nil {
		t.Fatal("writing 40 MiB into a 24 MiB file system succeeded")
	}
	if !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("nbdcopy failed without saying the disk is full: %s", out)
	}
	// Still serving; the flushed data is intact.
	runTool(t, "qemu-io", "-f", "raw", "-c", "read -P 0x42 48M 4M", v.uri(vol.ID))
	var list []volJSON
	v.json(&list, "volume", "list")
	if len(list) != 1 {
		t.Fatalf("volumes after a full disk: %+v", list)
	}
}

// TestVolumeServeSparseImage is the README's walk-through step with a
// fresh ext4 image: nbdcopy writes its zeros as write zeroes longer than
// the maximum payload (32 MiB), which 'cairn volume serve' must accept
// (issue 11: "write at offset … failed: Invalid argument"), then the
// volume reads back as the image.
func TestVolumeServeSparseImage(t *testing.T) {
	needTools(t, "nbdcopy", "mkfs.ext4")
	v := newVolEnv(t)
	vol := v.createVolume("disk", "256M")
	v.serve()
	img := filepath.Join(v.dir, "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mkfs.ext4", "-F", "-q", img)
	runTool(t, "nbdcopy", img, v.uri("disk"))
	back := filepath.Join(v.dir, "back.img")
	runTool(t, "nbdcopy", v.uri(vol.ID), back)
	if sha(t, back) != sha(t, img) {
		t.Fatal("the volume does not read back as the ext4 image copied into it")
	}
}
