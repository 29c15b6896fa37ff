// Command mkimage makes the benchmark's test images: "gen" writes a
// deterministic image of mixed content (a third random, a third log-like
// text, a third zeros, in shuffled 16 MiB segments); "modify" overwrites a
// share of it in scattered places and writes the changed-extents file.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
)

const segment = 16 << 20

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mkimage gen|modify [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "modify":
		err = modify(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	size := fs.Int64("size", 4<<30, "image size in bytes (a multiple of 16 MiB)")
	seed := fs.Uint64("seed", 7, "seed")
	out := fs.String("o", "", "output image")
	_ = fs.Parse(args)
	if *out == "" || *size%segment != 0 {
		return fmt.Errorf("need -o and a size that is a multiple of %d", segment)
	}
	n := int(*size / segment)
	kinds := make([]int, n)
	for i := range kinds {
		kinds[i] = i % 3
	}
	r := rand.New(rand.NewPCG(*seed, 0))
	r.Shuffle(n, func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	buf := make([]byte, segment)
	for i, k := range kinds {
		fill(buf, k, *seed, uint64(i))
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

var (
	levels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	comps  = []string{"api", "scheduler", "backup", "volume", "nbd", "catalog", "repo.gc", "http"}
	msgs   = []string{"request completed", "snapshot created", "chunk uploaded", "retrying after timeout",
		"connection reset by peer", "backup finished", "lock acquired", "user login"}
)

// fill writes segment i of kind k: 0 random, 1 log-like text, 2 zeros.
func fill(buf []byte, k int, seed, i uint64) {
	r := rand.New(rand.NewPCG(seed, i+1))
	switch k {
	case 0:
		for j := 0; j+8 <= len(buf); j += 8 {
			v := r.Uint64()
			for b := range 8 {
				buf[j+b] = byte(v >> (8 * b))
			}
		}
	case 1:
		var b bytes.Buffer
		t := int64(1763700000000) + int64(i)*100000000
		for b.Len() < len(buf) {
			t += int64(r.IntN(5000))
			fmt.Fprintf(&b, "%d.%03d %s [%s] %s id=%08x user=u%d dur=%dms bytes=%d path=/v3/%x/volumes/%d\n",
				t/1000, t%1000, levels[r.IntN(len(levels))], comps[r.IntN(len(comps))], msgs[r.IntN(len(msgs))],
				r.Uint32(), r.IntN(500), r.IntN(3000), r.IntN(1<<20), r.IntN(16), r.IntN(10000))
		}
		copy(buf, b.Bytes())
	default:
		clear(buf)
	}
}

func modify(args []string) error {
	fs := flag.NewFlagSet("modify", flag.ExitOnError)
	seed := fs.Uint64("seed", 1, "seed")
	percent := fs.Float64("percent", 1, "share of the image to overwrite, in percent")
	extent := fs.Int64("extent", 1<<20, "size of each overwritten extent")
	out := fs.String("extents", "", "write the changed-extents file here")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("modify needs the image path")
	}
	f, err := os.OpenFile(fs.Arg(0), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	count := int(float64(size) * *percent / 100 / float64(*extent))
	r := rand.New(rand.NewPCG(*seed, 99))
	buf := make([]byte, *extent)
	var changed []cairn.Extent
	for range count {
		off := r.Int64N((size-*extent)/4096) * 4096
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		changed = append(changed, cairn.Extent{Offset: off, Length: *extent})
	}
	if err := f.Close(); err != nil {
		return err
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].Offset < changed[j].Offset })
	if *out != "" {
		o, err := os.Create(*out)
		if err != nil {
			return err
		}
		if err := extents.WriteText(o, &extents.List{Size: size, Extents: extents.Normalize(changed)}); err != nil {
			return err
		}
		return o.Close()
	}
	return nil
}
