// Command memory measures how a backup's live memory grows with the number of
// chunk-sized regions of its source. It backs up a synthetic source of
// unique regions into a store that keeps metadata but drops chunk bytes
// (backups never read chunks back), samples the live heap, and prints
// bytes per region, so the growth per TiB of source can be written down.
//
//	go run ./bench/memory -regions 262144
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// chunkDropper keeps every object but chunks, whose names it remembers.
type chunkDropper struct {
	objstore.Backend
	mu     sync.Mutex
	chunks map[string]int64
}

func (c *chunkDropper) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if strings.HasPrefix(name, format.ChunksPrefix) {
		c.mu.Lock()
		c.chunks[name] = int64(len(data))
		c.mu.Unlock()
		return nil
	}
	return c.Backend.Put(ctx, name, data, opts)
}

func (c *chunkDropper) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if strings.HasPrefix(prefix, format.ChunksPrefix) {
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now()
		for n, s := range c.chunks {
			if err := fn(objstore.ObjectInfo{Name: n, Size: s, ModTime: now}); err != nil {
				return err
			}
		}
		return nil
	}
	return c.Backend.List(ctx, prefix, fn)
}

// source yields regions of chunkSize bytes that are each unique (a
// counter) and otherwise zero.
type source struct{ size, chunkSize int64 }

func (s source) Size() int64                              { return s.size }
func (s source) Allocated() ([]cairn.Extent, bool, error) { return nil, false, nil }
func (s source) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	clear(p)
	for i := int64(0); i < int64(len(p)); i += s.chunkSize {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+i)/uint64(s.chunkSize)+1)
	}
	return len(p), nil
}

func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func main() {
	regions := flag.Int64("regions", 262144, "chunk-sized regions in the source (262144 = 1 TiB at 4 MiB)")
	chunk := flag.Int64("chunk", 64<<10, "chunk size used for the measurement (small keeps it fast)")
	flag.Parse()
	ctx := context.Background()
	be := &chunkDropper{Backend: mem.New(mem.Options{}), chunks: map[string]int64{}}
	secret := repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("x")}
	opts := repo.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	r, err := repo.Init(ctx, be, secret, repo.InitOptions{ChunkSize: *chunk}, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	src := source{size: *regions * *chunk, chunkSize: *chunk}

	measure := func(what string, opts repo.BackupOptions) {
		runtime.GC()
		base := heapLive()
		var peak atomic.Uint64
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
					// Live memory, not garbage awaiting collection: what
					// the backup must hold grows with the source.
					runtime.GC()
					if h := heapLive(); h > peak.Load() {
						peak.Store(h)
					}
				}
			}
		}()
		start := time.Now()
		if _, err := r.Backup(ctx, src, opts); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		close(done)
		// The fake store's map of chunk names is not cairn's memory: weigh
		// it and take it out.
		runtime.GC()
		withStore := heapLive()
		saved := be.chunks
		be.chunks = map[string]int64{}
		runtime.GC()
		storeBytes := float64(withStore) - float64(heapLive())
		be.chunks = saved
		grow := float64(peak.Load()) - float64(base)
		if what == "full backup (all chunks new)" {
			grow -= storeBytes // the store grew during the backup
		}
		fmt.Printf("%-34s %8d regions  peak live heap +%6.1f MiB  %6.0f bytes/region  (%v)\n",
			what, *regions, grow/(1<<20), grow/float64(*regions), time.Since(start).Round(time.Second))
	}
	measure("full backup (all chunks new)", repo.BackupOptions{SourceName: "s"})
	measure("incremental (parent + known set)", repo.BackupOptions{SourceName: "s"})
}
