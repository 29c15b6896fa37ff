package service_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// schedulerProcessEnv, set to a PostgreSQL catalog's URL, makes this
// test binary a scheduler process (schedulerProcess) instead of running
// tests.
const schedulerProcessEnv = "CAIRN_TEST_SCHEDULER_PROCESS"

func TestMain(m *testing.M) {
	if url := os.Getenv(schedulerProcessEnv); url != "" {
		if err := schedulerProcess(url, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "scheduler process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// schedulerProcess is a service on the catalog at url, in a process of
// its own: for each time it reads, one RFC 3339 line, it sets its clock
// there and fires what is due (FireDue), and writes how many slots it
// recorded, or "error: ..." (a line each). It ends at the end of its
// input.
func schedulerProcess(url string, in io.Reader, out io.Writer) error {
	ctx := context.Background()
	cat, err := postgres.Open(ctx, url)
	if err != nil {
		return err
	}
	defer cat.Close()
	clock := testenv.NewClock(time.Time{})
	svc := service.New(service.Config{Catalog: cat, Now: clock.Now})
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		at, err := time.Parse(time.RFC3339, lines.Text())
		if err != nil {
			return err
		}
		clock.Set(at)
		n, err := svc.FireDue(ctx)
		if err != nil {
			fmt.Fprintln(out, "error:", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintln(out, n)
	}
	return lines.Err()
}

// processPair is two scheduler processes (this binary, re-run), each
// with its own connections to the catalog at url. Each firing sends the
// time to both at once and waits for both answers.
func processPair(t *testing.T, url string) firePair {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type proc struct {
		in  io.WriteCloser
		out *bufio.Scanner
	}
	var procs [2]proc
	for i := range procs {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), schedulerProcessEnv+"="+url)
		cmd.Stderr = testWriter{t, fmt.Sprintf("scheduler process %d: ", i)}
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Its input closed, the process ends; the cleanup waits for it.
		t.Cleanup(func() {
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("scheduler process %d: %v", i, err)
			}
		})
		procs[i] = proc{in, bufio.NewScanner(out)}
	}
	return func(t *testing.T, at time.Time) [2]int {
		for i, p := range procs {
			if _, err := fmt.Fprintln(p.in, at.UTC().Format(time.RFC3339)); err != nil {
				t.Fatalf("scheduler process %d: %v", i, err)
			}
		}
		var counts [2]int
		for i, p := range procs {
			if !p.out.Scan() {
				t.Fatalf("scheduler process %d ended: %v", i, p.out.Err())
			}
			n, err := strconv.Atoi(p.out.Text())
			if err != nil {
				t.Fatalf("scheduler process %d: %s", i, p.out.Text())
			}
			counts[i] = n
		}
		return counts
	}
}

// testWriter logs what a process writes to its standard error.
type testWriter struct {
	t      *testing.T
	prefix string
}

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
