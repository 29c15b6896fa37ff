// Command storebench measures what a store can do without cairn: plain
// parallel uploads and downloads of given objects with the same client
// libraries (ncw/swift, aws-sdk-go-v2) and settings cairn uses, so cairn's
// backup and restore throughput can be compared with them in one run.
//
//	storebench fetch    -store URL -o DIR          copy a repository's chunk objects to DIR
//	storebench upload   -store URL -dir DIR -n N   upload DIR's files as objects under plain/
//	storebench download -store URL -prefix P -n N [-o DIR]  download every object under P, discarding it or writing it to DIR
//	storebench clean    -store URL                 delete every object in the bucket or container
//
// URL is s3://BUCKET (CAIRN_S3_ENDPOINT and AWS_* for the endpoint and
// keys) or swift://CONTAINER (ST_* or OS_*).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/s3"
	"github.com/cairnproject/cairn/internal/objstore/swift"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: storebench fetch|upload|download|clean [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	storeURL := fs.String("store", "", "s3://BUCKET or swift://CONTAINER")
	dir := fs.String("dir", "", "directory of files to upload")
	out := fs.String("o", "", "directory to fetch into")
	prefix := fs.String("prefix", "", "object name prefix to download")
	n := fs.Int("n", 16, "requests in flight")
	_ = fs.Parse(os.Args[2:])
	ctx := context.Background()
	be, err := open(ctx, *storeURL, *n)
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "fetch":
		err = fetch(ctx, be, *out, *n)
	case "upload":
		err = upload(ctx, be, *dir, *n)
	case "download":
		err = download(ctx, be, *prefix, *n, *out)
	case "clean":
		err = be.List(ctx, "", func(i objstore.ObjectInfo) error { return be.Delete(ctx, i.Name) })
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if cerr := be.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "storebench:", err)
	os.Exit(1)
}

func open(ctx context.Context, raw string, n int) (objstore.Backend, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("store %q: want s3://BUCKET or swift://CONTAINER", raw)
	}
	prefix := strings.Trim(u.Path, "/")
	switch u.Scheme {
	case "s3":
		b, err := s3.New(ctx, s3.Config{Bucket: u.Host, Prefix: prefix, Endpoint: os.Getenv("CAIRN_S3_ENDPOINT"), PathStyle: true, Connections: 2 * n})
		if err != nil {
			return nil, err
		}
		return b, b.EnsureBucket(ctx)
	case "swift":
		b, err := swift.New(ctx, swift.Config{Container: u.Host, Prefix: prefix, Connections: 2 * n})
		if err != nil {
			return nil, err
		}
		return b, b.EnsureContainer(ctx)
	}
	return nil, fmt.Errorf("store %q: unknown scheme", raw)
}

// parallel runs fn over items on n goroutines and returns the first error.
func parallel(items []string, n int, fn func(string) error) error {
	ch := make(chan string)
	var wg sync.WaitGroup
	var first atomic.Value
	for range n {
		wg.Go(func() {
			for it := range ch {
				if err := fn(it); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

func fetch(ctx context.Context, be objstore.Backend, out string, n int) error {
	var names []string
	if err := be.List(ctx, "chunks/", func(i objstore.ObjectInfo) error { names = append(names, i.Name); return nil }); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	return parallel(names, n, func(name string) error {
		data, err := objstore.ReadAll(ctx, be, name, 0, -1)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, filepath.Base(name)), data, 0o600)
	})
}

func upload(ctx context.Context, be objstore.Backend, dir string, n int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	var total atomic.Int64
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	start := time.Now()
	err = parallel(names, n, func(name string) error {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		total.Add(int64(len(data)))
		return be.Put(ctx, "plain/"+name, data, objstore.PutOptions{})
	})
	report("upload", len(names), total.Load(), time.Since(start), n)
	return err
}

func download(ctx context.Context, be objstore.Backend, prefix string, n int, out string) error {
	var names []string
	if err := be.List(ctx, prefix, func(i objstore.ObjectInfo) error { names = append(names, i.Name); return nil }); err != nil {
		return err
	}
	if out != "" {
		if err := os.MkdirAll(out, 0o700); err != nil {
			return err
		}
	}
	var total atomic.Int64
	start := time.Now()
	err := parallel(names, n, func(name string) error {
		rc, err := be.Get(ctx, name, 0, -1)
		if err != nil {
			return err
		}
		defer rc.Close()
		var w io.Writer = io.Discard
		if out != "" {
			f, err := os.Create(filepath.Join(out, filepath.Base(name)))
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		m, err := io.Copy(w, rc)
		total.Add(m)
		return err
	})
	if out != "" && err == nil {
		syncDir(out)
	}
	report("download", len(names), total.Load(), time.Since(start), n)
	return err
}

// syncDir flushes written files, as a restore's final sync does.
func syncDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if f, err := os.Open(filepath.Join(dir, e.Name())); err == nil {
			_ = f.Sync()
			f.Close()
		}
	}
}

func report(what string, objects int, bytes int64, d time.Duration, n int) {
	fmt.Printf("%s objects=%d bytes=%d seconds=%.3f mib_per_s=%.1f in_flight=%d\n",
		what, objects, bytes, d.Seconds(), float64(bytes)/d.Seconds()/(1<<20), n)
}
