package volumectl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
	"github.com/cairnproject/cairn/internal/testenv"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testenv.SkipOrFail(t, n+" is not installed (Debian/Ubuntu: apt-get install libnbd-bin qemu-utils e2fsprogs)")
		}
	}
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// warnings is a slog handler that keeps the messages of warnings and
// errors, so a test can require a quiet server.
type warnings struct {
	mu   *sync.Mutex
	msgs *[]string
	slog.Handler
}

func (w warnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.mu.Lock()
		*w.msgs = append(*w.msgs, r.Message)
		w.mu.Unlock()
	}
	return w.Handler.Handle(ctx, r)
}

func (w warnings) WithAttrs(as []slog.Attr) slog.Handler {
	return warnings{w.mu, w.msgs, w.Handler.WithAttrs(as)}
}

func quietLogger(t *testing.T) *slog.Logger {
	var (
		mu   sync.Mutex
		msgs []string
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			t.Errorf("server warning: %s", m)
		}
	})
	h := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(warnings{&mu, &msgs, h})
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func deviceSHA256(t *testing.T, d *volume.Device) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), d.Size()-off)]
		if err := d.ReadAt(t.Context(), p, off); err != nil {
			t.Fatal(err)
		}
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestExportsSparseImages copies sparse images into volumes of the real
// engine served over NBD, with nbdcopy (the README's walk-through step)
// and qemu-img convert -n, over junk, and reads them back byte for byte.
// Each image has zeros or a hole longer than the default maximum payload
// (32 MiB), which those clients send as one long write zeroes (issue 11:
// refused with EINVAL, leaving the volume half written); the engine's
// Zero gets it in pieces and punches holes.
func TestExportsSparseImages(t *testing.T) {
	requireTools(t, "nbdcopy", "qemu-img", "mkfs.ext4")
	dir := t.TempDir()
	ext4 := filepath.Join(dir, "ext4.img")
	if err := os.WriteFile(ext4, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ext4, 256<<20); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mkfs.ext4", "-F", "-q", ext4)
	empty := filepath.Join(dir, "empty.img")
	runTool(t, "qemu-img", "create", "-q", "-f", "raw", empty, "128M")
	holes := filepath.Join(dir, "holes.img")
	f, err := os.Create(holes)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{11})
	data := make([]byte, 3<<20)
	rng.Read(data)
	if _, err := f.WriteAt(data, 0); err != nil { // data, a 40 MiB hole, data, a 36 MiB hole
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[:1<<20], 43<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(80 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// nbdcopy's default: several connections, many requests in flight
	// on each, as the engine meets them from real clients.
	e := openEngine(t)
	sock := nbdtest.Serve(t, volumectl.Exports{E: e}, nbd.Options{Logger: quietLogger(t)})
	copiers := map[string][]string{
		"nbdcopy":  {"nbdcopy", "--flush"},
		"qemu-img": {"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw"},
	}
	for _, img := range []struct {
		name, path string
		size       int64
	}{{"mkfs.ext4-256M", ext4, 256 << 20}, {"qemu-img-create-128M", empty, 128 << 20}, {"data-then-40M-hole", holes, 80 << 20}} {
		want := fileSHA256(t, img.path)
		for _, name := range []string{"nbdcopy", "qemu-img"} {
			t.Run(img.name+"/"+name, func(t *testing.T) {
				ctx := t.Context()
				v, err := e.CreateVolume(ctx, img.name+"-"+name, img.size)
				if err != nil {
					t.Fatal(err)
				}
				// Junk the copy must overwrite: 8 KiB around every MiB
				// boundary, and 48 MiB (longer than the maximum payload) from
				// 8 MiB on.
				d, err := e.OpenVolume(v.ID)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				junk := bytes.Repeat([]byte("junk"), 12<<20)
				for off := int64(1 << 20); off < img.size; off += 1 << 20 {
					if err := d.WriteAt(ctx, junk[:8192], off-4096); err != nil {
						t.Fatal(err)
					}
				}
				if err := d.WriteAt(ctx, junk, 8<<20); err != nil {
					t.Fatal(err)
				}
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}

				uri := nbdtest.URI(sock, v.ID.String())
				cmd := copiers[name]
				runTool(t, cmd[0], append(cmd[1:], img.path, uri)...)
				if got := deviceSHA256(t, d); got != want {
					t.Fatalf("volume after %s: SHA-256 %s, want %s", name, got, want)
				}
				back := filepath.Join(t.TempDir(), "back.img")
				runTool(t, "nbdcopy", uri, back)
				if got := fileSHA256(t, back); got != want {
					t.Fatalf("volume read back with nbdcopy: SHA-256 %s, want %s", got, want)
				}
				// The junk under the image's zeros was punched out, not
				// overwritten with zeros or left.
				info, err := e.Volume(v.ID)
				if err != nil {
					t.Fatal(err)
				}
				var st syscall.Stat_t
				if err := syscall.Stat(img.path, &st); err != nil {
					t.Fatal(err)
				}
				if limit := st.Blocks*512 + 1<<20; info.Allocated > limit {
					t.Errorf("the volume's head layer holds %d bytes after the copy of an image allocating %d: the zeros were not punched",
						info.Allocated, st.Blocks*512)
				}
			})
		}
	}
}
