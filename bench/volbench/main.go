// Command volbench measures the volume engine for bench/volume-bench.sh:
//
//	volbench fill -dir D -name N -size S        create a volume of mixed content
//	volbench scribble -dir D -name N -percent P write P% of it in scattered places
//	                  [-page B]                 (B-byte writes at B-aligned places, as a database's pages)
//	volbench snapshot -dir D -name N -snapshot S take a snapshot named S
//	volbench read -dir D -name N [-snapshot S]  read the volume, or its snapshot S, in 4 MiB requests
//	volbench snapshots -dir D -name N -count K  take K snapshots, a small write between each
//	volbench snapshot-time -dir D               snapshot creation time, 1 GiB to 1 TiB
//	volbench memory -dir D                      index memory per TiB
//
// It opens the data directory directly (nothing may serve it meanwhile).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: volbench fill|scribble|snapshot|snapshots|read|snapshot-time|memory [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "data directory")
	name := fs.String("name", "bench", "volume name")
	size := fs.Int64("size", 16<<30, "volume size in bytes")
	percent := fs.Float64("percent", 1, "share of the volume to change")
	count := fs.Int("count", 100, "snapshots to take")
	seed := fs.Uint64("seed", 1, "seed")
	page := fs.Int64("page", 0, "scribble: write pages of this many bytes (default: runs of 4 to 64 KiB)")
	snapshot := fs.String("snapshot", "", "read: the snapshot's name")
	_ = fs.Parse(os.Args[2:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "volbench: -dir is required")
		os.Exit(2)
	}
	ctx := context.Background()
	e, err := volume.Open(*dir, volume.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "volbench:", err)
		os.Exit(1)
	}
	defer e.Close()
	switch os.Args[1] {
	case "fill":
		err = fill(ctx, e, *name, *size, *seed)
	case "scribble":
		err = scribble(ctx, e, *name, *percent, *page, *seed)
	case "read":
		err = read(ctx, e, *name, *snapshot)
	case "snapshot":
		var vid cairn.ID
		if vid, err = findID(e, *name); err == nil {
			_, err = e.CreateSnapshot(ctx, vid, *snapshot)
		}
	case "snapshots":
		err = snapshots(ctx, e, *name, *count, *seed)
	case "snapshot-time":
		err = snapshotTime(ctx, e)
	case "memory":
		err = memory(ctx, e)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "volbench:", err)
		os.Exit(1)
	}
}

func findID(e *volume.Engine, name string) (cairn.ID, error) {
	for _, v := range e.Volumes() {
		if v.Name == name {
			return v.ID, nil
		}
	}
	return cairn.ID{}, fmt.Errorf("no volume %q", name)
}

func find(e *volume.Engine, name string) (*volume.Device, error) {
	id, err := findID(e, name)
	if err != nil {
		return nil, err
	}
	return e.OpenVolume(id)
}

const segment = 16 << 20

// fill writes segments of 16 MiB: a third random, a third log-like text,
// a third left as holes (zeros), shuffled.
func fill(ctx context.Context, e *volume.Engine, name string, size int64, seed uint64) error {
	v, err := e.CreateVolume(ctx, name, size)
	if err != nil {
		return err
	}
	d, err := e.OpenVolume(v.ID)
	if err != nil {
		return err
	}
	defer d.Close()
	n := int(size / segment)
	r := rand.New(rand.NewPCG(seed, 0))
	kinds := make([]int, n)
	for i := range kinds {
		kinds[i] = i % 3
	}
	r.Shuffle(n, func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	rnd := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 1<<20)
	var line int
	for s, kind := range kinds {
		if kind == 2 {
			continue
		}
		for off := int64(0); off < segment; off += int64(len(buf)) {
			if kind == 0 {
				_, _ = rnd.Read(buf)
			} else {
				buf = buf[:0]
				for len(buf) < 1<<20 {
					line++
					buf = fmt.Appendf(buf, "2026-11-21T10:%02d:%02d.%06d host%d svc[%d]: request %d path=/api/v3/volumes/%x status=%d bytes=%d\n",
						line/60%60, line%60, line%1000000, line%7, line%31, line, line*2654435761, 200+line%3*100, line%65536)
				}
				buf = buf[:1<<20]
			}
			if err := d.WriteAt(ctx, buf, int64(s)*segment+off); err != nil {
				return err
			}
		}
	}
	if err := d.Flush(ctx); err != nil {
		return err
	}
	fmt.Printf("filled %s: %d bytes, %d segments\n", name, size, n)
	return nil
}

// scribble writes runs of 4 to 64 KiB (4 KiB aligned), or pages of
// page bytes, at random places until percent of the volume has been
// written.
func scribble(ctx context.Context, e *volume.Engine, name string, percent float64, page int64, seed uint64) error {
	d, err := find(e, name)
	if err != nil {
		return err
	}
	defer d.Close()
	size := d.Size()
	target := int64(float64(size) * percent / 100)
	r := rand.New(rand.NewPCG(seed, 99))
	rnd := rand.NewChaCha8([32]byte{byte(seed), 9})
	buf := make([]byte, 64<<10)
	var done int64
	writes := 0
	for done < target {
		n := int64(4096 * (1 + r.IntN(16)))
		off := r.Int64N(size/4096-16) * 4096
		if page > 0 {
			n, off = page, r.Int64N(size/page)*page
		}
		_, _ = rnd.Read(buf[:n])
		if err := d.WriteAt(ctx, buf[:n], off); err != nil {
			return err
		}
		done += n
		writes++
	}
	if err := d.Flush(ctx); err != nil {
		return err
	}
	fmt.Printf("scribbled %s: %d writes, %d bytes (%.2f%%)\n", name, writes, done, 100*float64(done)/float64(size))
	return nil
}

// read reads the volume, or its snapshot named snapshot, from start to
// end in 4 MiB requests, as a backup does, and reports the rate.
func read(ctx context.Context, e *volume.Engine, name, snapshot string) error {
	vid, err := findID(e, name)
	if err != nil {
		return err
	}
	var d *volume.Device
	if snapshot == "" {
		d, err = e.OpenVolume(vid)
	} else {
		snaps := e.Snapshots(vid)
		i := slices.IndexFunc(snaps, func(s volume.SnapshotInfo) bool { return s.Name == snapshot })
		if i < 0 {
			return fmt.Errorf("volume %s has no snapshot %q", name, snapshot)
		}
		d, err = e.OpenSnapshot(snaps[i].ID)
	}
	if err != nil {
		return err
	}
	defer d.Close()
	buf := make([]byte, 4<<20)
	start := time.Now()
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), d.Size()-off)
		if err := d.ReadAt(ctx, buf[:n], off); err != nil {
			return err
		}
	}
	took := time.Since(start)
	fmt.Printf("read %s: %d bytes in %v, %.0f MB/s\n", name, d.Size(), took.Round(time.Millisecond), float64(d.Size())/took.Seconds()/1e6)
	return nil
}

// snapshots takes count snapshots of a volume with a 1 MiB write at a
// random place before each.
func snapshots(ctx context.Context, e *volume.Engine, name string, count int, seed uint64) error {
	vid, err := findID(e, name)
	if err != nil {
		return err
	}
	d, err := e.OpenVolume(vid)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 5))
	buf := make([]byte, 1<<20)
	for i := range count {
		off := r.Int64N(d.Size()/(1<<20)) << 20
		_, _ = rand.NewChaCha8([32]byte{byte(i)}).Read(buf)
		if err := d.WriteAt(ctx, buf, off); err != nil {
			return err
		}
		if _, err := e.CreateSnapshot(ctx, vid, "s"+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	fmt.Printf("took %d snapshots of %s\n", count, name)
	return d.Close()
}

// snapshotTime creates volumes of 1 GiB to 1 TiB, writes 256 MiB into
// each in 1 MiB pieces spread over the whole volume, and times snapshot
// creation (20 per size, a 64 KiB write between each).
func snapshotTime(ctx context.Context, e *volume.Engine) error {
	fmt.Printf("%-10s %12s %12s %12s\n", "volume", "median", "p90", "max")
	for _, size := range []int64{1 << 30, 16 << 30, 256 << 30, 1 << 40} {
		v, err := e.CreateVolume(ctx, fmt.Sprint("snaptime-", size), size)
		if err != nil {
			return err
		}
		d, err := e.OpenVolume(v.ID)
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		_, _ = rand.NewChaCha8([32]byte{3}).Read(buf)
		for i := range int64(256) {
			if err := d.WriteAt(ctx, buf, i*(size/256)); err != nil {
				return err
			}
		}
		// The data is on disk before timing: a snapshot syncs what was
		// written since the last flush, which costs by the amount of that
		// data, not by the volume's size.
		if err := d.Flush(ctx); err != nil {
			return err
		}
		var times []time.Duration
		for i := range 20 {
			if err := d.WriteAt(ctx, buf[:64<<10], int64(i)*(size/20)); err != nil {
				return err
			}
			start := time.Now()
			if _, err := e.CreateSnapshot(ctx, v.ID, ""); err != nil {
				return err
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		fmt.Printf("%-10s %12s %12s %12s\n", human(size), times[len(times)/2].Round(time.Microsecond),
			times[len(times)*9/10].Round(time.Microsecond), times[len(times)-1].Round(time.Microsecond))
		if err := d.Close(); err != nil {
			return err
		}
	}
	return nil
}

// memory opens 1 TiB volumes in different states and reports the heap
// each open device holds.
func memory(ctx context.Context, e *volume.Engine) error {
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	const size = 1 << 40
	cases := []struct {
		name  string
		setup func(d *volume.Device, id cairn.ID) error
	}{
		{"empty", func(*volume.Device, cairn.ID) error { return nil }},
		{"64k scattered 4 KiB writes", func(d *volume.Device, _ cairn.ID) error {
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(1, 2))
			for range 65536 {
				if err := d.WriteAt(ctx, buf, r.Int64N(size/4096)*4096); err != nil {
					return err
				}
			}
			return nil
		}},
		{"100 snapshots, 64k writes", func(d *volume.Device, id cairn.ID) error {
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(3, 4))
			for i := range 65536 {
				if err := d.WriteAt(ctx, buf, r.Int64N(size/4096)*4096); err != nil {
					return err
				}
				if i%655 == 0 {
					if _, err := e.CreateSnapshot(ctx, id, ""); err != nil {
						return err
					}
				}
			}
			return nil
		}},
	}
	fmt.Printf("%-32s %14s\n", "1 TiB volume", "heap per TiB")
	for _, c := range cases {
		v, err := e.CreateVolume(ctx, "mem-"+c.name, size)
		if err != nil {
			return err
		}
		d, err := e.OpenVolume(v.ID)
		if err != nil {
			return err
		}
		if err := c.setup(d, v.ID); err != nil {
			return err
		}
		if err := d.Close(); err != nil { // checkpoint, so the open below replays nothing
			return err
		}
		before := heap()
		d, err = e.OpenVolume(v.ID)
		if err != nil {
			return err
		}
		after := heap()
		fmt.Printf("%-32s %11.1f MiB\n", c.name, float64(after-before)/(1<<20))
		runtime.KeepAlive(d)
		if err := d.Close(); err != nil {
			return err
		}
	}
	return nil
}

func human(n int64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%d TiB", n>>40)
	default:
		return fmt.Sprintf("%d GiB", n>>30)
	}
}
