// Command schedbench measures the backup policies' scheduler
// (bench/sched-bench.sh): N policies on one every-minute schedule, each
// backing up a volume of its own, all due at the same second. At each
// of a few minute boundaries it fires what is due, as the scheduler's
// loop does when it wakes there, and reports how late each slot was
// recorded (its fired_at minus its slot time): the target is every slot
// within 1 s; and how late its backup was queued (the backup's
// created_at minus the slot time). Between rounds the backups are
// marked done, as finished tasks would leave them, so each round queues
// N backups again.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		os.Exit(1)
	}
}

func openCatalog(ctx context.Context, dsn string) (catalog.Store, error) {
	if strings.HasPrefix(dsn, "postgres") {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, dsn)
}

func run() error {
	dsn := flag.String("catalog", "", "catalog: a SQLite file (default: a new one in a temporary directory) or a postgres:// URL of an empty database")
	n := flag.Int("policies", 10000, "policies (one volume each)")
	projects := flag.Int("projects", 100, "projects the policies are spread over")
	rounds := flag.Int("rounds", 3, "minute boundaries to fire at")
	jitter := flag.Duration("jitter", 0, "each policy's jitter: 0 has every slot due at the same second; with it, the scheduler's own loop fires them as they come due, for -rounds minutes")
	zone := flag.String("zone", "", "every policy's time zone (an IANA name; default UTC)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the firings here")
	flag.Parse()
	ctx := context.Background()
	if *dsn == "" {
		dir, err := os.MkdirTemp("", "schedbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*dsn = filepath.Join(dir, "catalog.db")
	}
	cat, err := openCatalog(ctx, *dsn)
	if err != nil {
		return err
	}
	defer cat.Close()
	// Not started: no task runs (there is no engine); the bench marks
	// the backups done itself.
	svc := service.New(service.Config{Catalog: cat})

	setup := time.Now()
	var vols []string
	for p := range *projects {
		project := fmt.Sprintf("bench-%03d", p)
		if _, err := service.CreateProject(ctx, cat, project, project, cairn.Unlimited, time.Now()); err != nil {
			return err
		}
		per := *n / *projects
		err := cat.Update(ctx, func(tx catalog.Tx) error {
			now := time.Now().UTC()
			for i := range per {
				v := cairn.Volume{ID: cairn.NewUUID(), ProjectID: project, Name: fmt.Sprint("v", i), Size: 1,
					Status: cairn.StatusAvailable, CreatedAt: now, UpdatedAt: now}
				if err := tx.InsertVolume(ctx, v); err != nil {
					return err
				}
				vols = append(vols, v.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i := range per {
			c := service.Caller{ProjectID: project}
			_, err := svc.CreatePolicy(ctx, c, service.PolicyRequest{Name: fmt.Sprint("p", i), Spec: cairn.PolicySpec{
				Target: cairn.PolicyTarget{Kind: cairn.TargetVolume, IDs: []string{vols[len(vols)-per+i]}}, Schedule: "* * * * *", TimeZone: *zone,
				JitterSeconds: int(*jitter / time.Second), Retention: cairn.RetentionRules{Last: 2}}})
			if err != nil {
				return err
			}
		}
	}
	fmt.Printf("catalog %s: %d projects, %d volumes, %d policies on \"* * * * *\" in %s, jitter %s (set up in %.1f s)\n",
		kind(*dsn), *projects, len(vols), len(vols), cmp.Or(*zone, "UTC"), *jitter, time.Since(setup).Seconds())
	if *jitter > 0 {
		return spread(ctx, cat, svc, *rounds)
	}

	for round := 1; round <= *rounds; round++ {
		next := time.Now().Truncate(time.Minute).Add(time.Minute)
		time.Sleep(time.Until(next))
		if *profile != "" {
			f, err := os.Create(*profile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
		}
		start := time.Now()
		recorded, err := svc.FireDue(ctx)
		if *profile != "" {
			pprof.StopCPUProfile()
		}
		if err != nil {
			return err
		}
		took := time.Since(start)
		lags, queued, err := slotLags(ctx, cat, next)
		if err != nil {
			return err
		}
		report(fmt.Sprintf("round %d: slot %s, all due at once", round, next.Format("15:04")), recorded, took, lags)
		report("  their backups queued", len(queued), 0, queued)
		if err := finishBackups(ctx, cat); err != nil {
			return err
		}
	}
	return nil
}

func kind(dsn string) string {
	if strings.HasPrefix(dsn, "postgres") {
		return "PostgreSQL"
	}
	return "SQLite"
}

// spread runs the scheduler's own loop for rounds minutes while a
// stand-in for the task workers marks the queued backups done every few
// seconds, then reports how late every slot of those minutes fired
// after its fire time (its slot plus its policy's jitter).
func spread(ctx context.Context, cat catalog.Store, svc *service.Service, rounds int) error {
	from := time.Now()
	until := from.Truncate(time.Minute).Add(time.Duration(rounds+1) * time.Minute)
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.RunScheduler(loopCtx)
	}()
	for time.Now().Before(until) {
		time.Sleep(5 * time.Second)
		if err := finishBackups(ctx, cat); err != nil {
			stop()
			<-done
			return err
		}
	}
	stop()
	<-done
	var lags []time.Duration
	fired, missed := 0, 0
	err := cat.View(ctx, func(tx catalog.Tx) error {
		ps, err := tx.Policies(ctx, "")
		if err != nil {
			return err
		}
		for _, p := range ps {
			jitter := p.NextFireAt.Sub(p.NextSlotAt)
			sl, err := tx.PolicySlots(ctx, p.ID, 0)
			if err != nil {
				return err
			}
			for _, x := range sl {
				if x.SlotAt.Add(jitter).Before(from) {
					continue
				}
				if x.State != cairn.SlotFired {
					missed++
					continue
				}
				fired++
				lags = append(lags, x.FiredAt.Sub(x.SlotAt.Add(jitter)))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	report(fmt.Sprintf("%s to %s, the scheduler's loop", from.Format("15:04:05"), until.Format("15:04:05")), fired, 0, lags)
	if missed > 0 {
		fmt.Printf("  %d slots not fired (missed or skipped)\n", missed)
	}
	return nil
}

// report prints a round's lags.
func report(what string, recorded int, took time.Duration, lags []time.Duration) {
	slices.Sort(lags)
	pct := func(q float64) time.Duration { return lags[min(len(lags)-1, int(q*float64(len(lags))))] }
	within := 0
	for _, l := range lags {
		if l <= time.Second {
			within++
		}
	}
	fmt.Printf("%s: %d slots fired", what, recorded)
	if took > 0 {
		fmt.Printf(" in %.2f s", took.Seconds())
	}
	fmt.Printf("; lag p50 %.3f s, p99 %.3f s, max %.3f s; within 1 s: %d of %d\n",
		pct(0.5).Seconds(), pct(0.99).Seconds(), lags[len(lags)-1].Seconds(), within, len(lags))
}

// slotLags reads every policy's slot at slot: how late it was recorded
// (its fired_at), and how late its backup was queued (the backup's
// created_at).
func slotLags(ctx context.Context, cat catalog.Store, slot time.Time) (recorded, queued []time.Duration, err error) {
	err = cat.View(ctx, func(tx catalog.Tx) error {
		ps, err := tx.Policies(ctx, "")
		if err != nil {
			return err
		}
		for _, p := range ps {
			sl, err := tx.PolicySlots(ctx, p.ID, 1)
			if err != nil {
				return err
			}
			if len(sl) == 0 || !sl[0].SlotAt.Equal(slot) || sl[0].State != cairn.SlotFired || len(sl[0].Runs) != 1 {
				return fmt.Errorf("policy %s: no fired slot at %s: %+v", p.ID, slot, sl)
			}
			recorded = append(recorded, sl[0].FiredAt.Sub(sl[0].SlotAt))
			b, err := tx.Backup(ctx, sl[0].Runs[0].BackupID)
			if err != nil {
				return err
			}
			queued = append(queued, b.CreatedAt.Sub(sl[0].SlotAt))
		}
		return nil
	})
	return recorded, queued, err
}

// finishBackups marks every queued backup available and its volume
// available again, as finished tasks would.
func finishBackups(ctx context.Context, cat catalog.Store) error {
	return cat.Update(ctx, func(tx catalog.Tx) error {
		list, err := tx.Backups(ctx, catalog.Filter{Status: cairn.StatusCreating})
		if err != nil {
			return err
		}
		for _, b := range list {
			b.Status = cairn.StatusAvailable
			if err := tx.UpdateBackup(ctx, b); err != nil {
				return err
			}
			v, err := tx.Volume(ctx, b.VolumeID)
			if err != nil {
				return err
			}
			v.Status = cairn.StatusAvailable
			if err := tx.UpdateVolume(ctx, v); err != nil {
				return err
			}
		}
		tasks, err := tx.Tasks(ctx, catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending}})
		if err != nil {
			return err
		}
		for _, t := range tasks {
			t.State = cairn.TaskDone
			if err := tx.UpdateTask(ctx, t); err != nil {
				return err
			}
		}
		return nil
	})
}
