package main

// The commands that talk to the service's API (cairn volume in API mode,
// cairn snapshot, cairn backup, cairn limits) and those that administer
// its projects and tokens on the host (cairn project, cairn token).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/client"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// apiModel explains, in every API command's help, how the CLI finds the
// API.
const apiModel = `The API is found, in order: --url, --token and --project; CAIRN_URL,
CAIRN_TOKEN and CAIRN_PROJECT; the client config file (CAIRN_CLIENT_CONFIG,
default ~/.config/cairn/client.yaml; keys url, token, project). When
neither a URL nor a token is given that way and a cairn serve runs on the
data directory (--data-dir, CAIRN_DATA_DIR, default ~/.local/share/cairn),
its URL (DATA_DIR/service.json) and admin token (DATA_DIR/admin-token) are
used. When no data directory is named and none runs on the default one,
the one cairn serve this user runs elsewhere is used (each registers in
$XDG_RUNTIME_DIR/cairn, else ~/.cache/cairn/services); when several run,
name one with --url or --data-dir. The project is the token's unless
--project names another (admins).`

// volumeModel explains the two ways cairn volume works.
const volumeModel = `cairn volume works in one of two ways:

  With the API: when an API is configured (--url, --token, CAIRN_URL,
  CAIRN_TOKEN, or the client config file) or a cairn serve runs on the
  data directory, create, list, show, update, delete, extend, attach,
  detach and reset-status act on the project's volumes through the API
  (sizes in GiB, long operations followed with --wait). Snapshots and
  backups are then 'cairn snapshot' and 'cairn backup'.

  Directly: otherwise they act on the data directory themselves (or
  through the control socket of a 'cairn volume serve' running on it).

revert, clone, changed-extents, allocated, serve and 'volume snapshot'
only work directly: they refuse while a cairn serve owns the data
directory.

` + apiModel

// connFlags are the connection flags of an API command.
type connFlags struct {
	url, token, project string
}

func addConnFlags(f *pflag.FlagSet, c *connFlags) {
	f.StringVar(&c.url, "url", "", "the API's URL, e.g. http://127.0.0.1:8776 (env CAIRN_URL)")
	f.StringVar(&c.token, "token", "", "API token (env CAIRN_TOKEN)")
	f.StringVar(&c.project, "project", "", "act in this project (env CAIRN_PROJECT; default: the token's)")
}

// clientConfig is the client config file.
type clientConfig struct {
	URL     string `yaml:"url"`
	Token   string `yaml:"token"`
	Project string `yaml:"project"`
}

// readClientConfig reads $CAIRN_CLIENT_CONFIG, which must exist when set,
// or else the default file if it exists.
func (a *app) readClientConfig() (clientConfig, error) {
	var cfg clientConfig
	path := a.getenv("CAIRN_CLIENT_CONFIG")
	explicit := path != ""
	if !explicit {
		dir := a.getenv("XDG_CONFIG_HOME")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return cfg, nil
			}
			dir = filepath.Join(home, ".config")
		}
		path = filepath.Join(dir, "cairn", "client.yaml")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("client config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, usageError{fmt.Errorf("client config %s: %w", path, err)}
	}
	return cfg, nil
}

// localService returns what the service file of dir says when the cairn
// serve it names is alive, nil otherwise.
func localService(dir string) *serviceInfo {
	data, err := os.ReadFile(filepath.Join(dir, serviceFile))
	if err != nil {
		return nil
	}
	var info serviceInfo
	if json.Unmarshal(data, &info) != nil || info.PID <= 0 || info.URL == "" {
		return nil
	}
	if err := syscall.Kill(info.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return nil // a stale file: the process is gone
	}
	return &info
}

// servedError is the refusal of a direct-only command on a data
// directory a cairn serve owns.
func servedError(dir string, info *serviceInfo) error {
	return fmt.Errorf("data directory %s belongs to cairn serve (pid %d at %s); its volumes are managed through the API: "+
		"use cairn volume create|list|show|update|delete|extend|attach|detach|reset-status, cairn snapshot and cairn backup "+
		"(this command works only on a data directory no cairn serve owns): %w", dir, info.PID, info.URL, cairn.ErrConflict)
}

// directHint says why no API is in use, for messages.
func (a *app) directHint() string {
	dir, err := a.dataDir()
	if err != nil {
		return "no --url or CAIRN_URL is given"
	}
	return fmt.Sprintf("no cairn serve runs on data directory %s and no --url or CAIRN_URL is given", dir)
}

// connect returns a client of the API the flags, the environment, the
// client config file or a local cairn serve name; nil (and no error) when
// there is none: the volume commands then work directly.
func (a *app) connect(cf *connFlags) (*client.Client, error) {
	cfg, err := a.readClientConfig()
	if err != nil {
		return nil, err
	}
	u := firstNonEmpty(cf.url, a.getenv("CAIRN_URL"), cfg.URL)
	token := firstNonEmpty(cf.token, a.getenv("CAIRN_TOKEN"), cfg.Token)
	project := firstNonEmpty(cf.project, a.getenv("CAIRN_PROJECT"), cfg.Project)
	if u == "" {
		var info *serviceInfo
		dir, err := a.dataDir()
		if err == nil {
			info = localService(dir)
		}
		if info == nil && !a.dataDirChosen() {
			// Not on the default data directory: a cairn serve elsewhere.
			e, err := a.findRegistered()
			if err != nil {
				return nil, err
			}
			if e != nil {
				info, dir = &serviceInfo{PID: e.PID, URL: e.URL}, e.DataDir
			}
		}
		if info == nil {
			if token != "" {
				return nil, usageError{fmt.Errorf("a token is given but no API URL: give --url or CAIRN_URL (%s)", a.directHint())}
			}
			return nil, nil
		}
		u = info.URL
		if token == "" {
			data, err := os.ReadFile(filepath.Join(dir, adminTokenFile))
			if err != nil {
				return nil, fmt.Errorf("cairn serve (pid %d) runs on data directory %s, but its admin token cannot be read (%w); give --token or CAIRN_TOKEN", info.PID, dir, err)
			}
			token = strings.TrimSpace(string(data))
		}
	} else if token == "" {
		return nil, usageError{fmt.Errorf("no token for the API at %s: give --token or CAIRN_TOKEN (or token: in the client config file)", u)}
	}
	if _, err := url.ParseRequestURI(u); err != nil || !strings.HasPrefix(u, "http") {
		return nil, usageError{fmt.Errorf("API URL %q: want http://HOST:PORT or https://HOST:PORT", u)}
	}
	cl := client.New(u, token, &http.Client{Timeout: 2 * time.Minute})
	cl.SetProject(project)
	return cl, nil
}

// apiRun is a command's work through the API.
type apiRun func(ctx context.Context, cl *client.Client, args []string) error

// dual makes a direct volume command dispatch by mode: through the API
// when one is in use (run, set up by setup, which adds the API's flags),
// directly otherwise. short describes both; use and apiHelp the API form.
func (a *app) dual(cmd *cobra.Command, use, short, apiHelp string, setup func(cmd *cobra.Command) apiRun) {
	direct := map[string]bool{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) { direct[f.Name] = true })
	cf := &connFlags{}
	addConnFlags(cmd.Flags(), cf)
	run := setup(cmd)
	var apiOnly []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !direct[f.Name] && f.Name != "url" && f.Name != "token" {
			apiOnly = append(apiOnly, f.Name)
		}
	})
	directLong := cmd.Long
	if directLong == "" {
		directLong = cmd.Short + "."
	}
	directUse := cmd.Use
	cmd.Use, cmd.Short = use, short
	cmd.Long = fmt.Sprintf("With the API:\n\n  cairn volume %s\n\n%s\n\nDirectly, on the data directory:\n\n  cairn volume %s\n\n%s\n\nSee 'cairn volume --help' for how the API is found.",
		use, indent(apiHelp), directUse, indent(directLong))
	directArgs, directRun := cmd.Args, cmd.RunE
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := a.connect(cf)
		if err != nil {
			return err
		}
		if cl == nil {
			for _, n := range apiOnly {
				if cmd.Flags().Changed(n) {
					return usageError{fmt.Errorf("--%s needs the API, and none is in use (%s)", n, a.directHint())}
				}
			}
			if directArgs != nil {
				if err := directArgs(cmd, args); err != nil {
					return err
				}
			}
			return directRun(cmd, args)
		}
		return run(cmd.Context(), cl, args)
	}
}

// dispatchVolume makes the subcommands of cairn volume follow the model
// (volumeModel): those the API has too dispatch by mode, the others are
// direct-only; and it adds the API-only ones.
func (a *app) dispatchVolume(volume *cobra.Command) {
	type apiForm struct {
		use, short, help string
		setup            func(cmd *cobra.Command) apiRun
	}
	forms := map[string]apiForm{
		"create": {"create [NAME] --size GiB [--name NAME] [--description TEXT] [--snapshot-id S | --backup-id B] [--wait]",
			"Create a volume",
			`Create a volume of --size GiB, empty, from a snapshot (--snapshot-id) or
restored from a backup (--backup-id; the size defaults to the source's).
Prints it in status creating (restoring-backup), or with --wait once it
is available.`, a.apiVolumeCreate},
		"list": {"list [--name N] [--status S] [--sort KEY[:DIR]] [--limit N] [--all-projects]", "List volumes",
			"List the project's volumes.", a.apiVolumeList},
		"show": {"show VOLUME", "Show a volume", "Show a volume (by ID or unique name).", a.apiVolumeShow},
		"delete": {"delete VOLUME... [--wait]", "Delete volumes",
			"Delete volumes (available or failed, without snapshots); --wait until they are gone.", a.apiVolumeDelete},
		"extend": {"extend VOLUME --size GiB [--wait]", "Grow a volume", "Grow an available volume to --size GiB.", a.apiVolumeExtend},
		"attach": {"attach VOLUME", "Attach a volume: export it over NBD (API) or give it a local block device (directly)",
			`Export an available volume over NBD (status in-use) and print the NBD
URIs clients connect to (nbd+unix:///ID?socket=..., nbd://HOST:PORT/ID).
A volume attached already is left as it is: its URIs are printed, and
stderr says it was attached before ("already_attached": true with --json).
'cairn volume show' prints them too.`, a.apiVolumeAttach},
		"detach": {"detach VOLUME", "Detach a volume: stop its NBD export (API) or remove its local block device (directly)",
			"Stop exporting a volume (status available).", a.apiVolumeDetach},
	}
	for _, c := range volume.Commands() {
		if f, ok := forms[c.Name()]; ok {
			a.dual(c, f.use, f.short, f.help, f.setup)
		} else {
			directOnly(c)
		}
	}
	volume.AddCommand(a.volumeUpdateCommand(), a.resetStatusCommand(client.Volume, "any the block storage API allows: available, in-use, error, creating, maintenance, ..."))
}

// directOnly notes in the help of a direct-only volume command (and of
// its subcommands) that it never uses the API.
func directOnly(cmd *cobra.Command) {
	if cmd.Runnable() {
		if cmd.Long == "" {
			cmd.Long = cmd.Short + "."
		}
		cmd.Long += "\n\nThis command works directly on the data directory, never through the API: it refuses\n" +
			"while a cairn serve owns the directory (see 'cairn volume --help')."
	}
	for _, c := range cmd.Commands() {
		directOnly(c)
	}
}

// apiOnly makes cmd an API command: it fails when no API is in use.
func (a *app) apiOnly(cmd *cobra.Command, setup func(cmd *cobra.Command) apiRun) *cobra.Command {
	cf := &connFlags{}
	addConnFlags(cmd.Flags(), cf)
	run := setup(cmd)
	if cmd.Long == "" {
		cmd.Long = cmd.Short + "."
	}
	cmd.Long += "\n\n" + apiModel
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := a.connect(cf)
		if err != nil {
			return err
		}
		if cl == nil {
			return usageError{fmt.Errorf("cairn %s works through the API, and none is in use (%s): start cairn serve, or give --url and --token",
				strings.TrimPrefix(cmd.CommandPath(), "cairn "), a.directHint())}
		}
		return run(cmd.Context(), cl, args)
	}
	return cmd
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ")
}

// argCount checks an API form's number of arguments.
func argCount(args []string, lo, hi int, what string) error {
	if len(args) < lo || (hi >= 0 && len(args) > hi) {
		return usageError{fmt.Errorf("want %s, got %d arguments", what, len(args))}
	}
	return nil
}

// apiSize parses a size in GiB: "10" or "10G"/"10GiB" (a whole number of GiB).
func apiSize(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		b, perr := parseSize(s)
		if perr != nil || b%(1<<30) != 0 {
			return 0, usageError{fmt.Errorf("--size %q: give a whole number of GiB, such as 10", s)}
		}
		n = b >> 30
	}
	if n <= 0 {
		return 0, usageError{fmt.Errorf("--size %q: give a positive number of GiB, such as 10", s)}
	}
	return n, nil
}

// Output.

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func gib(n int64) string { return fmt.Sprintf("%d GiB", n) }

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// keyValues prints aligned "key: value" lines.
func keyValues(w io.Writer, kv [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	tw.Flush()
}

func (a *app) printAPIVolumes(list []wire.Volume, project bool) error {
	if a.json {
		if list == nil {
			list = []wire.Volume{}
		}
		return a.printJSON(list)
	}
	header := []string{"ID", "NAME", "STATUS", "SIZE", "ATTACHED", "CREATED"}
	if project {
		header = append(header, "PROJECT")
	}
	rows := make([][]string, 0, len(list))
	for _, v := range list {
		r := []string{v.ID, v.Name, v.Status, gib(v.Size), yesNo(len(v.Attachments) > 0), when(v.CreatedAt)}
		if project {
			r = append(r, v.ProjectID)
		}
		rows = append(rows, r)
	}
	table(a.stdout, header, rows)
	return nil
}

func (a *app) showAPIVolume(v wire.Volume) error {
	if a.json {
		return a.printJSON(v)
	}
	kv := [][2]string{{"id", v.ID}, {"name", v.Name}, {"description", v.Description}, {"status", v.Status}}
	if v.FailReason != nil && *v.FailReason != "" {
		kv = append(kv, [2]string{"fail reason", *v.FailReason})
	}
	kv = append(kv, [][2]string{{"size", gib(v.Size)}, {"attached", yesNo(len(v.Attachments) > 0)}}...)
	for _, att := range v.Attachments {
		for _, u := range att.URIs() {
			kv = append(kv, [2]string{"nbd", u})
		}
	}
	kv = append(kv, [][2]string{{"snapshot", orDash(v.SnapshotID)}, {"backup", orDash(v.BackupID)},
		{"project", v.ProjectID}, {"created", when(v.CreatedAt)}, {"updated", when(v.UpdatedAt)}}...)
	keyValues(a.stdout, kv)
	return nil
}

func (a *app) printAPISnapshots(list []wire.Snapshot, project bool) error {
	if a.json {
		if list == nil {
			list = []wire.Snapshot{}
		}
		return a.printJSON(list)
	}
	header := []string{"ID", "NAME", "VOLUME", "STATUS", "SIZE", "CREATED"}
	if project {
		header = append(header, "PROJECT")
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		r := []string{s.ID, s.Name, s.VolumeID, s.Status, gib(s.Size), when(s.CreatedAt)}
		if project {
			r = append(r, s.ProjectID)
		}
		rows = append(rows, r)
	}
	table(a.stdout, header, rows)
	return nil
}

func (a *app) showAPISnapshot(s wire.Snapshot) error {
	if a.json {
		return a.printJSON(s)
	}
	kv := [][2]string{{"id", s.ID}, {"name", s.Name}, {"description", s.Description}, {"volume", s.VolumeID}, {"status", s.Status}}
	if s.FailReason != nil && *s.FailReason != "" {
		kv = append(kv, [2]string{"fail reason", *s.FailReason})
	}
	kv = append(kv, [][2]string{{"size", gib(s.Size)}, {"project", s.ProjectID},
		{"created", when(s.CreatedAt)}, {"updated", when(s.UpdatedAt)}}...)
	keyValues(a.stdout, kv)
	return nil
}

func (a *app) printAPIBackups(list []wire.Backup, project bool) error {
	if a.json {
		if list == nil {
			list = []wire.Backup{}
		}
		return a.printJSON(list)
	}
	header := []string{"ID", "NAME", "VOLUME", "STATUS", "SIZE", "INCREMENTAL", "CONTAINER", "CREATED"}
	if project {
		header = append(header, "PROJECT")
	}
	rows := make([][]string, 0, len(list))
	for _, b := range list {
		r := []string{b.ID, b.Name, b.VolumeID, b.Status, gib(b.Size), yesNo(b.IsIncremental), b.Container, when(b.CreatedAt)}
		if project {
			r = append(r, b.ProjectID)
		}
		rows = append(rows, r)
	}
	table(a.stdout, header, rows)
	return nil
}

func (a *app) showAPIBackup(b wire.Backup) error {
	if a.json {
		return a.printJSON(b)
	}
	kv := [][2]string{{"id", b.ID}, {"name", b.Name}, {"description", b.Description}, {"volume", b.VolumeID},
		{"snapshot", orDash(b.SnapshotID)}, {"status", b.Status}}
	if b.FailReason != nil && *b.FailReason != "" {
		kv = append(kv, [2]string{"fail reason", *b.FailReason})
	}
	kv = append(kv, [][2]string{{"size", gib(b.Size)}, {"container", b.Container},
		{"incremental", yesNo(b.IsIncremental)}, {"parent", orDash(b.ParentID)},
		{"has dependents", yesNo(b.HasDependentBackups)}, {"objects", strconv.FormatInt(b.ObjectCount, 10)},
		{"stored", formatBytes(deref64(b.StoredBytes))}, {"data timestamp", when(b.DataTimestamp)},
		{"project", b.ProjectID}, {"created", when(b.CreatedAt)}, {"updated", when(b.UpdatedAt)}}...)
	if b.Protected != nil {
		kv = append(kv, [2]string{"protected", yesNo(*b.Protected)})
	}
	for _, c := range []struct {
		name  string
		check *cairn.BackupCheck
	}{{"verified", b.Verification}, {"drilled", b.Drill}} {
		if c.check != nil {
			kv = append(kv, [2]string{c.name, fmt.Sprintf("%s at %s: %s", c.check.State, when(c.check.At), c.check.Detail)})
		}
	}
	keyValues(a.stdout, kv)
	return nil
}

// deleted is the --json output of the delete commands.
type deleted struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (a *app) printDeleted(kind client.Kind, list []deleted) error {
	if a.json {
		if list == nil {
			list = []deleted{}
		}
		return a.printJSON(list)
	}
	for _, d := range list {
		if d.Status == client.Gone {
			fmt.Fprintf(a.stdout, "deleted %s %s\n", kind, d.ID)
		} else {
			fmt.Fprintf(a.stdout, "deleting %s %s (status %s)\n", kind, d.ID, d.Status)
		}
	}
	return nil
}

// Waiting.

// onTerminal reports whether progress bars may be drawn.
func (a *app) onTerminal() bool {
	f, ok := a.stderr.(*os.File)
	return !a.json && ok && term.IsTerminal(int(f.Fd()))
}

// waitBar draws the progress of a task a wait follows, on a terminal.
// Unlike showProgress, its total is learnt on the way: it comes with the
// first progress report.
func (a *app) waitBar(title string) (update func(done, total int64), finish func(ok bool)) {
	f, _ := a.stderr.(*os.File)
	container := mpb.New(mpb.WithOutput(f), mpb.WithWidth(32), mpb.WithRefreshRate(200*time.Millisecond))
	var mu sync.Mutex
	var done, total int64
	bar := container.AddBar(0, // a total learnt later
		mpb.PrependDecorators(decor.Name(title+" "), decor.Percentage(decor.WCSyncSpace)),
		mpb.AppendDecorators(
			decor.Any(func(decor.Statistics) string {
				mu.Lock()
				defer mu.Unlock()
				return fmt.Sprintf("%s of %s", formatBytes(done), formatBytes(total))
			}),
			decor.Name("  "),
			decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
			decor.Name("  ETA "),
			decor.AverageETA(decor.ET_STYLE_GO),
		),
	)
	update = func(d, t int64) {
		mu.Lock()
		done, total = min(d, t), t
		mu.Unlock()
		bar.SetTotal(t, false)
		bar.SetCurrent(min(d, t))
	}
	finish = func(ok bool) {
		if ok {
			mu.Lock()
			t := max(total, 1)
			done, total = t, t
			mu.Unlock()
			bar.SetTotal(t, false)
			bar.SetCurrent(t)
			bar.SetTotal(-1, true)
		} else {
			bar.Abort(false)
		}
		container.Wait()
	}
	return update, finish
}

// wait follows a resource to the end of its operation: a progress bar
// on a terminal, a line per step of 10% otherwise (none with --json).
func (a *app) wait(ctx context.Context, cl *client.Client, kind client.Kind, id string) (string, error) {
	if a.onTerminal() {
		update, finish := a.waitBar(fmt.Sprintf("%s %.8s", kind, id))
		st, err := cl.Wait(ctx, kind, id, update)
		finish(err == nil)
		return st, err
	}
	if a.json {
		return cl.Wait(ctx, kind, id, nil)
	}
	fmt.Fprintf(a.stderr, "waiting for %s %s\n", kind, id)
	step := int64(-1)
	st, err := cl.Wait(ctx, kind, id, func(done, total int64) {
		if pct := done * 10 / max(total, 1) * 10; pct != step {
			step = pct
			fmt.Fprintf(a.stderr, "%s %s: %d%% (%s of %s)\n", kind, id, pct, formatBytes(done), formatBytes(total))
		}
	})
	if st != "" {
		fmt.Fprintf(a.stderr, "%s %s: %s\n", kind, id, st)
	}
	return st, err
}

// Resolving names.

// resolve finds a resource by ID or, failing that, by its unique name.
func resolve[T any](ctx context.Context, kind, ref string, get func(context.Context, string) (T, error),
	list func(context.Context, bool, url.Values) ([]T, []wire.Link, error)) (T, error) {
	v, err := get(ctx, ref)
	if err == nil || !errors.Is(err, cairn.ErrNotFound) {
		return v, err
	}
	found, _, lerr := list(ctx, true, url.Values{"name": {ref}, "limit": {"2"}})
	switch {
	case lerr != nil || len(found) == 0:
		return v, err
	case len(found) > 1:
		return v, fmt.Errorf("%s name %q: more than one %s has it; give the ID: %w", kind, ref, kind, cairn.ErrInvalid)
	}
	return found[0], nil
}

func volumeRef(ctx context.Context, cl *client.Client, ref string) (wire.Volume, error) {
	return resolve(ctx, "volume", ref, cl.GetVolume, cl.ListVolumes)
}

func snapshotRef(ctx context.Context, cl *client.Client, ref string) (wire.Snapshot, error) {
	return resolve(ctx, "snapshot", ref, cl.GetSnapshot, cl.ListSnapshots)
}

func backupRef(ctx context.Context, cl *client.Client, ref string) (wire.Backup, error) {
	return resolve(ctx, "backup", ref, cl.GetBackup, cl.ListBackups)
}

// listAll returns the list's items: every page, or only the first when
// the query sets a limit.
func listAll[T any](ctx context.Context, list func(context.Context, bool, url.Values) ([]T, []wire.Link, error), q url.Values) ([]T, error) {
	all := q.Get("limit") == ""
	var out []T
	for {
		page, links, err := list(ctx, true, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		m := client.NextMarker(links)
		if !all || m == "" || len(page) == 0 {
			return out, nil
		}
		q.Set("marker", m)
	}
}

// listFlags are the list commands' filters.
type listFlags struct {
	name, status, sort, marker string
	limit                      int
	allProjects                bool
}

func addListFlags(f *pflag.FlagSet, l *listFlags) {
	f.StringVar(&l.name, "name", "", "only those with this name")
	f.StringVar(&l.status, "status", "", "only those in this status")
	f.StringVar(&l.sort, "sort", "", "order: KEY[:asc|desc],... (id, name, status, size, created_at, updated_at)")
	f.IntVar(&l.limit, "limit", 0, "list one page of at most this many (default: all)")
	f.StringVar(&l.marker, "marker", "", "start after this ID")
	f.BoolVar(&l.allProjects, "all-projects", false, "list every project's (admins; a project's token gets its own)")
}

func (l *listFlags) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"name": l.name, "status": l.status, "sort": l.sort, "marker": l.marker} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if l.limit > 0 {
		q.Set("limit", strconv.Itoa(l.limit))
	}
	if l.allProjects {
		q.Set("all_tenants", "1")
	}
	return q
}

// Volumes through the API.

// sizeUsage is the help of the volume commands' --size.
const sizeUsage = "size: with the API whole GiB (10 or 10G); directly any size, e.g. 10G or 512M (rounded up to 64 KiB)"

func (a *app) apiVolumeCreate(cmd *cobra.Command) apiRun {
	var name, desc, snapshot, backup string
	var wait bool
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the volume's name (API)")
	f.StringVar(&desc, "description", "", "the volume's description (API)")
	f.StringVar(&snapshot, "snapshot-id", "", "make the volume from this snapshot (API)")
	f.StringVar(&backup, "backup-id", "", "restore this backup into the new volume (API)")
	f.BoolVar(&wait, "wait", false, "wait until the volume is available (API)")
	f.Lookup("size").Usage = sizeUsage
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 0, 1, "at most a NAME"); err != nil {
			return err
		}
		if len(args) == 1 {
			if name != "" {
				return usageError{errors.New("give the name as the argument or --name, not both")}
			}
			name = args[0]
		}
		var req wire.VolumeCreateRequest
		req.Volume.Name, req.Volume.Description = name, desc
		size, _ := cmd.Flags().GetString("size")
		if size != "" {
			n, err := apiSize(size)
			if err != nil {
				return err
			}
			req.Volume.Size = &n
		} else if snapshot == "" && backup == "" {
			return usageError{errors.New("--size is required (GiB), unless the volume comes from --snapshot-id or --backup-id")}
		}
		if snapshot != "" && backup != "" {
			return usageError{errors.New("give --snapshot-id or --backup-id, not both")}
		}
		if snapshot != "" {
			s, err := snapshotRef(ctx, cl, snapshot)
			if err != nil {
				return err
			}
			req.Volume.SnapshotID = s.ID
		}
		if backup != "" {
			b, err := backupRef(ctx, cl, backup)
			if err != nil {
				return err
			}
			req.Volume.BackupID = b.ID
		}
		v, err := cl.CreateVolume(ctx, req)
		if err != nil {
			return err
		}
		return a.finishVolume(ctx, cl, v, wait)
	}
}

// finish prints a resource, after waiting for the end of its operation
// with wait.
func finish[T any](ctx context.Context, a *app, cl *client.Client, kind client.Kind, id string, wait bool,
	get func(context.Context, string) (T, error), show func(T) error) error {
	if wait {
		if _, err := a.wait(ctx, cl, kind, id); err != nil {
			return err
		}
	}
	r, err := get(ctx, id)
	if err != nil {
		return err
	}
	return show(r)
}

func (a *app) finishVolume(ctx context.Context, cl *client.Client, v wire.Volume, wait bool) error {
	return finish(ctx, a, cl, client.Volume, v.ID, wait, cl.GetVolume, a.showAPIVolume)
}

func (a *app) finishSnapshot(ctx context.Context, cl *client.Client, s wire.Snapshot, wait bool) error {
	return finish(ctx, a, cl, client.Snapshot, s.ID, wait, cl.GetSnapshot, a.showAPISnapshot)
}

func (a *app) finishBackup(ctx context.Context, cl *client.Client, b wire.Backup, wait bool) error {
	return finish(ctx, a, cl, client.Backup, b.ID, wait, cl.GetBackup, a.showAPIBackup)
}

func (a *app) apiVolumeList(cmd *cobra.Command) apiRun {
	var l listFlags
	addListFlags(cmd.Flags(), &l)
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 0, 0, "no arguments"); err != nil {
			return err
		}
		list, err := listAll(ctx, cl.ListVolumes, l.query())
		if err != nil {
			return err
		}
		return a.printAPIVolumes(list, l.allProjects)
	}
}

func (a *app) apiVolumeShow(*cobra.Command) apiRun {
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 1, 1, "a VOLUME"); err != nil {
			return err
		}
		v, err := volumeRef(ctx, cl, args[0])
		if err != nil {
			return err
		}
		return a.showAPIVolume(v)
	}
}

func (a *app) apiVolumeDelete(cmd *cobra.Command) apiRun {
	var wait bool
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the volumes are gone (API)")
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 1, -1, "one or more VOLUMEs"); err != nil {
			return err
		}
		return a.deleteAll(ctx, cl, client.Volume, args, wait, func(ctx context.Context, ref string) (string, error) {
			v, err := volumeRef(ctx, cl, ref)
			if err != nil {
				return "", err
			}
			return v.ID, cl.DeleteVolume(ctx, v.ID)
		})
	}
}

// deleteAll asks for each deletion, then (with wait) waits for each.
func (a *app) deleteAll(ctx context.Context, cl *client.Client, kind client.Kind, refs []string, wait bool,
	del func(ctx context.Context, ref string) (string, error)) error {
	var out []deleted
	for _, ref := range refs {
		id, err := del(ctx, ref)
		if err != nil {
			if len(out) > 0 && !a.json {
				_ = a.printDeleted(kind, out)
			}
			return err
		}
		out = append(out, deleted{ID: id, Status: string(cairn.StatusDeleting)})
	}
	if wait {
		for i := range out {
			st, err := a.wait(ctx, cl, kind, out[i].ID)
			if err != nil {
				return err
			}
			out[i].Status = st
		}
	}
	return a.printDeleted(kind, out)
}

func (a *app) apiVolumeExtend(cmd *cobra.Command) apiRun {
	var wait bool
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the volume is available (API)")
	cmd.Flags().Lookup("size").Usage = sizeUsage
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 1, 1, "a VOLUME"); err != nil {
			return err
		}
		size, _ := cmd.Flags().GetString("size")
		if size == "" {
			return usageError{errors.New("--size is required: the new size in GiB")}
		}
		n, err := apiSize(size)
		if err != nil {
			return err
		}
		v, err := volumeRef(ctx, cl, args[0])
		if err != nil {
			return err
		}
		if err := cl.ExtendVolume(ctx, v.ID, n); err != nil {
			return err
		}
		return a.finishVolume(ctx, cl, v, wait)
	}
}

func (a *app) apiVolumeAttach(*cobra.Command) apiRun {
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 1, 1, "a VOLUME"); err != nil {
			return err
		}
		v, err := volumeRef(ctx, cl, args[0])
		if err != nil {
			return err
		}
		// A volume attached already answers where it is exported, so its
		// address can always be found again.
		out := attachOutput{}
		out.Attachment, out.AlreadyAttached = attachmentOf(v)
		if !out.AlreadyAttached {
			out.Attachment, err = cl.AttachVolume(ctx, v.ID)
			if errors.Is(err, cairn.ErrConflict) {
				// Perhaps attached since it was read.
				if now, gerr := cl.GetVolume(ctx, v.ID); gerr == nil {
					if att, ok := attachmentOf(now); ok {
						out.Attachment, out.AlreadyAttached, err = att, true, nil
					}
				}
			}
			if err != nil {
				return err
			}
		}
		if a.json {
			return a.printJSON(out)
		}
		if out.AlreadyAttached {
			fmt.Fprintf(a.stderr, "volume %s was already attached; its NBD export:\n", v.ID)
		}
		for _, u := range out.URIs {
			fmt.Fprintln(a.stdout, u)
		}
		return nil
	}
}

// attachOutput is what cairn volume attach prints with --json: the
// attachment, and whether the volume was attached before.
type attachOutput struct {
	wire.Attachment
	AlreadyAttached bool `json:"already_attached"`
}

// attachmentOf returns where a volume is exported, from its attachments;
// false when it has none.
func attachmentOf(v wire.Volume) (wire.Attachment, bool) {
	if len(v.Attachments) == 0 {
		return wire.Attachment{}, false
	}
	return wire.Attachment{VolumeID: v.ID, ExportName: v.ID, URIs: v.Attachments[0].URIs()}, true
}

func (a *app) apiVolumeDetach(*cobra.Command) apiRun {
	return func(ctx context.Context, cl *client.Client, args []string) error {
		if err := argCount(args, 1, 1, "a VOLUME"); err != nil {
			return err
		}
		v, err := volumeRef(ctx, cl, args[0])
		if err != nil {
			return err
		}
		if err := cl.DetachVolume(ctx, v.ID); err != nil {
			return err
		}
		if a.json {
			return a.finishVolume(ctx, cl, v, false)
		}
		fmt.Fprintf(a.stdout, "detached volume %s\n", v.ID)
		return nil
	}
}

func (a *app) volumeUpdateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update VOLUME [--name NAME] [--description TEXT]",
		Short: "Rename or redescribe a volume (API)",
		Args:  exactArgs(1),
	}
	return a.apiOnly(cmd, func(cmd *cobra.Command) apiRun {
		var name, desc string
		cmd.Flags().StringVar(&name, "name", "", "the new name")
		cmd.Flags().StringVar(&desc, "description", "", "the new description")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			var np, dp *string
			if cmd.Flags().Changed("name") {
				np = &name
			}
			if cmd.Flags().Changed("description") {
				dp = &desc
			}
			if np == nil && dp == nil {
				return usageError{errors.New("nothing to update: give --name or --description")}
			}
			v, err := volumeRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			if v, err = cl.UpdateVolume(ctx, v.ID, np, dp); err != nil {
				return err
			}
			return a.showAPIVolume(v)
		}
	})
}

// resetStatusCommand is the reset-status command of a kind.
func (a *app) resetStatusCommand(kind client.Kind, statuses string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   fmt.Sprintf("reset-status %s --status STATUS", strings.ToUpper(string(kind))),
		Short: fmt.Sprintf("Set a %s's status, to recover from a stuck state (admins; API)", kind),
		Long: fmt.Sprintf(`Set a %s's status (%s) without doing anything else: an
administrator's way out of a stuck state. Only admin tokens may.`, kind, statuses),
		Args: exactArgs(1),
	}
	return a.apiOnly(cmd, func(cmd *cobra.Command) apiRun {
		var status string
		cmd.Flags().StringVar(&status, "status", "", "the new status: "+statuses)
		return func(ctx context.Context, cl *client.Client, args []string) error {
			if status == "" {
				return usageError{fmt.Errorf("--status is required: %s", statuses)}
			}
			switch kind {
			case client.Volume:
				v, err := volumeRef(ctx, cl, args[0])
				if err != nil {
					return err
				}
				if err := cl.ResetVolumeStatus(ctx, v.ID, status); err != nil {
					return err
				}
				return a.finishVolume(ctx, cl, v, false)
			case client.Snapshot:
				s, err := snapshotRef(ctx, cl, args[0])
				if err != nil {
					return err
				}
				if err := cl.ResetSnapshotStatus(ctx, s.ID, status); err != nil {
					return err
				}
				return a.finishSnapshot(ctx, cl, s, false)
			default:
				b, err := backupRef(ctx, cl, args[0])
				if err != nil {
					return err
				}
				if err := cl.ResetBackupStatus(ctx, b.ID, status); err != nil {
					return err
				}
				return a.finishBackup(ctx, cl, b, false)
			}
		}
	})
}

// Snapshots.

func (a *app) apiSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Manage the project's snapshots through the API",
		Long: `Create, list, show and delete the project's snapshots through the API of a
cairn serve. (Snapshots of a data directory nobody serves are 'cairn
volume snapshot'.)

` + apiModel,
	}
	cmd.PersistentFlags().StringVar(&a.dataDirFlag, "data-dir", "", "data directory of a local cairn serve")
	create := &cobra.Command{
		Use:   "create VOLUME [--name NAME] [--description TEXT] [--force] [--wait]",
		Short: "Snapshot a volume (--force: even while it is attached)",
		Args:  exactArgs(1),
	}
	a.apiOnly(create, func(cmd *cobra.Command) apiRun {
		var req wire.SnapshotCreateRequest
		var wait bool
		var name, description string
		f := cmd.Flags()
		f.StringVar(&name, "name", "", "the snapshot's name")
		f.StringVar(&description, "description", "", "the snapshot's description")
		f.BoolVar(&req.Snapshot.Force, "force", false, "snapshot an in-use volume")
		f.BoolVar(&wait, "wait", false, "wait until the snapshot is available")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			v, err := volumeRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			id, err := json.Marshal(v.ID)
			if err != nil {
				return err
			}
			req.Snapshot.VolumeID, req.Snapshot.Name, req.Snapshot.Description = id, &name, &description
			s, err := cl.CreateSnapshot(ctx, req)
			if err != nil {
				return err
			}
			return a.finishSnapshot(ctx, cl, s, wait)
		}
	})
	list := &cobra.Command{
		Use:   "list [--volume-id VOLUME] [filters]",
		Short: "List snapshots",
		Args:  exactArgs(0),
	}
	a.apiOnly(list, func(cmd *cobra.Command) apiRun {
		var l listFlags
		var volume string
		addListFlags(cmd.Flags(), &l)
		cmd.Flags().StringVar(&volume, "volume-id", "", "only the snapshots of this volume")
		return func(ctx context.Context, cl *client.Client, _ []string) error {
			q := l.query()
			if volume != "" {
				v, err := volumeRef(ctx, cl, volume)
				if err != nil {
					return err
				}
				q.Set("volume_id", v.ID)
			}
			items, err := listAll(ctx, cl.ListSnapshots, q)
			if err != nil {
				return err
			}
			return a.printAPISnapshots(items, l.allProjects)
		}
	})
	show := &cobra.Command{Use: "show SNAPSHOT", Short: "Show a snapshot", Args: exactArgs(1)}
	a.apiOnly(show, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, args []string) error {
			s, err := snapshotRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			return a.showAPISnapshot(s)
		}
	})
	del := &cobra.Command{Use: "delete SNAPSHOT... [--wait]", Short: "Delete snapshots", Args: minArgs(1)}
	a.apiOnly(del, func(cmd *cobra.Command) apiRun {
		var wait bool
		cmd.Flags().BoolVar(&wait, "wait", false, "wait until the snapshots are gone")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			return a.deleteAll(ctx, cl, client.Snapshot, args, wait, func(ctx context.Context, ref string) (string, error) {
				s, err := snapshotRef(ctx, cl, ref)
				if err != nil {
					return "", err
				}
				return s.ID, cl.DeleteSnapshot(ctx, s.ID)
			})
		}
	})
	cmd.AddCommand(create, list, show, del, a.resetStatusCommand(client.Snapshot, "available, error, creating, deleting, error_deleting, ..."))
	return cmd
}

// Backups.

func (a *app) apiBackupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Manage the project's backups through the API",
		Long: `Back up volumes and snapshots into containers (repositories), restore
them, export and import their records, through the API of a cairn serve.
(A repository worked on directly is 'cairn repo'.)

` + apiModel,
	}
	cmd.PersistentFlags().StringVar(&a.dataDirFlag, "data-dir", "", "data directory of a local cairn serve")
	create := &cobra.Command{
		Use:   "create --volume-id VOLUME | --snapshot-id SNAPSHOT [--incremental] [--container C] [--name NAME] [--wait]",
		Short: "Back up a volume or a snapshot",
		Long: `Back up a volume (through a temporary snapshot; --force for an attached
volume) or a snapshot. --incremental reads only what changed since the
latest backup of the same volume in the same container; every backup
restores on its own.`,
		Args: exactArgs(0),
	}
	a.apiOnly(create, func(cmd *cobra.Command) apiRun {
		var req wire.BackupCreateRequest
		var wait bool
		f := cmd.Flags()
		f.StringVar(&req.Backup.VolumeID, "volume-id", "", "the volume to back up")
		f.StringVar(&req.Backup.SnapshotID, "snapshot-id", "", "the snapshot to back up")
		f.BoolVar(&req.Backup.Incremental, "incremental", false, "an incremental backup")
		f.StringVar(&req.Backup.Container, "container", "", "the container (default: the service's)")
		f.StringVar(&req.Backup.Name, "name", "", "the backup's name")
		f.StringVar(&req.Backup.Description, "description", "", "the backup's description")
		f.BoolVar(&req.Backup.Force, "force", false, "back up an in-use volume")
		f.BoolVar(&wait, "wait", false, "wait until the backup is available")
		return func(ctx context.Context, cl *client.Client, _ []string) error {
			switch {
			case req.Backup.VolumeID != "" && req.Backup.SnapshotID != "":
				return usageError{errors.New("give --volume-id or --snapshot-id, not both")}
			case req.Backup.VolumeID != "":
				v, err := volumeRef(ctx, cl, req.Backup.VolumeID)
				if err != nil {
					return err
				}
				req.Backup.VolumeID = v.ID
			case req.Backup.SnapshotID != "":
				s, err := snapshotRef(ctx, cl, req.Backup.SnapshotID)
				if err != nil {
					return err
				}
				req.Backup.SnapshotID = s.ID
			default:
				return usageError{errors.New("give --volume-id or --snapshot-id: what to back up")}
			}
			b, err := cl.CreateBackup(ctx, req)
			if err != nil {
				return err
			}
			return a.finishBackup(ctx, cl, b, wait)
		}
	})
	list := &cobra.Command{
		Use:   "list [--volume-id VOLUME] [--snapshot-id SNAPSHOT] [filters]",
		Short: "List backups",
		Args:  exactArgs(0),
	}
	a.apiOnly(list, func(cmd *cobra.Command) apiRun {
		var l listFlags
		var volume, snapshot string
		addListFlags(cmd.Flags(), &l)
		cmd.Flags().StringVar(&volume, "volume-id", "", "only the backups of this volume")
		cmd.Flags().StringVar(&snapshot, "snapshot-id", "", "only the backups of this snapshot")
		return func(ctx context.Context, cl *client.Client, _ []string) error {
			q := l.query()
			if volume != "" {
				q.Set("volume_id", volume) // the volume may be gone: no resolving
			}
			if snapshot != "" {
				q.Set("snapshot_id", snapshot)
			}
			items, err := listAll(ctx, cl.ListBackups, q)
			if err != nil {
				return err
			}
			return a.printAPIBackups(items, l.allProjects)
		}
	})
	show := &cobra.Command{Use: "show BACKUP", Short: "Show a backup", Args: exactArgs(1)}
	a.apiOnly(show, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, args []string) error {
			b, err := backupRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			return a.showAPIBackup(b)
		}
	})
	del := &cobra.Command{
		Use:   "delete BACKUP... [--wait]",
		Short: "Delete backups; what no other backup needs is freed",
		Args:  minArgs(1),
	}
	a.apiOnly(del, func(cmd *cobra.Command) apiRun {
		var wait bool
		cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backups are gone")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			return a.deleteAll(ctx, cl, client.Backup, args, wait, func(ctx context.Context, ref string) (string, error) {
				b, err := backupRef(ctx, cl, ref)
				if err != nil {
					return "", err
				}
				return b.ID, cl.DeleteBackup(ctx, b.ID)
			})
		}
	})
	restore := &cobra.Command{
		Use:   "restore BACKUP [--volume-id VOLUME | --name NAME] [--wait]",
		Short: "Restore a backup into a new volume, or into an available volume",
		Long: `Restore a backup into a new volume (named --name, by default
restore_backup_ID), or over an available volume at least as large
(--volume-id). Prints the volume, in status restoring-backup until the
restore ends (--wait follows it).`,
		Args: exactArgs(1),
	}
	a.apiOnly(restore, func(cmd *cobra.Command) apiRun {
		var volume, name string
		var wait bool
		f := cmd.Flags()
		f.StringVar(&volume, "volume-id", "", "restore over this volume")
		f.StringVar(&name, "name", "", "the new volume's name")
		f.BoolVar(&wait, "wait", false, "wait until the restore ends")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			if volume != "" && name != "" {
				return usageError{errors.New("--name names a new volume: give --volume-id or --name, not both")}
			}
			b, err := backupRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			if volume != "" {
				v, err := volumeRef(ctx, cl, volume)
				if err != nil {
					return err
				}
				volume = v.ID
			}
			res, err := cl.RestoreBackup(ctx, b.ID, volume, name)
			if err != nil {
				return err
			}
			return a.finishVolume(ctx, cl, wire.Volume{ID: res.VolumeID}, wait)
		}
	})
	export := &cobra.Command{
		Use:   "export-record BACKUP",
		Short: "Print what another deployment needs to import a backup",
		Long: `Print a backup's record: what another deployment, with the same containers
and key, needs to import it (cairn backup import-record). With --json it
is the JSON import-record reads.`,
		Args: exactArgs(1),
	}
	a.apiOnly(export, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, args []string) error {
			b, err := backupRef(ctx, cl, args[0])
			if err != nil {
				return err
			}
			rec, err := cl.ExportRecord(ctx, b.ID)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rec)
			}
			keyValues(a.stdout, [][2]string{{"backup_service", rec.BackupService}, {"backup_url", rec.BackupURL}})
			return nil
		}
	})
	imp := &cobra.Command{
		Use:   "import-record [FILE | --backup-service S --backup-url U]",
		Short: "Add a backup from another deployment's exported record",
		Long: `Add a backup from a record 'cairn --json backup export-record' printed: from
FILE ("-" for standard input; the record JSON, bare or as the API's
{"backup-record": ...}), or from --backup-service and --backup-url. The
container must hold the backup and this deployment's key must open it.`,
		Args: maxArgs(1),
	}
	a.apiOnly(imp, func(cmd *cobra.Command) apiRun {
		var rec wire.BackupRecord
		cmd.Flags().StringVar(&rec.BackupService, "backup-service", "", "the record's backup_service")
		cmd.Flags().StringVar(&rec.BackupURL, "backup-url", "", "the record's backup_url")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			r := rec
			switch {
			case len(args) == 1 && (r.BackupService != "" || r.BackupURL != ""):
				return usageError{errors.New("give a FILE or --backup-service and --backup-url, not both")}
			case len(args) == 1:
				var err error
				if r, err = a.readRecord(args[0]); err != nil {
					return err
				}
			case r.BackupService == "" || r.BackupURL == "":
				return usageError{errors.New("give a FILE, or --backup-service and --backup-url")}
			}
			b, err := cl.ImportRecord(ctx, r)
			if err != nil {
				return err
			}
			return a.showAPIBackup(b)
		}
	})
	protect := &cobra.Command{
		Use:   "protect BACKUP... [--off]",
		Short: "Protect backups from deletion (by a request or a policy's retention); --off stops protecting them",
		Args:  minArgs(1),
	}
	a.apiOnly(protect, func(cmd *cobra.Command) apiRun {
		var off bool
		cmd.Flags().BoolVar(&off, "off", false, "stop protecting them")
		return func(ctx context.Context, cl *client.Client, args []string) error {
			for _, ref := range args {
				b, err := backupRef(ctx, cl, ref)
				if err != nil {
					return err
				}
				if err := cl.ProtectBackup(ctx, b.ID, !off); err != nil {
					return err
				}
				if !a.json {
					state := "protected"
					if off {
						state = "no longer protected"
					}
					fmt.Fprintf(a.stdout, "backup %s %s\n", b.ID, state)
				}
			}
			return nil
		}
	})
	cmd.AddCommand(create, list, show, del, restore, export, imp, protect, a.resetStatusCommand(client.Backup, "available or error"))
	return cmd
}

// readRecord reads an exported backup record from a file or stdin.
func (a *app) readRecord(path string) (wire.BackupRecord, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(a.stdin, 1<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return wire.BackupRecord{}, fmt.Errorf("backup record: %w", err)
	}
	var doc struct {
		wire.BackupRecord
		Wrapped *wire.BackupRecord `json:"backup-record"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return wire.BackupRecord{}, usageError{fmt.Errorf("backup record %s: not JSON: %w", path, err)}
	}
	rec := doc.BackupRecord
	if doc.Wrapped != nil {
		rec = *doc.Wrapped
	}
	if rec.BackupService == "" || rec.BackupURL == "" {
		return wire.BackupRecord{}, usageError{fmt.Errorf("backup record %s: want backup_service and backup_url", path)}
	}
	return rec, nil
}

// Limits.

func (a *app) limitsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "limits",
		Short: "Show the project's quotas and what it uses (API)",
		Args:  exactArgs(0),
	}
	cmd.Flags().StringVar(&a.dataDirFlag, "data-dir", "", "data directory of a local cairn serve")
	return a.apiOnly(cmd, func(*cobra.Command) apiRun {
		return func(ctx context.Context, cl *client.Client, _ []string) error {
			l, err := cl.Limits(ctx)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(l)
			}
			// The limits API has no per-volume limit: the last row is left out.
			rows := quotaRows(l.Quota, l.Usage)
			table(a.stdout, []string{"RESOURCE", "USED", "LIMIT"}, rows[:len(rows)-1])
			return nil
		}
	})
}

func quotaText(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

func quotaRows(q cairn.Quota, u cairn.Usage) [][]string {
	return [][]string{
		{"volumes", strconv.FormatInt(u.Volumes, 10), quotaText(q.Volumes)},
		{"gigabytes", strconv.FormatInt(u.Gigabytes, 10), quotaText(q.Gigabytes)},
		{"snapshots", strconv.FormatInt(u.Snapshots, 10), quotaText(q.Snapshots)},
		{"backups", strconv.FormatInt(u.Backups, 10), quotaText(q.Backups)},
		{"backup_gigabytes", strconv.FormatInt(u.BackupGigabytes, 10), quotaText(q.BackupGigabytes)},
		{"per_volume_gigabytes", "-", quotaText(q.PerVolumeGigabytes)},
	}
}

// Projects and tokens, on the catalog.

const catalogHelp = `These commands work on the service's catalog directly, on the host: --catalog
(CAIRN_CATALOG), a SQLite file or a postgres:// URL, by default
DATA_DIR/catalog.db (--data-dir, CAIRN_DATA_DIR). They work whether or not
cairn serve runs; its first start creates the catalog.`

// catalogFlags name the catalog.
type catalogFlags struct{ dsn string }

func (a *app) addCatalogFlags(cmd *cobra.Command, c *catalogFlags) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.dsn, "catalog", "", "the catalog: a SQLite file or postgres:// URL (env CAIRN_CATALOG; default DATA_DIR/catalog.db)")
	pf.StringVar(&a.dataDirFlag, "data-dir", "", "data directory")
}

// withCatalog runs f with the catalog open. A SQLite catalog must exist:
// one made here would keep cairn serve from making its admin project.
func (a *app) withCatalog(cmd *cobra.Command, c *catalogFlags, f func(ctx context.Context, cat catalog.Store) error) error {
	dsn := firstNonEmpty(c.dsn, a.getenv("CAIRN_CATALOG"))
	if dsn == "" {
		dir, err := a.dataDir()
		if err != nil {
			return err
		}
		dsn = filepath.Join(dir, "catalog.db")
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		path := strings.TrimPrefix(dsn, "sqlite:")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("catalog %s does not exist: cairn serve creates it on its first start (or give --catalog, CAIRN_CATALOG): %w", path, cairn.ErrNotFound)
		}
	}
	ctx := cmd.Context()
	cat, err := openCatalog(ctx, dsn)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer cat.Close()
	return f(ctx, cat)
}

func addQuotaFlags(f *pflag.FlagSet, q *cairn.Quota) {
	f.Int64Var(&q.Volumes, "quota-volumes", -1, "most volumes (-1: unlimited)")
	f.Int64Var(&q.Gigabytes, "quota-gigabytes", -1, "most GiB of volumes and snapshots (-1: unlimited)")
	f.Int64Var(&q.Snapshots, "quota-snapshots", -1, "most snapshots (-1: unlimited)")
	f.Int64Var(&q.Backups, "quota-backups", -1, "most backups (-1: unlimited)")
	f.Int64Var(&q.BackupGigabytes, "quota-backup-gigabytes", -1, "most GiB of backed-up volumes (-1: unlimited)")
	f.Int64Var(&q.PerVolumeGigabytes, "quota-per-volume-gigabytes", -1, "largest volume in GiB (-1: unlimited)")
}

// checkQuota checks quota flags: a bad limit is a usage error.
func checkQuota(q cairn.Quota) error {
	if err := service.ValidQuota(q); err != nil {
		return usageError{err}
	}
	return nil
}

// projectJSON is a project with what it uses.
type projectJSON = service.ProjectUsage

func (a *app) showProject(p service.ProjectUsage) error {
	if a.json {
		return a.printJSON(p)
	}
	keyValues(a.stdout, [][2]string{{"id", p.ID}, {"name", p.Name}, {"created", when(p.CreatedAt)}})
	fmt.Fprintln(a.stdout)
	table(a.stdout, []string{"RESOURCE", "USED", "LIMIT"}, quotaRows(p.Quota, p.Usage))
	return nil
}

// withProjects runs f with the administration of the catalog's projects.
func (a *app) withProjects(cmd *cobra.Command, c *catalogFlags, f func(ctx context.Context, ps *service.Projects) error) error {
	return a.withCatalog(cmd, c, func(ctx context.Context, cat catalog.Store) error {
		return f(ctx, service.NewProjects(cat))
	})
}

func (a *app) projectCommand() *cobra.Command {
	var cf catalogFlags
	cmd := &cobra.Command{
		Use:   "project",
		Short: "Administer the service's projects (on the host)",
		Long: `Create, list, show and delete the service's projects and set their quotas.
A project owns volumes, snapshots and backups; its tokens (cairn token) use
the API. A project is named by its ID, or by its name when one project
alone has it.

` + catalogHelp,
	}
	a.addCatalogFlags(cmd, &cf)
	var q cairn.Quota
	var id string
	create := &cobra.Command{
		Use:   "create NAME [--id ID] [--quota-volumes N ...]",
		Short: "Create a project (quotas unlimited unless given)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkQuota(q); err != nil {
				return err
			}
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				p, err := ps.Create(ctx, id, args[0], q)
				if err != nil {
					return err
				}
				return a.showProject(service.ProjectUsage{Project: p})
			})
		},
	}
	create.Flags().StringVar(&id, "id", "", "the project's ID (default: a new UUID)")
	addQuotaFlags(create.Flags(), &q)
	list := &cobra.Command{
		Use:   "list",
		Short: "List projects with their usage and quotas (used/limit, - for unlimited)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				out, err := ps.List(ctx)
				if err != nil {
					return err
				}
				if a.json {
					if out == nil {
						out = []service.ProjectUsage{}
					}
					return a.printJSON(out)
				}
				frac := func(used, lim int64) string {
					if lim < 0 {
						return fmt.Sprintf("%d/-", used)
					}
					return fmt.Sprintf("%d/%d", used, lim)
				}
				rows := make([][]string, 0, len(out))
				for _, p := range out {
					rows = append(rows, []string{p.ID, p.Name, frac(p.Usage.Volumes, p.Quota.Volumes),
						frac(p.Usage.Gigabytes, p.Quota.Gigabytes), frac(p.Usage.Snapshots, p.Quota.Snapshots),
						frac(p.Usage.Backups, p.Quota.Backups), frac(p.Usage.BackupGigabytes, p.Quota.BackupGigabytes),
						when(p.CreatedAt)})
				}
				table(a.stdout, []string{"ID", "NAME", "VOLUMES", "GIGABYTES", "SNAPSHOTS", "BACKUPS", "BACKUP GIGABYTES", "CREATED"}, rows)
				return nil
			})
		},
	}
	show := &cobra.Command{
		Use:   "show PROJECT",
		Short: "Show a project's usage and quotas",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				p, err := ps.Show(ctx, args[0])
				if err != nil {
					return err
				}
				return a.showProject(p)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete PROJECT",
		Short: "Delete a project and its tokens (it must own no volumes, snapshots or backups)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				p, err := ps.Delete(ctx, args[0])
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(deleted{ID: p.ID, Status: client.Gone})
				}
				fmt.Fprintf(a.stdout, "deleted project %s\n", p.ID)
				return nil
			})
		},
	}
	var sq cairn.Quota
	setQuota := &cobra.Command{
		Use:   "set-quota PROJECT --quota-volumes N ...",
		Short: "Change a project's quotas (those given; -1: unlimited)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkQuota(sq); err != nil {
				return err
			}
			f := cmd.Flags()
			var change service.QuotaChange
			given := false
			for name, dst := range map[string]struct {
				to  **int64
				val *int64
			}{
				"quota-volumes": {&change.Volumes, &sq.Volumes}, "quota-gigabytes": {&change.Gigabytes, &sq.Gigabytes},
				"quota-snapshots": {&change.Snapshots, &sq.Snapshots}, "quota-backups": {&change.Backups, &sq.Backups},
				"quota-backup-gigabytes":     {&change.BackupGigabytes, &sq.BackupGigabytes},
				"quota-per-volume-gigabytes": {&change.PerVolumeGigabytes, &sq.PerVolumeGigabytes},
			} {
				if f.Changed(name) {
					*dst.to, given = dst.val, true
				}
			}
			if !given {
				return usageError{errors.New("give at least one --quota-... flag")}
			}
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				p, err := ps.SetQuota(ctx, args[0], change)
				if err != nil {
					return err
				}
				return a.showProject(p)
			})
		},
	}
	addQuotaFlags(setQuota.Flags(), &sq)
	cmd.AddCommand(create, list, show, del, setQuota)
	return cmd
}

// tokenJSON is a token as the token commands print it; Secret only once,
// when it is created.
type tokenJSON struct {
	cairn.Token
	Secret string `json:"secret,omitempty"`
}

func (a *app) tokenCommand() *cobra.Command {
	var cf catalogFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Administer the API's tokens (on the host)",
		Long: `Create, list and delete the API tokens of the service's projects. A token
acts in its project; an admin token (--admin) in any project, and may
reset statuses. Only a hash of a token is stored: its secret is printed
once, when it is created. A project is named by its ID, or by its name
when one project alone has it.

` + catalogHelp,
	}
	a.addCatalogFlags(cmd, &cf)
	var project, name string
	var admin bool
	create := &cobra.Command{
		Use:   "create --project PROJECT [--name NAME] [--admin]",
		Short: "Create a token and print its secret (shown only this once)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if project == "" {
				return usageError{errors.New("--project is required")}
			}
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				secret, tok, err := ps.CreateToken(ctx, project, name, admin)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(tokenJSON{tok, secret})
				}
				kind := "token"
				if tok.Admin {
					kind = "admin token"
				}
				fmt.Fprintf(a.stderr, "created %s %s of project %s; its secret, shown only now:\n", kind, tok.ID, tok.ProjectID)
				fmt.Fprintln(a.stdout, secret)
				return nil
			})
		},
	}
	create.Flags().StringVar(&project, "project", "", "the token's project (ID or name)")
	create.Flags().StringVar(&name, "name", "", "a name for the token")
	create.Flags().BoolVar(&admin, "admin", false, "an admin token: any project, and reset-status")
	var of string
	list := &cobra.Command{
		Use:   "list [--project PROJECT]",
		Short: "List tokens (never their secrets)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				list, err := ps.Tokens(ctx, of)
				if err != nil {
					return err
				}
				if a.json {
					if list == nil {
						list = []cairn.Token{}
					}
					return a.printJSON(list)
				}
				rows := make([][]string, 0, len(list))
				for _, t := range list {
					rows = append(rows, []string{t.ID, t.ProjectID, t.Name, yesNo(t.Admin), when(t.CreatedAt)})
				}
				table(a.stdout, []string{"ID", "PROJECT", "NAME", "ADMIN", "CREATED"}, rows)
				return nil
			})
		},
	}
	list.Flags().StringVar(&of, "project", "", "only this project's tokens (ID or name)")
	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete tokens: they stop working at once",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProjects(cmd, &cf, func(ctx context.Context, ps *service.Projects) error {
				var out []deleted
				for _, id := range args {
					if err := ps.DeleteToken(ctx, id); err != nil {
						return err
					}
					out = append(out, deleted{ID: id, Status: client.Gone})
					if !a.json {
						fmt.Fprintf(a.stdout, "deleted token %s\n", id)
					}
				}
				if a.json {
					return a.printJSON(out)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// deref64 is *p, or 0 for nil.
func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
