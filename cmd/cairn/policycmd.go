package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/client"
	"github.com/cairnproject/cairn/internal/wire"
)

// policyFlags are a policy's definition on the command line.
type policyFlags struct {
	volumes, instances []string
	tag                string
	instanceTag        string
	schedule, zone     string
	jitter             time.Duration
	fullEvery          int
	strategy           string
	container          string
	catchUp            string
	rules              cairn.RetentionRules
	pitrWindow         time.Duration
	disabled           bool
	action             string
	verifyShare        float64
	reverifyDays       int
	drillPick          string
	drillWithin        time.Duration
	drillQuery         string
	drillDatabase      string
}

func addPolicyFlags(fs *pflag.FlagSet, f *policyFlags) {
	fs.StringSliceVar(&f.volumes, "volume", nil, "a volume to back up (ID or name; repeat or comma-separate)")
	fs.StringSliceVar(&f.instances, "instance", nil, "a database instance to back up (ID; repeat or comma-separate)")
	fs.StringVar(&f.tag, "tag", "", "back up every volume whose metadata holds key=value when a slot fires")
	fs.StringVar(&f.instanceTag, "instance-tag", "", "back up every database instance whose metadata holds key=value when a slot fires (trove metadata-create)")
	fs.StringVar(&f.schedule, "schedule", "", `five cron fields, e.g. "30 2 * * *", or @hourly, @daily, ...`)
	fs.StringVar(&f.zone, "time-zone", "", "the IANA zone the schedule and retention periods are read in (default UTC)")
	fs.DurationVar(&f.jitter, "jitter", 0, "delay every slot by a fixed share of this, chosen by the policy (whole seconds)")
	fs.IntVar(&f.fullEvery, "full-every", 0, "every Nth backup of a target is full (default 7; 1: all full)")
	fs.StringVar(&f.strategy, "strategy", "", "an instance's backup strategy: snapshot, physical or logical (default: its own)")
	fs.StringVar(&f.container, "container", "", "the container backups go to")
	fs.StringVar(&f.catchUp, "catch-up", "", "slots missed while no service ran: once (fire the latest, the default) or skip")
	fs.IntVar(&f.rules.Last, "keep-last", 0, "keep the N newest backups")
	fs.IntVar(&f.rules.Hourly, "keep-hourly", 0, "keep the newest backup of each of the N newest hours that have one")
	fs.IntVar(&f.rules.Daily, "keep-daily", 0, "... of each of the N newest days")
	fs.IntVar(&f.rules.Weekly, "keep-weekly", 0, "... of each of the N newest ISO weeks")
	fs.IntVar(&f.rules.Monthly, "keep-monthly", 0, "... of each of the N newest months")
	fs.IntVar(&f.rules.Yearly, "keep-yearly", 0, "... of each of the N newest years")
	fs.StringVar(&f.rules.Within, "keep-within", "", "keep every backup at most this much older than the newest (e.g. 72h)")
	fs.DurationVar(&f.pitrWindow, "pitr-window", 0, "for instances: keep what restoring to any second of this window needs")
	fs.BoolVar(&f.disabled, "disabled", false, "create the policy disabled")
	fs.StringVar(&f.action, "action", "", "what each slot does: backup (the default), verify (read the targets' backups back) or drill (restore one and check it)")
	fs.Float64Var(&f.verifyShare, "verify-share", 0, "verify: the share of each backup's chunks read, 0 to 1 (0: all)")
	fs.IntVar(&f.reverifyDays, "reverify-days", 0, "verify: verify a backup again once its last passed verification is this many days old (0: never)")
	fs.StringVar(&f.drillPick, "drill-pick", "", "drill: the backup restored, latest (the default) or random")
	fs.DurationVar(&f.drillWithin, "drill-within", 0, "drill, random: among the backups taken this long before the slot")
	fs.StringVar(&f.drillQuery, "drill-query", "", "drill of instances: a query run read-only on the restored instance after pg_amcheck or mariadb-check; it must return a row")
	fs.StringVar(&f.drillDatabase, "drill-database", "", "drill of instances: the database --drill-query runs in")
}

// resolveVolumes makes the --volume values IDs: each may be a volume's
// ID, unique ID prefix or name, as elsewhere in the CLI.
func (f *policyFlags) resolveVolumes(ctx context.Context, cl *client.Client) error {
	for i, ref := range f.volumes {
		v, err := volumeRef(ctx, cl, ref)
		if err != nil {
			return err
		}
		f.volumes[i] = v.ID
	}
	return nil
}

// apply writes the flags the command line set into b.
func (f *policyFlags) apply(fs *pflag.FlagSet, b *wire.PolicyBody) error {
	set := fs.Changed
	switch {
	case (set("volume") || set("tag")) && (set("instance") || set("instance-tag")):
		return usageError{fmt.Errorf("a policy backs up volumes (--volume, --tag) or instances (--instance, --instance-tag), not both")}
	case set("volume") || set("tag"):
		b.Target.Kind = cairn.TargetVolume
		if set("volume") {
			b.Target.IDs = f.volumes
		}
		if set("tag") {
			b.Target.Tag = f.tag
		}
	case set("instance") || set("instance-tag"):
		b.Target = cairn.PolicyTarget{Kind: cairn.TargetInstance, IDs: f.instances, Tag: f.instanceTag}
	}
	enabled := !f.disabled
	// Each flag given replaces the field it names.
	fields := map[string]func(){
		"schedule":       func() { b.Schedule = f.schedule },
		"time-zone":      func() { b.TimeZone = f.zone },
		"jitter":         func() { b.JitterSeconds = int(f.jitter / time.Second) },
		"full-every":     func() { b.FullEvery = f.fullEvery },
		"strategy":       func() { b.Strategy = f.strategy },
		"container":      func() { b.Container = f.container },
		"catch-up":       func() { b.CatchUp = f.catchUp },
		"keep-last":      func() { b.Retention.Last = f.rules.Last },
		"keep-hourly":    func() { b.Retention.Hourly = f.rules.Hourly },
		"keep-daily":     func() { b.Retention.Daily = f.rules.Daily },
		"keep-weekly":    func() { b.Retention.Weekly = f.rules.Weekly },
		"keep-monthly":   func() { b.Retention.Monthly = f.rules.Monthly },
		"keep-yearly":    func() { b.Retention.Yearly = f.rules.Yearly },
		"keep-within":    func() { b.Retention.Within = f.rules.Within },
		"pitr-window":    func() { b.PITRWindowSeconds = int(f.pitrWindow / time.Second) },
		"disabled":       func() { b.Enabled = &enabled },
		"action":         func() { b.Action = f.action },
		"verify-share":   func() { b.VerifyShare = f.verifyShare },
		"reverify-days":  func() { b.ReverifyDays = f.reverifyDays },
		"drill-pick":     func() { b.DrillPick = f.drillPick },
		"drill-within":   func() { b.DrillWithinSeconds = int(f.drillWithin / time.Second) },
		"drill-query":    func() { b.DrillQuery = f.drillQuery },
		"drill-database": func() { b.DrillDatabase = f.drillDatabase },
	}
	fs.Visit(func(fl *pflag.Flag) {
		if apply, ok := fields[fl.Name]; ok {
			apply()
		}
	})
	return nil
}

func (a *app) policyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Backup policies: schedules that back up volumes and instances, and the rules that keep their backups"}
	create := &cobra.Command{
		Use:   "create NAME --schedule CRON (--volume ID... | --tag KEY=VALUE | --instance ID...) [--keep-...]",
		Short: "Create a backup policy",
		Long: `Create a backup policy: each slot of the schedule backs up the policy's
targets (full every --full-every backups, incremental otherwise), once, and
then its retention rules remove the backups of the policy that no rule keeps.

The rules are restic's independent buckets counted in the policy's time zone;
the newest backup of a target is always kept, and a policy without rules keeps
everything. keep-within counts back from the newest backup, never from now.`,
		Args: exactArgs(1),
	}
	a.apiOnly(create, func(cmd *cobra.Command) apiRun {
		var f policyFlags
		addPolicyFlags(cmd.Flags(), &f)
		return func(ctx context.Context, cl *client.Client, args []string) error {
			b := wire.PolicyBody{Name: args[0]}
			if err := f.resolveVolumes(ctx, cl); err != nil {
				return err
			}
			if err := f.apply(cmd.Flags(), &b); err != nil {
				return err
			}
			p, err := cl.CreatePolicy(ctx, b)
			if err != nil {
				return err
			}
			return a.showPolicy(p)
		}
	})
	update := &cobra.Command{
		Use:   "update POLICY [--name NAME] [flags of create]",
		Short: "Change a policy: the flags given replace what they name",
		Args:  exactArgs(1),
	}
	a.apiOnly(update, func(cmd *cobra.Command) apiRun {
		var f policyFlags
		var name string
		var enable bool
		addPolicyFlags(cmd.Flags(), &f)
		cmd.Flags().StringVar(&name, "name", "", "a new name")
		cmd.Flags().BoolVar(&enable, "enable", false, "enable the policy: its next slot is the schedule's next from now")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			p, err := cl.PolicyRef(ctx, args[0])
			if err != nil {
				return err
			}
			if err := f.resolveVolumes(ctx, cl); err != nil {
				return err
			}
			b := wire.PolicyBody{Name: p.Name, PolicySpec: p.PolicySpec}
			if cmd.Flags().Changed("name") {
				b.Name = name
			}
			if err := f.apply(cmd.Flags(), &b); err != nil {
				return err
			}
			if cmd.Flags().Changed("enable") {
				b.Enabled = &enable
			}
			if p, err = cl.UpdatePolicy(ctx, p.ID, b); err != nil {
				return err
			}
			return a.showPolicy(p)
		}
	})
	list := &cobra.Command{Use: "list [--all-projects]", Short: "List backup policies", Args: exactArgs(0)}
	a.apiOnly(list, func(cmd *cobra.Command) apiRun {
		var all bool
		cmd.Flags().BoolVar(&all, "all-projects", false, "every project's (admin)")
		return func(ctx context.Context, cl *client.Client, _ []string) error {
			list, err := cl.ListPolicies(ctx, all)
			if err != nil {
				return err
			}
			if a.json {
				if list == nil {
					list = []cairn.Policy{}
				}
				return a.printJSON(list)
			}
			rows := make([][]string, 0, len(list))
			for _, p := range list {
				next := "-"
				if p.Enabled {
					next = when(p.NextFireAt)
				}
				rows = append(rows, []string{p.ID, p.Name, yesNo(p.Enabled), p.Schedule, p.TimeZone, targetText(p.Target), next})
			}
			table(a.stdout, []string{"ID", "NAME", "ENABLED", "SCHEDULE", "ZONE", "TARGETS", "NEXT"}, rows)
			return nil
		}
	})
	show := &cobra.Command{Use: "show POLICY", Short: "Show a backup policy", Args: exactArgs(1)}
	a.apiOnly(show, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, args []string) error {
			p, err := cl.PolicyRef(ctx, args[0])
			if err != nil {
				return err
			}
			return a.showPolicy(p)
		}
	})
	del := &cobra.Command{Use: "delete POLICY...", Short: "Delete backup policies (their backups stay)", Args: minArgs(1)}
	a.apiOnly(del, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, args []string) error {
			var out []deleted
			for _, ref := range args {
				p, err := cl.PolicyRef(ctx, ref)
				if err != nil {
					return err
				}
				if err := cl.DeletePolicy(ctx, p.ID); err != nil {
					return err
				}
				out = append(out, deleted{ID: p.ID, Status: client.Gone})
				if !a.json {
					fmt.Fprintf(a.stdout, "deleted policy %s (%s)\n", p.Name, p.ID)
				}
			}
			if a.json {
				return a.printJSON(out)
			}
			return nil
		}
	})
	slots := &cobra.Command{Use: "slots POLICY [--limit N]", Short: "A policy's slots, newest first: fired, skipped or missed", Args: exactArgs(1)}
	a.apiOnly(slots, func(cmd *cobra.Command) apiRun {
		var limit int
		cmd.Flags().IntVar(&limit, "limit", 20, "at most this many")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			p, err := cl.PolicyRef(ctx, args[0])
			if err != nil {
				return err
			}
			list, err := cl.PolicySlots(ctx, p.ID, limit)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(list)
			}
			rows := make([][]string, 0, len(list))
			for _, sl := range list {
				var runs []string
				for _, r := range sl.Runs {
					switch {
					case r.BackupID != "" && r.Full:
						runs = append(runs, r.TargetID+": full "+r.BackupID)
					case r.BackupID != "":
						runs = append(runs, r.TargetID+": incremental "+r.BackupID)
					default:
						runs = append(runs, r.TargetID+": skipped, "+r.Skipped)
					}
				}
				state := sl.State
				if sl.Late {
					state += " (late)"
				}
				rows = append(rows, []string{when(sl.SlotAt), state, strings.Join(append(runs, sl.Detail), "; ")})
			}
			table(a.stdout, []string{"SLOT", "STATE", "DETAIL"}, rows)
			return nil
		}
	})
	prune := &cobra.Command{
		Use:   "prune POLICY [--dry-run]",
		Short: "Apply a policy's retention now; --dry-run says what it would remove and why",
		Args:  exactArgs(1),
	}
	a.apiOnly(prune, func(cmd *cobra.Command) apiRun {
		var dry bool
		cmd.Flags().BoolVar(&dry, "dry-run", false, "decide and print, remove nothing")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			p, err := cl.PolicyRef(ctx, args[0])
			if err != nil {
				return err
			}
			rep, err := cl.ApplyRetention(ctx, p.ID, dry)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rep)
			}
			var rows [][]string
			for _, t := range rep.Targets {
				for _, d := range t.Backups {
					rows = append(rows, []string{t.TargetID, d.BackupID, when(d.Time), d.Action, strings.Join(d.Reasons, ", ")})
				}
			}
			table(a.stdout, []string{"TARGET", "BACKUP", "TIME", "ACTION", "WHY"}, rows)
			verb := "removing"
			if dry {
				verb = "would remove"
			}
			fmt.Fprintf(a.stdout, "keeping %d, %s %d, %d deferred\n", rep.Kept, verb, rep.Removed, rep.Deferred)
			return nil
		}
	})
	cmd.AddCommand(create, update, list, show, del, slots, prune)
	return cmd
}

func targetText(t cairn.PolicyTarget) string {
	parts := slices.Clone(t.IDs)
	if t.Tag != "" {
		parts = append(parts, "tag "+t.Tag)
	}
	return t.Kind + ": " + strings.Join(parts, ", ")
}

func (a *app) showPolicy(p cairn.Policy) error {
	if a.json {
		return a.printJSON(p)
	}
	r := p.Retention
	rows := [][]string{
		{"id", p.ID}, {"name", p.Name}, {"action", p.Action}, {"enabled", yesNo(p.Enabled)},
		{"schedule", p.Schedule + " (" + p.TimeZone + ")"},
		{"targets", targetText(p.Target)},
		{"full every", fmt.Sprint(p.FullEvery)},
		{"catch up", p.CatchUp},
		{"retention", fmt.Sprintf("last %d, hourly %d, daily %d, weekly %d, monthly %d, yearly %d, within %q",
			r.Last, r.Hourly, r.Daily, r.Weekly, r.Monthly, r.Yearly, r.Within)},
	}
	if p.JitterSeconds > 0 {
		rows = append(rows, []string{"jitter", (time.Duration(p.JitterSeconds) * time.Second).String()})
	}
	if p.Container != "" {
		rows = append(rows, []string{"container", p.Container})
	}
	if p.Strategy != "" {
		rows = append(rows, []string{"strategy", p.Strategy})
	}
	if p.PITRWindowSeconds > 0 {
		rows = append(rows, []string{"pitr window", (time.Duration(p.PITRWindowSeconds) * time.Second).String()})
	}
	if p.Enabled {
		rows = append(rows, []string{"next slot", when(p.NextSlotAt)}, []string{"fires at", when(p.NextFireAt)})
	}
	table(a.stdout, []string{"FIELD", "VALUE"}, rows)
	return nil
}
