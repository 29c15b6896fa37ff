package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
	"golang.org/x/sync/errgroup"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// checksumSQL sums every pgbench table: its row count and a hash of each
// row's text, so two copies agree only when their content does.
const checksumSQL = `SELECT concat_ws('/',
 (SELECT count(*) FROM pgbench_accounts), (SELECT sum(hashtext(a::text)::bigint) FROM pgbench_accounts a),
 (SELECT count(*) FROM pgbench_history), (SELECT coalesce(sum(hashtext(h::text)::bigint), 0) FROM pgbench_history h),
 (SELECT sum(hashtext(t::text)::bigint) FROM pgbench_tellers t), (SELECT sum(hashtext(b::text)::bigint) FROM pgbench_branches b))`

// pgTarget is a PostgreSQL server a client reaches: a cairn instance or
// the peer's cluster.
type pgTarget struct {
	host, user, password, db string
	port                     int
}

func (t pgTarget) env() []string {
	return []string{"PGHOST=" + t.host, "PGPORT=" + strconv.Itoa(t.port), "PGUSER=" + t.user,
		"PGPASSWORD=" + t.password, "PGDATABASE=" + t.db, "PGSSLMODE=disable"}
}

func (t pgTarget) psql(ctx context.Context, sql string) (string, error) {
	out, err := runCmd(ctx, t.env(), pgBin+"/psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql)
	return strings.TrimSpace(out), err
}

func (t pgTarget) checksum(ctx context.Context) (string, error) { return t.psql(ctx, checksumSQL) }

// pgbench runs pgbench with args and returns its TPS and transaction
// count.
func (t pgTarget) pgbench(ctx context.Context, args ...string) (tps float64, txns int, err error) {
	out, err := runCmd(ctx, t.env(), pgBin+"/pgbench", args...)
	if err != nil {
		return 0, 0, err
	}
	m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial`).FindStringSubmatch(out)
	n := regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`).FindStringSubmatch(out)
	if m == nil || n == nil {
		return 0, 0, fmt.Errorf("pgbench output: %q", out)
	}
	tps, _ = strconv.ParseFloat(m[1], 64)
	txns, _ = strconv.Atoi(n[1])
	return tps, txns, nil
}

func instanceTarget(inst wire.Instance) (pgTarget, error) {
	host, port, err := address(inst)
	return pgTarget{host: host, port: port, user: "bench", password: "bench-pw", db: "bench"}, err
}

// pgBackRest is the peer: a PostgreSQL 15 cluster archiving into
// pgBackRest 2.45 (zst, process-max 2, a local repository), as
// ../shared's reference scripts set it up.
type pgBackRest struct {
	base, data, conf string
	port             int
	// async archives with archive-async=y (the RPO part); repo is the
	// repository last configured.
	async bool
	repo  string
}

func (p *pgBackRest) target() pgTarget {
	return pgTarget{host: p.base, port: p.port, user: "postgres", db: "postgres"}
}

func (p *pgBackRest) br(ctx context.Context, args ...string) (string, error) {
	return asPostgres(ctx, "pgbackrest", append([]string{"--config=" + p.conf, "--stanza=bench"}, args...)...)
}

func (p *pgBackRest) writeConf(repo string) error {
	conf := fmt.Sprintf(`[global]
repo1-path=%s
repo1-retention-full=9
log-path=%s/log
lock-path=%s/lock
spool-path=%s/spool
log-level-console=warn
log-level-file=info
start-fast=y
process-max=2
compress-type=zst

[bench]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
`, repo, p.base, p.base, p.base, p.data, p.port, p.base)
	if p.async {
		conf = strings.Replace(conf, "[global]\n", "[global]\narchive-async=y\n", 1)
	}
	p.repo = repo
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(repo, 0o750); err != nil {
		return err
	}
	_, err := runCmd(context.Background(), nil, "chown", "-R", "postgres:postgres", repo, p.conf)
	return err
}

// setup makes and fills the peer's cluster.
func (p *pgBackRest) setup(ctx context.Context, scale int) error {
	p.stop(ctx, p.data)
	if err := os.RemoveAll(p.base); err != nil {
		return err
	}
	for _, d := range []string{"log", "lock", "spool"} {
		if err := os.MkdirAll(filepath.Join(p.base, d), 0o700); err != nil {
			return err
		}
	}
	if _, err := runCmd(ctx, nil, "chown", "-R", "postgres:postgres", p.base); err != nil {
		return err
	}
	if _, err := asPostgres(ctx, pgBin+"/initdb", "-D", p.data, "-U", "postgres", "--auth=trust",
		"--data-checksums", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=%s --stanza=bench archive-push %%p'
max_wal_senders = 3
max_wal_size = 4GB
`, p.port, p.base, p.conf)
	f, err := os.OpenFile(filepath.Join(p.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := p.writeConf(filepath.Join(p.base, "repo-setup")); err != nil {
		return err
	}
	if _, err := asPostgres(ctx, pgBin+"/pg_ctl", "-D", p.data, "-l", filepath.Join(p.base, "server.log"), "-w", "start"); err != nil {
		return err
	}
	if _, err := p.br(ctx, "stanza-create"); err != nil {
		return err
	}
	if _, err := runCmd(ctx, p.target().env(), pgBin+"/pgbench", "-i", "-q", "-s", strconv.Itoa(scale)); err != nil {
		return err
	}
	_, err = p.target().psql(ctx, "CHECKPOINT")
	return err
}

// stop stops the server of a data directory, if one runs.
func (p *pgBackRest) stop(ctx context.Context, data string) {
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err == nil {
		_, _ = asPostgres(ctx, pgBin+"/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
	}
}

// newRepo points pgBackRest at a fresh repository, so the next full
// backup is a whole one.
func (p *pgBackRest) newRepo(ctx context.Context, name string) (string, error) {
	repo := filepath.Join(p.base, name)
	if err := os.RemoveAll(repo); err != nil {
		return "", err
	}
	if err := p.writeConf(repo); err != nil {
		return "", err
	}
	_, err := p.br(ctx, "stanza-create")
	return repo, err
}

// restoreAndStart restores the latest backup into an empty directory and
// starts a server on it, promoted and writable; it returns the restored
// copy's checksum and stops it again. The timed part is fn's call.
func (p *pgBackRest) restoreAndStart(ctx context.Context) (float64, string, error) {
	dir := filepath.Join(p.base, "restore")
	p.stop(ctx, dir)
	if err := os.RemoveAll(dir); err != nil {
		return 0, "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return 0, "", err
	}
	if _, err := runCmd(ctx, nil, "chown", "postgres:postgres", dir); err != nil {
		return 0, "", err
	}
	t := pgTarget{host: p.base, port: p.port + 1, user: "postgres", db: "postgres"}
	secs, err := timed(ctx, func() error {
		if _, err := p.br(ctx, "--pg1-path="+dir, "--type=immediate", "--target-action=promote", "restore"); err != nil {
			return err
		}
		if _, err := asPostgres(ctx, pgBin+"/pg_ctl", "-D", dir, "-l", filepath.Join(p.base, "restore.log"), "-w", "-t", "600",
			"-o", fmt.Sprintf("-p %d -c archive_mode=off", p.port+1), "start"); err != nil {
			return err
		}
		for {
			out, err := t.psql(ctx, "SELECT pg_is_in_recovery()")
			if err != nil {
				return err
			}
			if out == "f" {
				return nil
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return 0, "", err
	}
	sum, err := t.checksum(ctx)
	p.stop(ctx, dir)
	return secs, sum, err
}

func backupGiB(b wire.DatabaseBackup) float64 {
	if b.Size == nil {
		return 0
	}
	return *b.Size
}

// pgPart: full backups, incrementals after pgbench, and restores to a
// running server, cairn's snapshot strategy beside pgBackRest, each
// step in turn in every repetition.
func pgPart(ctx context.Context, c config, r *results) error {
	peer := &pgBackRest{base: c.base + "/pg", port: c.peerPort}
	peer.data, peer.conf = filepath.Join(peer.base, "data"), filepath.Join(peer.base, "pgbackrest.conf")
	defer peer.stop(context.Background(), peer.data)

	// Both loads run at once: they are set-up, not measured.
	var src wire.Instance
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return peer.setup(gctx, c.scale) })
	g.Go(func() error {
		var err error
		src, err = loadPGInstance(gctx, c, "src", c.scale, sizeFor(c.scale))
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	size, err := peer.target().psql(ctx, "SELECT pg_size_pretty(pg_database_size('postgres'))")
	if err != nil {
		return err
	}
	r.note("pgbench -s %d: the peer's database is %s; cairn's instance has a %d GiB volume", c.scale, size, src.Volume.Size)

	var scratch string
	for rep := 1; rep <= c.reps; rep++ {
		container := fmt.Sprintf("bench-pg-%d-%d", time.Now().Unix(), rep)
		if err := c.api.prepareContainer(ctx, container, &scratch); err != nil {
			return err
		}
		// Full backups.
		repo, err := peer.newRepo(ctx, fmt.Sprintf("repo-%d", rep))
		if err != nil {
			return err
		}
		secs, err := timed(ctx, func() error { _, err := peer.br(ctx, "--type=full", "backup"); return err })
		if err != nil {
			return err
		}
		r.add("pg full backup", "pgbackrest", "s", secs)
		var full wire.DatabaseBackup
		if secs, err = timed(ctx, func() error {
			full, err = c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("full-%d", rep), Instance: src.ID, Container: container})
			return err
		}); err != nil {
			return err
		}
		r.add("pg full backup", "cairn", "s", secs)
		peerSize, err := duBytes(ctx, filepath.Join(repo, "backup"))
		if err != nil {
			return err
		}
		r.add("pg full backup size", "pgbackrest", "GiB", peerSize/(1<<30))
		stored, err := duBytes(ctx, filepath.Join(c.dataDir, "backups", container))
		if err != nil {
			return err
		}
		r.add("pg full backup size", "cairn", "GiB", stored/(1<<30))
		r.note("rep %d: cairn's full backup read a %.1f GiB volume image and stored %.2f GiB", rep, backupGiB(full), stored/(1<<30))

		// The same number of pgbench transactions on both.
		t, err := instanceTarget(src)
		if err != nil {
			return err
		}
		_, txns, err := t.pgbench(ctx, "-n", "-c", "4", "-j", "2", "-T", strconv.Itoa(c.pgbenchSecs))
		if err != nil {
			return err
		}
		if _, _, err := peer.target().pgbench(ctx, "-n", "-c", "4", "-j", "2", "-t", strconv.Itoa(txns/4)); err != nil {
			return err
		}
		r.note("rep %d: pgbench -T %d made %d transactions on cairn's instance; the peer ran the same number", rep, c.pgbenchSecs, txns)
		want, err := t.checksum(ctx)
		if err != nil {
			return err
		}
		peerWant, err := peer.target().checksum(ctx)
		if err != nil {
			return err
		}

		// Incrementals.
		if secs, err = timed(ctx, func() error { _, err := peer.br(ctx, "--type=incr", "backup"); return err }); err != nil {
			return err
		}
		r.add("pg incremental backup", "pgbackrest", "s", secs)
		var incr wire.DatabaseBackup
		if secs, err = timed(ctx, func() error {
			incr, err = c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("incr-%d", rep), Instance: src.ID, Parent: full.ID, Container: container})
			return err
		}); err != nil {
			return err
		}
		r.add("pg incremental backup", "cairn", "s", secs)

		// Restores to a running, writable server.
		secs, got, err := peer.restoreAndStart(ctx)
		if err != nil {
			return err
		}
		if got != peerWant {
			return fmt.Errorf("pgBackRest's restore has checksum %s, want %s", got, peerWant)
		}
		r.add("pg restore to running", "pgbackrest", "s", secs)
		var local wire.Instance
		if secs, err = timed(ctx, func() error {
			local, err = c.api.createInstance(ctx, instanceRequest{Name: fmt.Sprintf("local-%d", rep), Type: "postgresql",
				Version: "15", SizeGiB: int(src.Volume.Size), BackupRef: incr.ID})
			return err
		}); err != nil {
			return err
		}
		r.add("pg restore, local snapshot", "cairn", "s", secs)
		if err := checkPG(ctx, local, want); err != nil {
			return err
		}
		if err := c.api.deleteInstance(ctx, local.ID); err != nil {
			return err
		}
		// The source goes, and its snapshots with it: the next restore
		// reads the repository, and its instance is the next source.
		if err := c.api.deleteInstance(ctx, src.ID); err != nil {
			return err
		}
		if secs, err = timed(ctx, func() error {
			src, err = c.api.createInstance(ctx, instanceRequest{Name: fmt.Sprintf("src-%d", rep), Type: "postgresql",
				Version: "15", SizeGiB: int(src.Volume.Size), BackupRef: incr.ID})
			return err
		}); err != nil {
			return err
		}
		r.add("pg restore to running", "cairn", "s", secs)
		if err := checkPG(ctx, src, want); err != nil {
			return err
		}
	}
	return c.api.deleteInstance(ctx, src.ID)
}

// sizeFor returns a volume size in GiB for a pgbench scale: the data,
// a gigabyte of WAL and room.
func sizeFor(scale int) int { return 4 + scale*16/1000 }

// loadPGInstance creates an instance and fills it with pgbench -i.
func loadPGInstance(ctx context.Context, c config, name string, scale, sizeGiB int) (wire.Instance, error) {
	inst, err := c.api.createInstance(ctx, instanceRequest{Name: name, Type: "postgresql", Version: "15",
		SizeGiB: sizeGiB, Database: "bench", User: "bench", Pw: "bench-pw"})
	if err != nil {
		return inst, err
	}
	t, err := instanceTarget(inst)
	if err != nil {
		return inst, err
	}
	_, err = runCmd(ctx, t.env(), pgBin+"/pgbench", "-i", "-q", "-s", strconv.Itoa(scale))
	return inst, err
}

// checkPG compares a restored instance's tables with the source's.
func checkPG(ctx context.Context, inst wire.Instance, want string) error {
	t, err := instanceTarget(inst)
	if err != nil {
		return err
	}
	got, err := t.checksum(ctx)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("instance %s restored with checksum %s, want %s", inst.Name, got, want)
	}
	return nil
}

// tpsPart: pgbench's TPS, second by second (pgbench -P 1), while one
// full backup runs, against the seconds before it started, in the same
// pgbench run, and the 10 seconds after it; on cairn's instance with a
// snapshot backup and on the peer's cluster with pgBackRest's (both
// begin with an immediate checkpoint), in turn.
func tpsPart(ctx context.Context, c config, r *results) error {
	peer := &pgBackRest{base: c.base + "/tps", port: c.peerPort + 2}
	peer.data, peer.conf = filepath.Join(peer.base, "data"), filepath.Join(peer.base, "pgbackrest.conf")
	defer peer.stop(context.Background(), peer.data)
	var inst wire.Instance
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return peer.setup(gctx, c.scale) })
	g.Go(func() error {
		var err error
		inst, err = loadPGInstance(gctx, c, "tps", c.scale, sizeFor(c.scale))
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	t, err := instanceTarget(inst)
	if err != nil {
		return err
	}
	var scratch string
	ratios := map[string][]float64{}
	for rep := 1; rep <= c.reps; rep++ {
		container := fmt.Sprintf("bench-tps-%d-%d", time.Now().Unix(), rep)
		if err := c.api.prepareContainer(ctx, container, &scratch); err != nil {
			return err
		}
		if _, err := peer.newRepo(ctx, fmt.Sprintf("repo-tps-%d", rep)); err != nil {
			return err
		}
		for _, side := range []struct {
			tool   string
			target pgTarget
			backup func() error
		}{
			{"cairn", t, func() error {
				_, err := c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("tps-%d", rep), Instance: inst.ID, Container: container})
				return err
			}},
			{"pgbackrest", peer.target(), func() error { _, err := peer.br(ctx, "--type=full", "backup"); return err }},
		} {
			base, during, after, trace, err := tpsAround(ctx, side.target, c.tpsSecs, side.backup)
			if err != nil {
				return fmt.Errorf("%s: %w", side.tool, err)
			}
			r.note("TPS rep %d, %s, per second: %s", rep, side.tool, trace)
			r.add("TPS during a full backup / before", side.tool, "ratio", during/base)
			r.add("TPS 10 s after it / before", side.tool, "ratio", after/base)
			ratios[side.tool] = append(ratios[side.tool], during/base)
			r.note("TPS rep %d, %s: %.0f before the backup, %.0f during it, %.0f in the 10 s after", rep, side.tool, base, during, after)
		}
	}
	r.note("pgbench TPS during a full backup / before it, medians: cairn %.3f (target >= 0.90), pgBackRest %.3f",
		median(ratios["cairn"]), median(ratios["pgbackrest"]))
	return c.api.deleteInstance(ctx, inst.ID)
}

// tpsAround runs pgbench -P 1 on t, starts backup once pgbench has
// reported 15 seconds, and returns the mean TPS of the seconds before
// the backup, of those while it ran and of the 10 after it.
func tpsAround(ctx context.Context, t pgTarget, secs int, backup func() error) (before, during, after float64, trace string, err error) {
	const lead = 15
	run, err := startPgbench(ctx, t, "-n", "-c", "4", "-j", "2", "-P", "1", "-T", strconv.Itoa(lead+secs))
	if err != nil {
		return 0, 0, 0, "", err
	}
	if err := run.waitSeconds(ctx, lead); err != nil {
		return 0, 0, 0, "", err
	}
	from := run.elapsed()
	berr := backup()
	to := run.elapsed()
	reports, err := run.wait()
	if berr != nil {
		return 0, 0, 0, "", berr
	}
	if err != nil {
		return 0, 0, 0, "", err
	}
	before, during, after = meanTPS(reports, 2, from), meanTPS(reports, from, to), meanTPS(reports, to, to+10)
	if before == 0 || during == 0 {
		return 0, 0, 0, "", fmt.Errorf("pgbench reported no seconds to compare (backup from %.1f s to %.1f s): %v", from, to, reports)
	}
	return before, during, after, traceTPS(reports, from, to), nil
}

// traceTPS lists the reports of the seconds around [from, to), those
// that overlap it marked with *: where in a backup the TPS went.
func traceTPS(secs map[int]float64, from, to float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "backup %.1f-%.1f s:", from, to)
	for s := int(from) - 1; s <= int(to)+3; s++ {
		tps, ok := secs[s]
		if !ok {
			continue
		}
		mark := ""
		if float64(s) > from && float64(s-1) < to {
			mark = "*"
		}
		fmt.Fprintf(&b, " %d%s=%.0f", s, mark, tps)
	}
	return b.String()
}

// pgbenchRun is a pgbench -P 1 under way, whose per-second reports are
// read as they come.
type pgbenchRun struct {
	began time.Time
	mu    sync.Mutex
	secs  map[int]float64 // second (1 for the first) -> TPS
	seen  chan int        // each report's second
	done  chan error
	out   strings.Builder
}

var progressLine = regexp.MustCompile(`^progress: ([0-9.]+) s, ([0-9.]+) tps`)

func startPgbench(ctx context.Context, t pgTarget, args ...string) (*pgbenchRun, error) {
	cmd := exec.CommandContext(ctx, pgBin+"/pgbench", args...)
	cmd.Env = append(os.Environ(), t.env()...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	run := &pgbenchRun{secs: map[int]float64{}, seen: make(chan int, 1024), done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	run.began = time.Now()
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			run.mu.Lock()
			run.out.WriteString(line + "\n")
			run.mu.Unlock()
			if m := progressLine.FindStringSubmatch(line); m != nil {
				at, _ := strconv.ParseFloat(m[1], 64)
				tps, _ := strconv.ParseFloat(m[2], 64)
				run.mu.Lock()
				run.secs[int(at+0.5)] = tps
				run.mu.Unlock()
				select {
				case run.seen <- int(at + 0.5):
				default:
				}
			}
		}
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("pgbench: %w: %s", err, lastLines(run.out.String(), 10))
		}
		run.done <- err
		close(run.seen)
	}()
	return run, nil
}

// waitSeconds returns once pgbench has reported its n-th second.
func (p *pgbenchRun) waitSeconds(ctx context.Context, n int) error {
	for {
		select {
		case s, ok := <-p.seen:
			if !ok {
				return fmt.Errorf("pgbench ended before its second %d", n)
			}
			if s >= n {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// elapsed is the time since pgbench started, in its reports' seconds.
func (p *pgbenchRun) elapsed() float64 { return time.Since(p.began).Seconds() }

// wait waits for pgbench to end and returns its per-second TPS.
func (p *pgbenchRun) wait() (map[int]float64, error) {
	for range p.seen {
	}
	err := <-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.secs, err
}

// meanTPS averages the reports of the seconds that lie wholly inside
// [from, to) (report s covers s-1 to s).
func meanTPS(secs map[int]float64, from, to float64) float64 {
	var sum float64
	n := 0
	for s, tps := range secs {
		if float64(s-1) >= from && float64(s) <= to {
			sum += tps
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// bigPart: the restore from a local snapshot at ten times the size.
func bigPart(ctx context.Context, c config, r *results) error {
	inst, err := loadPGInstance(ctx, c, "big", c.bigScale, sizeFor(c.bigScale))
	if err != nil {
		return err
	}
	t, err := instanceTarget(inst)
	if err != nil {
		return err
	}
	size, err := t.psql(ctx, "SELECT pg_size_pretty(pg_database_size('bench'))")
	if err != nil {
		return err
	}
	r.note("pgbench -s %d: the database is %s on a %d GiB volume", c.bigScale, size, inst.Volume.Size)
	b, err := c.api.backup(ctx, backupRequest{Name: "big", Instance: inst.ID, Container: fmt.Sprintf("bench-big-%d", time.Now().Unix())})
	if err != nil {
		return err
	}
	want, err := t.checksum(ctx)
	if err != nil {
		return err
	}
	for rep := 1; rep <= c.reps; rep++ {
		var local wire.Instance
		secs, err := timed(ctx, func() error {
			local, err = c.api.createInstance(ctx, instanceRequest{Name: fmt.Sprintf("big-local-%d", rep), Type: "postgresql",
				Version: "15", SizeGiB: int(inst.Volume.Size), BackupRef: b.ID})
			return err
		})
		if err != nil {
			return err
		}
		r.add(fmt.Sprintf("pg -s %d restore, local snapshot", c.bigScale), "cairn", "s", secs)
		if err := checkPG(ctx, local, want); err != nil {
			return err
		}
		if err := c.api.deleteInstance(ctx, local.ID); err != nil {
			return err
		}
	}
	return c.api.deleteInstance(ctx, inst.ID)
}
