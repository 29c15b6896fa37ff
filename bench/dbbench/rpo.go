package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
)

// rpoPart: archive lag, from a commit to the moment it is durable in
// the repository, while pgbench runs at full speed and on an idle
// server, with the archiver's CPU per GiB of WAL (cairn serve's, which
// includes answering this part's polls of the API at 20 Hz; the peer's
// pgbackrest processes', sampled every 50 ms); cairn's WAL streaming
// beside pgBackRest's archive-push (archive-async=y, its other defaults:
// archive_timeout 0), each on its own server in turn.
//
// A probe commits a row every 200 ms and notes the commit's time (taken
// inside the transaction, so at or before the commit). cairn's side
// polls the instance's archive every 50 ms: a probe is archived once
// the archive's last_transaction is at or past its time (WAL is stored
// in order). The peer's side polls pgBackRest's archive directory every
// 50 ms: a probe is archived once the segment holding its commit is
// there.
func rpoPart(ctx context.Context, c config, r *results) error {
	secs := c.pgbenchSecs
	for rep := 1; rep <= c.reps; rep++ {
		inst, err := loadPGInstance(ctx, c, fmt.Sprintf("rpo-%d", rep), c.scale, sizeFor(c.scale))
		if err != nil {
			return err
		}
		t, err := instanceTarget(inst)
		if err != nil {
			return err
		}
		busy, idle, cpuPerGiB, err := cairnLag(ctx, c, inst, t, secs)
		if err != nil {
			return err
		}
		r.add("archive lag p50, pgbench", "cairn", "s", pct(busy, 50))
		r.add("archive lag p99, pgbench", "cairn", "s", pct(busy, 99))
		r.add("archive lag max, pgbench", "cairn", "s", pct(busy, 100))
		r.add("archive lag, idle (max of 3)", "cairn", "s", pct(idle, 100))
		r.add("archiver CPU per GiB of WAL", "cairn", "s", cpuPerGiB)
		if err := c.api.deleteInstance(ctx, inst.ID); err != nil {
			return err
		}

		peer := &pgBackRest{base: c.base + "/rpo", port: c.peerPort + 6, async: true}
		peer.data, peer.conf = filepath.Join(peer.base, "data"), filepath.Join(peer.base, "pgbackrest.conf")
		if err := peer.setup(ctx, c.scale); err != nil {
			return fmt.Errorf("the peer: %w", err)
		}
		busy, idle, cpuPerGiB, err = peerLag(ctx, peer, secs)
		peer.stop(ctx, peer.data)
		if err != nil {
			return fmt.Errorf("the peer: %w", err)
		}
		r.add("archive lag p50, pgbench", "pgbackrest", "s", pct(busy, 50))
		r.add("archive lag p99, pgbench", "pgbackrest", "s", pct(busy, 99))
		r.add("archive lag max, pgbench", "pgbackrest", "s", pct(busy, 100))
		r.add("archive lag, idle (max of 3)", "pgbackrest", "s", pct(idle, 100))
		r.add("archiver CPU per GiB of WAL", "pgbackrest", "s", cpuPerGiB)
	}
	r.note("archive lag: from a probe commit to its WAL durable in the repository; an idle probe the peer does not archive within %v counts as %v (archive_timeout is 0 by default)", idleCap, idleCap)
	return nil
}

// idleProbes is how many probes are committed on the idle server.
const idleProbes = 3

// idleCap bounds the wait for an idle probe.
const idleCap = 20 * time.Second

// probe is a commit and its time.
type probe struct {
	at  time.Time
	seg string // the WAL segment holding the commit (the peer's side)
}

// commitProbe commits a probe row and returns its time and the segment
// the server writes after it.
func commitProbe(ctx context.Context, t pgTarget, n int) (probe, error) {
	out, err := t.psql(ctx, fmt.Sprintf("INSERT INTO rpo_probe VALUES (%d, clock_timestamp()) RETURNING to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'); SELECT pg_walfile_name(pg_current_wal_insert_lsn())", n))
	if err != nil {
		return probe{}, err
	}
	f := strings.Fields(out)
	if len(f) < 1 {
		return probe{}, fmt.Errorf("probe: %q", out)
	}
	at, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return probe{}, err
	}
	p := probe{at: at}
	if len(f) > 1 {
		p.seg = f[1]
	}
	return p, nil
}

// probing commits a probe every 200 ms until ctx ends.
func probing(ctx context.Context, t pgTarget, first int) ([]probe, error) {
	var out []probe
	for n := first; ; n++ {
		p, err := commitProbe(ctx, t, n)
		if ctx.Err() != nil {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, p)
		if sleep(ctx, 200*time.Millisecond) != nil {
			return out, nil
		}
	}
}

// probedPgbench runs pgbench -c 2 at full speed for secs, committing
// probes until it ends.
func probedPgbench(ctx context.Context, t pgTarget, secs int) ([]probe, error) {
	run, err := startPgbench(ctx, t, "-n", "-c", "2", "-j", "2", "-T", strconv.Itoa(secs), "-P", "1")
	if err != nil {
		return nil, err
	}
	pctx, stop := context.WithCancel(ctx)
	var probes []probe
	var perr error
	probed := make(chan struct{})
	go func() { defer close(probed); probes, perr = probing(pctx, t, 1) }()
	_, werr := run.wait()
	stop()
	<-probed
	if perr == nil {
		perr = werr
	}
	return probes, perr
}

// cairnLag runs pgbench for secs on the instance while probing, then
// five idle probes; lags in seconds, and the service's and data plane's
// CPU seconds per GiB of WAL written meanwhile.
func cairnLag(ctx context.Context, c config, inst wire.Instance, t pgTarget, secs int) (busy, idle []float64, cpuPerGiB float64, err error) {
	if _, err := t.psql(ctx, "CREATE TABLE rpo_probe (n int, at timestamptz)"); err != nil {
		return nil, nil, 0, err
	}
	lastTxn := func() (time.Time, error) {
		var out struct {
			Instance wire.Instance `json:"instance"`
		}
		if err := c.api.call(ctx, "GET", "/instances/"+inst.ID, nil, &out); err != nil {
			return time.Time{}, err
		}
		if a := out.Instance.Archive; a != nil {
			return a.LastTransaction, nil
		}
		return time.Time{}, nil
	}
	// The archive caught up with the load before the timed run.
	first, err := commitProbe(ctx, t, 0)
	if err != nil {
		return nil, nil, 0, err
	}
	for {
		lt, err := lastTxn()
		if err != nil {
			return nil, nil, 0, err
		}
		if !lt.Before(first.at) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, nil, 0, err
		}
	}
	pids := cairnPIDs(c.dataDir)
	cpu0 := cpuSeconds(pids)
	lsn0, err := t.psql(ctx, "SELECT pg_current_wal_lsn() - '0/0'")
	if err != nil {
		return nil, nil, 0, err
	}
	pctx, stop := context.WithCancel(ctx)
	type seen struct {
		when, txn time.Time
	}
	var mu sync.Mutex
	var polls []seen
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for pctx.Err() == nil {
			lt, err := lastTxn()
			if err == nil {
				mu.Lock()
				polls = append(polls, seen{time.Now(), lt})
				mu.Unlock()
			}
			_ = sleep(pctx, 50*time.Millisecond)
		}
	}()
	probes, perr := probedPgbench(ctx, t, secs)
	// The last probes archived too.
	if len(probes) > 0 {
		deadline := time.Now().Add(idleCap)
		for time.Now().Before(deadline) {
			mu.Lock()
			done := len(polls) > 0 && !polls[len(polls)-1].txn.Before(probes[len(probes)-1].at)
			mu.Unlock()
			if done {
				break
			}
			_ = sleep(ctx, 50*time.Millisecond)
		}
	}
	stop()
	wg.Wait()
	if perr != nil {
		return nil, nil, 0, perr
	}
	cpu1 := cpuSeconds(pids)
	lsn1, err := t.psql(ctx, "SELECT pg_current_wal_lsn() - '0/0'")
	if err != nil {
		return nil, nil, 0, err
	}
	for _, p := range probes {
		lag := idleCap.Seconds()
		for _, s := range polls {
			if !s.txn.Before(p.at) {
				lag = s.when.Sub(p.at).Seconds()
				break
			}
		}
		busy = append(busy, lag)
	}
	cpuPerGiB = perGiB(cpu1-cpu0, lsn0, lsn1)
	// Idle: one probe at a time, after a pause.
	for i := range idleProbes {
		if err := sleep(ctx, 2*time.Second); err != nil {
			return nil, nil, 0, err
		}
		p, err := commitProbe(ctx, t, 100000+i)
		if err != nil {
			return nil, nil, 0, err
		}
		lag := idleCap.Seconds()
		for deadline := time.Now().Add(idleCap); time.Now().Before(deadline); {
			lt, err := lastTxn()
			if err != nil {
				return nil, nil, 0, err
			}
			if !lt.Before(p.at) {
				lag = time.Since(p.at).Seconds()
				break
			}
			_ = sleep(ctx, 50*time.Millisecond)
		}
		idle = append(idle, lag)
	}
	return busy, idle, cpuPerGiB, nil
}

// peerLag is cairnLag's measure of the peer: the segment of each probe
// appearing in pgBackRest's archive directory, and the CPU of its
// processes.
func peerLag(ctx context.Context, p *pgBackRest, secs int) (busy, idle []float64, cpuPerGiB float64, err error) {
	t := p.target()
	if _, err := t.psql(ctx, "CREATE TABLE rpo_probe (n int, at timestamptz)"); err != nil {
		return nil, nil, 0, err
	}
	archive := filepath.Join(p.repo, "archive", "bench")
	var mu sync.Mutex
	first := map[string]time.Time{} // segment -> first seen
	cpu := map[int]float64{}        // pgbackrest process -> its CPU seconds, as last read
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for wctx.Err() == nil {
			files, _ := filepath.Glob(filepath.Join(archive, "*", "*", "*"))
			now := time.Now()
			procs := pgBackRestPIDs()
			mu.Lock()
			for _, f := range files {
				seg, _, _ := strings.Cut(filepath.Base(f), "-")
				if _, ok := first[seg]; !ok {
					first[seg] = now
				}
			}
			for _, pid := range procs {
				if s := cpuSeconds([]int{pid}); s > cpu[pid] {
					cpu[pid] = s
				}
			}
			mu.Unlock()
			_ = sleep(wctx, 50*time.Millisecond)
		}
	}()
	defer func() { stop(); wg.Wait() }()
	lagOf := func(pr probe, wait time.Duration) float64 {
		deadline := time.Now().Add(wait)
		for {
			mu.Lock()
			seen, ok := first[pr.seg]
			mu.Unlock()
			if ok {
				return seen.Sub(pr.at).Seconds()
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return time.Since(pr.at).Seconds()
			}
			_ = sleep(ctx, 50*time.Millisecond)
		}
	}
	mu.Lock()
	cpu0 := sumValues(cpu)
	mu.Unlock()
	lsn0, err := t.psql(ctx, "SELECT pg_current_wal_lsn() - '0/0'")
	if err != nil {
		return nil, nil, 0, err
	}
	probes, err := probedPgbench(ctx, t, secs)
	if err != nil {
		return nil, nil, 0, err
	}
	lsn1, err := t.psql(ctx, "SELECT pg_current_wal_lsn() - '0/0'")
	if err != nil {
		return nil, nil, 0, err
	}
	// One wait for all: a probe whose segment is not archived by then
	// (the last segment, not full when pgbench ended) counts with the
	// time it has waited, a lower bound.
	if len(probes) > 0 {
		lagOf(probes[len(probes)-1], idleCap)
	}
	for _, pr := range probes {
		busy = append(busy, lagOf(pr, 0))
	}
	mu.Lock()
	cpu1 := sumValues(cpu)
	mu.Unlock()
	cpuPerGiB = perGiB(cpu1-cpu0, lsn0, lsn1)
	for i := range idleProbes {
		if err := sleep(ctx, 2*time.Second); err != nil {
			return nil, nil, 0, err
		}
		pr, err := commitProbe(ctx, t, 100000+i)
		if err != nil {
			return nil, nil, 0, err
		}
		idle = append(idle, min(lagOf(pr, idleCap), idleCap.Seconds()))
	}
	return busy, idle, cpuPerGiB, nil
}

// perGiB is cpu seconds per GiB of the WAL between two positions (as
// psql prints pg_current_wal_lsn() - '0/0').
func perGiB(cpu float64, lsn0, lsn1 string) float64 {
	a, _ := strconv.ParseFloat(lsn0, 64)
	b, _ := strconv.ParseFloat(lsn1, 64)
	if b <= a {
		return 0
	}
	return cpu / ((b - a) / (1 << 30))
}

func sumValues(m map[int]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// pct is the p-th percentile of v (nearest rank); 100 is the maximum.
func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// cairnPIDs finds the cairn serve process of a data directory, where
// the archivers run (the data plane, which also serves every block the
// database reads and writes, is left out; the WAL it relays costs it a
// copy).
func cairnPIDs(dataDir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && strings.HasSuffix(args[0], "cairn") && args[1] == "serve" && slices.Contains(args, dataDir) {
			out = append(out, pid)
		}
	}
	return out
}

// pgBackRestPIDs finds the running pgbackrest processes.
func pgBackRestPIDs() []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if argv0, _, _ := strings.Cut(string(b), "\x00"); err == nil && filepath.Base(argv0) == "pgbackrest" {
			out = append(out, pid)
		}
	}
	return out
}

// cpuSeconds sums the user and system CPU time of processes.
func cpuSeconds(pids []int) float64 {
	var ticks float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: utime and
		// stime are the 12th and 13th.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			ticks += u + st
		}
	}
	return ticks / 100 // USER_HZ
}
