// Command dbbench drives the database benchmark (bench/db-bench.sh): a
// running cairn serve's database instances and backups beside
// pgBackRest and mariadb-backup in the same run, step by step, each
// timed step after the page cache is dropped.
//
//	dbbench -url http://127.0.0.1:PORT/v1.0/admin -token T [-parts pg,tps,big,mariadb]
//
// It prints one line per timed step and then the medians and ratios.
// Every restore is checked row by row (row counts and a checksum of
// every table's content) against its source.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
)

type config struct {
	api         troveAPI
	base        string // the peers' scratch directory
	dataDir     string // cairn serve's data directory: its containers are in backups/
	serveLog    string // cairn serve's log (JSON lines), where a recover's phases are read
	reps        int
	scale       int // pgbench scale of the pg part
	bigScale    int // pgbench scale of the big part
	pgbenchSecs int // pgbench -T before each incremental
	// pgbenchRate caps the rto parts' pgbench runs (-R, transactions a
	// second; 0: full speed), so both tools write the same WAL.
	pgbenchRate int
	tpsSecs     int // pgbench -T of each TPS round
	peerPort    int
	mariaRows   int
	parts       []string
}

func main() {
	var c config
	var parts string
	flag.StringVar(&c.api.url, "url", "", "the database API of a cairn serve, http://HOST:PORT/v1.0/PROJECT")
	flag.StringVar(&c.api.token, "token", "", "its token")
	flag.StringVar(&c.base, "base", "/var/tmp/cairn-db-bench/peer", "scratch directory of the peers")
	flag.StringVar(&c.dataDir, "data-dir", "", "cairn serve's data directory, where backups/CONTAINER is measured")
	flag.StringVar(&c.serveLog, "serve-log", "", "cairn serve's log, JSON lines (default: serve.log beside the data directory)")
	flag.IntVar(&c.reps, "reps", 3, "repetitions of each timed step")
	flag.IntVar(&c.scale, "scale", 60, "pgbench scale (60 is about 0.9 GiB)")
	flag.IntVar(&c.bigScale, "big-scale", 600, "pgbench scale of the big part")
	flag.IntVar(&c.pgbenchSecs, "pgbench-seconds", 60, "pgbench -T before each incremental")
	flag.IntVar(&c.pgbenchRate, "pgbench-rate", 0, "pgbench -R of the rto parts' runs (0: full speed)")
	flag.IntVar(&c.tpsSecs, "tps-seconds", 30, "pgbench -T of each TPS round")
	flag.IntVar(&c.peerPort, "peer-port", 54345, "first port of the peers' servers")
	flag.IntVar(&c.mariaRows, "mariadb-rows", 1500000, "rows of the MariaDB table (about 100 bytes each)")
	flag.StringVar(&parts, "parts", "pg,tps,mariadb", "parts to run: pg, tps, big, mariadb, rpo, rto; cleanup deletes every instance")
	flag.Parse()
	c.api.poll = 50 * time.Millisecond
	c.parts = strings.Split(parts, ",")
	if c.serveLog == "" && c.dataDir != "" {
		c.serveLog = filepath.Join(filepath.Dir(filepath.Clean(c.dataDir)), "serve.log")
	}
	if c.api.url == "" || c.api.token == "" || c.dataDir == "" {
		fmt.Fprintln(os.Stderr, "dbbench: -url, -token and -data-dir are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &results{}
	err := run(ctx, c, r)
	r.summary(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dbbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, r *results) error {
	for _, p := range c.parts {
		var err error
		switch p {
		case "pg":
			err = pgPart(ctx, c, r)
		case "tps":
			err = tpsPart(ctx, c, r)
		case "big":
			err = bigPart(ctx, c, r)
		case "mariadb":
			err = mariaPart(ctx, c, r)
		case "rpo":
			err = rpoPart(ctx, c, r)
		case "rto":
			err = rtoPart(ctx, c, r)
		case "rtonew":
			err = rtoNewPart(ctx, c, r)
		case "cleanup":
			err = cleanup(ctx, c)
		default:
			err = fmt.Errorf("unknown part %q", p)
		}
		if err != nil {
			return fmt.Errorf("%s part: %w", p, err)
		}
	}
	return nil
}

// results keeps every figure by step and tool, in order.
type results struct {
	steps []string
	vals  map[string]map[string][]float64 // step -> tool -> values
	units map[string]string
	notes []string
}

// add records one figure and prints it at once.
func (r *results) add(step, tool, unit string, v float64) {
	if r.vals == nil {
		r.vals, r.units = map[string]map[string][]float64{}, map[string]string{}
	}
	if _, ok := r.vals[step]; !ok {
		r.steps = append(r.steps, step)
		r.vals[step] = map[string][]float64{}
	}
	r.vals[step][tool] = append(r.vals[step][tool], v)
	r.units[step] = unit
	fmt.Printf("%s\t%-30s\t%-16s\t%.3f %s\n", time.Now().UTC().Format("15:04:05"), step, tool, v, unit)
}

func (r *results) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.notes = append(r.notes, s)
	fmt.Println("  " + s)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summary prints, per step, each tool's median (and range), and the
// ratio of the peer's median to cairn's where both ran.
func (r *results) summary(w *os.File) {
	fmt.Fprintln(w, "\nmedians (min–max) per step:")
	for _, step := range r.steps {
		tools := r.vals[step]
		names := make([]string, 0, len(tools))
		for t := range tools {
			names = append(names, t)
		}
		sort.Strings(names)
		var parts []string
		for _, t := range names {
			v := tools[t]
			parts = append(parts, fmt.Sprintf("%s %.2f (%.2f–%.2f, n=%d)", t, median(v), slices.Min(v), slices.Max(v), len(v)))
		}
		line := fmt.Sprintf("  %-30s %s: %s", step, r.units[step], strings.Join(parts, "; "))
		if ours, ok := tools["cairn"]; ok && len(tools) == 2 {
			for _, t := range names {
				if t != "cairn" && median(ours) > 0 {
					line += fmt.Sprintf("; %s/cairn %.2f", t, median(tools[t])/median(ours))
				}
			}
		}
		fmt.Fprintln(w, line)
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "  "+n)
	}
}

// timed runs fn after dropping the page cache and returns its seconds.
func timed(ctx context.Context, fn func() error) (float64, error) {
	if err := dropCaches(ctx); err != nil {
		return 0, err
	}
	began := time.Now()
	err := fn()
	return time.Since(began).Seconds(), err
}

// dropCaches writes dirty pages out and drops the page cache, so a timed
// step reads from the disk.
func dropCaches(ctx context.Context) error {
	if _, err := runCmd(ctx, nil, "sync"); err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("dropping the page cache (needs root): %w", err)
	}
	return nil
}

// runCmd runs a command with extra environment and returns its stdout;
// its stderr goes into the error.
func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(errOut.String()+out.String(), 15))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// asPostgres runs a command as the OS user postgres.
func asPostgres(ctx context.Context, name string, args ...string) (string, error) {
	return runCmd(ctx, nil, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
}

// duBytes returns the bytes a directory tree takes on disk.
func duBytes(ctx context.Context, dir string) (float64, error) {
	out, err := runCmd(ctx, nil, "du", "-sb", dir)
	if err != nil {
		return 0, err
	}
	var n float64
	_, err = fmt.Sscan(out, &n)
	return n, err
}

// cleanup deletes every instance of the project: what a run cut short
// left.
func cleanup(ctx context.Context, c config) error {
	var out struct {
		Instances []wire.Instance `json:"instances"`
	}
	if err := c.api.call(ctx, "GET", "/instances", nil, &out); err != nil {
		return err
	}
	for _, inst := range out.Instances {
		fmt.Println("deleting instance", inst.Name)
		if err := c.api.deleteInstance(ctx, inst.ID); err != nil {
			return err
		}
	}
	return nil
}
