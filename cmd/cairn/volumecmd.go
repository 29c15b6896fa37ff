package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/attach"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// Files in a data directory besides the engine's own.
const (
	controlSocket = "control.sock"
	nbdSocket     = "nbd.sock"
	attachDir     = "attachments"
)

// dataDir is --data-dir, $CAIRN_DATA_DIR, or cairn under the user's data
// directory ($XDG_DATA_HOME or ~/.local/share).
func (a *app) dataDir() (string, error) {
	if a.dataDirFlag != "" {
		return filepath.Abs(a.dataDirFlag)
	}
	if d := a.getenv("CAIRN_DATA_DIR"); d != "" {
		return filepath.Abs(d)
	}
	if d := a.getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "cairn"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("data directory: %w; set --data-dir", err)
	}
	return filepath.Join(home, ".local", "share", "cairn"), nil
}

// volumeOps opens the data directory: directly when no process holds it,
// through the control socket of the process serving it otherwise.
func (a *app) volumeOps(ctx context.Context) (volumectl.Ops, func(), error) {
	dir, err := a.dataDir()
	if err != nil {
		return nil, nil, err
	}
	e, err := volume.Open(dir, volume.Options{Logger: a.logger()})
	if err == nil {
		return volumectl.Direct{E: e}, func() { _ = e.Close() }, nil
	}
	if !errors.Is(err, cairn.ErrConflict) {
		return nil, nil, err
	}
	if info := localService(dir); info != nil {
		return nil, nil, servedError(dir, info)
	}
	c := volumectl.NewClient(filepath.Join(dir, controlSocket))
	info, cerr := c.Info(ctx)
	if cerr != nil {
		return nil, nil, fmt.Errorf("%w; and its control socket does not answer: %v", err, cerr)
	}
	if !info.AllExports {
		return nil, nil, fmt.Errorf("data directory %s belongs to cairn serve: its data plane (pid %d) runs, and its volumes are managed through the API (start cairn serve): %w",
			dir, info.PID, cairn.ErrConflict)
	}
	return c, func() {}, nil
}

func (a *app) logger() *slog.Logger {
	level := slog.LevelWarn
	if a.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
}

func (a *app) volumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage volumes: the service's through its API, or a data directory's",
		Long: `Manage thin block volumes with copy-on-write snapshots and clones: a
project's volumes through the API of a cairn serve, or directly those of a
data directory (--data-dir, $CAIRN_DATA_DIR, default ~/.local/share/cairn).

A data directory belongs to one process. While 'cairn volume serve' runs,
the direct commands go through its control socket; otherwise they open
the directory themselves.

` + volumeModel,
	}
	cmd.PersistentFlags().StringVar(&a.dataDirFlag, "data-dir", "", "the volumes' data directory")
	cmd.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "log more")
	cmd.AddCommand(a.volumeCreateCommand(), a.volumeListCommand(), a.volumeShowCommand(),
		a.volumeDeleteCommand(), a.volumeExtendCommand(), a.volumeRevertCommand(),
		a.volumeCloneCommand(), a.snapshotCommand(), a.changedExtentsCommand(),
		a.allocatedCommand(), a.serveCommand(), a.attachCommand(), a.detachCommand())
	a.dispatchVolume(cmd) // API or direct, see apicmd.go
	return cmd
}

// withOps runs f with the data directory open.
func (a *app) withOps(cmd *cobra.Command, f func(ctx context.Context, ops volumectl.Ops) error) error {
	ops, done, err := a.volumeOps(cmd.Context())
	if err != nil {
		return err
	}
	defer done()
	return f(cmd.Context(), ops)
}

func (a *app) printVolumes(list []volume.VolumeInfo) error {
	if a.json {
		if list == nil {
			list = []volume.VolumeInfo{}
		}
		return a.printJSON(list)
	}
	rows := make([][]string, 0, len(list))
	for _, v := range list {
		state := "available"
		if v.InUse {
			state = "in-use"
		}
		rows = append(rows, []string{v.ID.String(), v.Name, formatBytes(v.Size), formatBytes(v.Allocated),
			fmt.Sprint(v.Snapshots), state, v.Created.Local().Format(time.DateTime)})
	}
	table(a.stdout, []string{"ID", "NAME", "SIZE", "ALLOCATED", "SNAPSHOTS", "STATE", "CREATED"}, rows)
	return nil
}

func (a *app) printSnapshots(list []volume.SnapshotInfo) error {
	if a.json {
		if list == nil {
			list = []volume.SnapshotInfo{}
		}
		return a.printJSON(list)
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		rows = append(rows, []string{s.ID.String(), s.Name, s.Volume.Short(), formatBytes(s.Size),
			formatBytes(s.Allocated), s.Created.Local().Format(time.DateTime)})
	}
	table(a.stdout, []string{"ID", "NAME", "VOLUME", "SIZE", "OWN DATA", "CREATED"}, rows)
	return nil
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE",
		Short: "Create a thin volume (it takes disk space only as it is written)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSize(size)
			if err != nil || n <= 0 {
				return usageError{fmt.Errorf("--size %q: give a positive size such as 10G", size)}
			}
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				v, err := ops.CreateVolume(ctx, args[0], n)
				if err != nil {
					return err
				}
				return a.printVolumes([]volume.VolumeInfo{v})
			})
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "size, e.g. 10G (rounded up to 64 KiB)")
	return cmd
}

func (a *app) volumeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List volumes",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				list, err := ops.Volumes(ctx)
				if err != nil {
					return err
				}
				return a.printVolumes(list)
			})
		},
	}
}

func (a *app) volumeShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show VOLUME",
		Short: "Show a volume and its snapshots",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				v, err := volumectl.ResolveVolume(ctx, ops, args[0])
				if err != nil {
					return err
				}
				snaps, err := ops.Snapshots(ctx, v.ID)
				if err != nil {
					return err
				}
				if a.json {
					if snaps == nil {
						snaps = []volume.SnapshotInfo{}
					}
					return a.printJSON(struct {
						volume.VolumeInfo
						SnapshotList []volume.SnapshotInfo `json:"snapshot_list"`
					}{v, snaps})
				}
				if err := a.printVolumes([]volume.VolumeInfo{v}); err != nil {
					return err
				}
				if v.Source != nil {
					fmt.Fprintf(a.stdout, "cloned from snapshot %s\n", v.Source)
				}
				if len(snaps) > 0 {
					fmt.Fprintln(a.stdout)
					return a.printSnapshots(snaps)
				}
				return nil
			})
		},
	}
}

func (a *app) volumeDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete VOLUME...",
		Short: "Delete volumes (they must have no snapshots and not be in use)",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				for _, ref := range args {
					v, err := volumectl.ResolveVolume(ctx, ops, ref)
					if err != nil {
						return err
					}
					if err := ops.DeleteVolume(ctx, v.ID); err != nil {
						return err
					}
					if !a.json {
						fmt.Fprintf(a.stdout, "deleted volume %s (%s)\n", v.ID, v.Name)
					}
				}
				return nil
			})
		},
	}
}

func (a *app) volumeExtendCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "extend VOLUME --size SIZE",
		Short: "Grow a volume",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSize(size)
			if err != nil || n <= 0 {
				return usageError{fmt.Errorf("--size %q: give the new size, such as 20G", size)}
			}
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				v, err := volumectl.ResolveVolume(ctx, ops, args[0])
				if err != nil {
					return err
				}
				if err := ops.ExtendVolume(ctx, v.ID, n); err != nil {
					return err
				}
				v, err = ops.Volume(ctx, v.ID)
				if err != nil {
					return err
				}
				return a.printVolumes([]volume.VolumeInfo{v})
			})
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "new size, larger than the current one")
	return cmd
}

func (a *app) volumeRevertCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revert VOLUME SNAPSHOT",
		Short: "Make a volume's content that of one of its snapshots (the volume must not be in use)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				v, err := volumectl.ResolveVolume(ctx, ops, args[0])
				if err != nil {
					return err
				}
				s, err := volumectl.ResolveSnapshot(ctx, ops, args[1])
				if err != nil {
					return err
				}
				if err := ops.RevertVolume(ctx, v.ID, s.ID); err != nil {
					return err
				}
				if !a.json {
					fmt.Fprintf(a.stdout, "reverted volume %s to snapshot %s\n", v.ID, s.ID)
				}
				return nil
			})
		},
	}
}

func (a *app) volumeCloneCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "clone SNAPSHOT NAME",
		Short: "Create a volume from a snapshot instantly, sharing unchanged data",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				s, err := volumectl.ResolveSnapshot(ctx, ops, args[0])
				if err != nil {
					return err
				}
				v, err := ops.CloneVolume(ctx, args[1], s.ID)
				if err != nil {
					return err
				}
				return a.printVolumes([]volume.VolumeInfo{v})
			})
		},
	}
}

func (a *app) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Create, list and delete snapshots"}
	var name string
	create := &cobra.Command{
		Use:   "create VOLUME [--name NAME]",
		Short: "Snapshot a volume (instant, whatever its size)",
		Long: `Snapshot a volume. Writes acknowledged before the snapshot are in it. For a
consistent file system, freeze it first (fsfreeze -f MOUNT) and thaw it after.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				v, err := volumectl.ResolveVolume(ctx, ops, args[0])
				if err != nil {
					return err
				}
				s, err := ops.CreateSnapshot(ctx, v.ID, name)
				if err != nil {
					return err
				}
				return a.printSnapshots([]volume.SnapshotInfo{s})
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name for the snapshot")
	list := &cobra.Command{
		Use:   "list [VOLUME]",
		Short: "List the snapshots of a volume, or all",
		Args:  maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				var id cairn.ID
				if len(args) == 1 {
					v, err := volumectl.ResolveVolume(ctx, ops, args[0])
					if err != nil {
						return err
					}
					id = v.ID
				}
				list, err := ops.Snapshots(ctx, id)
				if err != nil {
					return err
				}
				return a.printSnapshots(list)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete SNAPSHOT...",
		Short: "Delete snapshots; their space is returned where nothing else needs it",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				for _, ref := range args {
					s, err := volumectl.ResolveSnapshot(ctx, ops, ref)
					if err != nil {
						return err
					}
					if err := ops.DeleteSnapshot(ctx, s.ID); err != nil {
						return err
					}
					if !a.json {
						fmt.Fprintf(a.stdout, "deleted snapshot %s\n", s.ID)
					}
				}
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// writeExtents prints a list in the changed-extents file format (or its
// JSON form), so the output feeds 'cairn repo backup --changed-extents'.
func (a *app) writeExtents(size int64, list []cairn.Extent, known bool) error {
	l := &extents.List{Size: size, Extents: list}
	if !known {
		// The engine cannot vouch for the list: everything may differ.
		l.Extents = []cairn.Extent{{Offset: 0, Length: size}}
	}
	if a.json {
		return a.printJSON(struct {
			*extents.List
			Known bool `json:"known"`
		}{l, known})
	}
	if !known {
		fmt.Fprintln(a.stderr, "cairn: warning: change tracking is not certain across these snapshots (state lost in a crash); listing the whole volume")
	}
	return extents.WriteText(a.stdout, l)
}

func (a *app) changedExtentsCommand() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "changed-extents --from SNAPSHOT VOLUME|SNAPSHOT",
		Short: "List the byte ranges that differ between a snapshot and a later snapshot or the volume",
		Long: `List the byte ranges that may differ between --from and the given volume or
snapshot, at 4 KiB granularity, in the changed-extents file format that
'cairn repo backup --changed-extents' reads. Without --from, list every
allocated range. Where tracking is uncertain (after a crash damaged it),
the whole volume is listed and a warning printed; --json says "known": false.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				to, size, err := volumectl.ResolveRef(ctx, ops, args[0])
				if err != nil {
					return err
				}
				var fromRef *volume.Ref
				if from != "" {
					s, err := volumectl.ResolveSnapshot(ctx, ops, from)
					if err != nil {
						return err
					}
					fromRef = &volume.Ref{Snapshot: s.ID}
				}
				list, known, err := ops.ChangedExtents(ctx, fromRef, to)
				if err != nil {
					return err
				}
				return a.writeExtents(size, list, known)
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the earlier snapshot")
	return cmd
}

func (a *app) allocatedCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "allocated VOLUME|SNAPSHOT",
		Short: "List the byte ranges of a volume or snapshot that hold data",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, ops volumectl.Ops) error {
				ref, size, err := volumectl.ResolveRef(ctx, ops, args[0])
				if err != nil {
					return err
				}
				list, known, err := ops.ChangedExtents(ctx, nil, ref)
				if err != nil {
					return err
				}
				return a.writeExtents(size, list, known)
			})
		},
	}
}

// volumeServeOptions are cairn volume serve's flags.
type volumeServeOptions struct {
	socket, listen string
	noUnix         bool
	cpus           int
	exports        string
	background     bool
	db             dbHostOptions
}

// args returns the command line that serves with o in the foreground.
func (o volumeServeOptions) args(dir string) []string {
	args := []string{"volume", "serve", "--data-dir", dir, "--exports", o.exports, "--verbose"}
	if o.socket != "" {
		args = append(args, "--socket", o.socket)
	}
	if o.noUnix {
		args = append(args, "--no-unix")
	}
	if o.listen != "" {
		args = append(args, "--listen", o.listen)
	}
	if o.cpus > 0 {
		args = append(args, "--cpus", strconv.Itoa(o.cpus))
	}
	return append(args, o.db.args()...)
}

func (a *app) serveCommand() *cobra.Command {
	var o volumeServeOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve volumes (read-write) and snapshots (read-only) over NBD",
		Long: `Open the data directory and serve every volume and snapshot over NBD until
interrupted. An export is named by the volume's or snapshot's ID (or a
volume's unique name): nbd+unix:///ID?socket=DATA-DIR/nbd.sock.

Other cairn volume commands reach this process through DATA-DIR/control.sock.

This is also the data plane cairn serve starts (with --exports named and
--background): it then exports only the volumes the service attached,
under their IDs, and keeps serving them when cairn serve stops or dies.

The server shares the machine with its clients (the guest, the FUSE and
loop chain of an attached volume): by default it runs its Go scheduler on
half of the CPUs (--cpus, or GOMAXPROCS), because idle scheduler threads
spinning on every CPU take time the clients need and add latency to small
requests.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.volumeServe(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.socket, "socket", "", "NBD unix socket (default DATA-DIR/nbd.sock)")
	f.BoolVar(&o.noUnix, "no-unix", false, "do not serve NBD on a unix socket")
	f.StringVar(&o.listen, "listen", "", "also serve NBD over TCP on [HOST:]PORT (host default 127.0.0.1)")
	f.IntVar(&o.cpus, "cpus", 0, "CPUs for the server's scheduler (0: half of them, or GOMAXPROCS)")
	f.StringVar(&o.exports, "exports", "all", "what is exported: all (every volume and snapshot) or named (only what the export table names)")
	f.BoolVar(&o.background, "background", false, "serve in a process of its own (log in DATA-DIR/"+dataPlaneLog+"); return once it serves")
	f.StringVar(&o.db.address, "db-address", "", "address database instances listen on (default 127.0.0.1)")
	f.StringVar(&o.db.ports, "db-ports", "", "TCP ports for database instances, MIN-MAX (default 17500-17999)")
	f.StringVar(&o.db.runDir, "db-run-dir", "", "directory for the instances' unix sockets (default /run/cairn-db)")
	f.StringVar(&o.db.spoolDir, "db-spool-dir", "", "directory for the WAL a PostgreSQL recovery replays (default DB-RUN-DIR/spool)")
	f.StringArrayVar(&o.db.settings, "db-setting", nil, "a database server setting, DATASTORE:NAME=VALUE (e.g. postgresql:max_wal_size=4GB; repeatable)")
	return cmd
}

// volumeServe runs cairn volume serve. One errgroup owns the control
// socket's server and the NBD servers; when ctx ends, or one of them
// fails, the control socket stops first (no new requests), then the NBD
// servers drain their requests, then the engine closes.
func (a *app) volumeServe(ctx context.Context, o volumeServeOptions) error {
	switch {
	case o.cpus > 0:
		runtime.GOMAXPROCS(o.cpus)
	case o.cpus < 0:
		return usageError{fmt.Errorf("--cpus %d: give a positive number, or 0 for half of the CPUs", o.cpus)}
	case a.getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
	}
	if o.exports != "all" && o.exports != "named" {
		return usageError{fmt.Errorf("--exports %q: want all or named", o.exports)}
	}
	if o.noUnix && o.listen == "" {
		return usageError{errors.New("--no-unix needs --listen: nothing would be served")}
	}
	dir, err := a.dataDir()
	if err != nil {
		return err
	}
	if o.background {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		pid, err := startBackground(ctx, o.args(dir), filepath.Join(dir, dataPlaneLog), func(ctx context.Context) bool {
			return findDataPlane(ctx, dir) != nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "cairn: serving %s in the background (pid %d, log %s)\n", dir, pid, filepath.Join(dir, dataPlaneLog))
		return nil
	}
	log := a.logger()
	e, err := volume.Open(dir, volume.Options{Logger: log})
	if info := localService(dir); errors.Is(err, cairn.ErrConflict) && info != nil {
		return servedError(dir, info)
	}
	if err != nil {
		return err
	}
	defer e.Close()
	table, err := volumectl.OpenExportTable(dir, e)
	if err != nil {
		return err
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	listenUnix := func(path string) error {
		_ = os.Remove(path) // we hold the directory lock: it is stale
		l, err := net.Listen("unix", path)
		if err != nil {
			return err
		}
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return err
		}
		listeners = append(listeners, l)
		return nil
	}
	control := filepath.Join(dir, controlSocket)
	if err := listenUnix(control); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer os.Remove(control)
	socket := o.socket
	if socket == "" {
		socket = filepath.Join(dir, nbdSocket)
	}
	info := volumectl.ServerInfo{PID: os.Getpid(), AllExports: o.exports == "all"}
	if !o.noUnix {
		if err := listenUnix(socket); err != nil {
			return fmt.Errorf("nbd socket: %w", err)
		}
		defer os.Remove(socket)
		info.NBDSocket = socket
	}
	if o.listen != "" {
		host, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			host, port = "", o.listen
		}
		if host == "" {
			host = "127.0.0.1"
		}
		l, err := listenTCP("--listen", net.JoinHostPort(host, port))
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		info.NBDListen = l.Addr().String()
	}
	ops := volumectl.Direct{E: e, X: table}
	host, err := a.openDBHost(ctx, dir, o.db, e, table, info.NBDSocket, log)
	if err != nil {
		return err
	}
	srv := nbd.NewServer(a.hooks.exports(volumectl.Catalog{Table: table, All: info.AllExports}), nbd.Options{Logger: log})
	handler := volumectl.WithInstances(volumectl.Handler(ops), volumectl.HostInstances{H: host})
	httpSrv := &http.Server{Handler: volumectl.WithInfo(handler, info), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: volumectl.ConnContext}
	g, gctx := errgroup.WithContext(ctx)
	nbdCtx, stopNBD := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNBD()
	g.Go(func() error {
		if err := httpSrv.Serve(listeners[0]); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control socket: %w", err)
		}
		return nil
	})
	for _, l := range listeners[1:] {
		addr := l.Addr().Network() + " " + l.Addr().String()
		g.Go(func() error {
			if err := srv.Serve(nbdCtx, a.hooks.listener(l)); err != nil {
				return fmt.Errorf("nbd server on %s: %w", addr, err)
			}
			if nbdCtx.Err() == nil {
				return fmt.Errorf("nbd server on %s stopped", addr)
			}
			return nil
		})
		fmt.Fprintf(a.stderr, "cairn: serving NBD on %s\n", addr)
	}
	// The instances come back once their volumes can be attached, over
	// the NBD servers just started.
	if err := host.Start(gctx); err != nil {
		log.Error("bringing the database instances back", "err", err)
	}
	log.Info("serving", "data_dir", dir, "exports", o.exports, "pid", info.PID)
	<-gctx.Done()
	log.Info("stopping", "data_dir", dir)
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdown)
	// The databases stop, and their file systems are unmounted and
	// detached, while the NBD servers still serve them.
	hostCtx, cancelHost := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancelHost()
	if err := host.Close(hostCtx); err != nil {
		log.Error("stopping the database instances", "err", err)
	}
	stopNBD()
	err = g.Wait()
	log.Info("stopped", "data_dir", dir)
	return err
}

func (a *app) attachManager() (attach.Manager, string, error) {
	dir, err := a.dataDir()
	if err != nil {
		return attach.Manager{}, "", err
	}
	return attach.Manager{Dir: filepath.Join(dir, attachDir), PreferFUSE: a.getenv("CAIRN_ATTACH") == "fuse"}, dir, nil
}

func (a *app) attachCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "attach VOLUME|SNAPSHOT",
		Short: "Give a volume (or, read-only, a snapshot) a local block device",
		Long: `Attach a volume or snapshot served by 'cairn volume serve' as a block device
and print its path. Uses the kernel NBD client (nbd-client) where the nbd
module is loaded, and nbdfuse with a direct-I/O loop device otherwise
(CAIRN_ATTACH=fuse forces the latter). Needs root.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, dir, err := a.attachManager()
			if err != nil {
				return err
			}
			ops, done, err := a.volumeOps(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if _, ok := ops.(volumectl.Direct); ok {
				return fmt.Errorf("nothing serves %s: start 'cairn volume serve' first: %w", dir, cairn.ErrUnavailable)
			}
			ref, _, err := volumectl.ResolveRef(cmd.Context(), ops, args[0])
			if err != nil {
				return err
			}
			export, readOnly := ref.Volume.String(), false
			if !ref.Snapshot.IsZero() {
				export, readOnly = ref.Snapshot.String(), true
			}
			r, err := m.Attach(cmd.Context(), filepath.Join(dir, nbdSocket), export, readOnly)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(r)
			}
			fmt.Fprintln(a.stdout, r.Device)
			return nil
		},
	}
}

func (a *app) detachCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "detach VOLUME|SNAPSHOT|DEVICE",
		Short: "Remove the block device made by attach (unmount it first)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, _, err := a.attachManager()
			if err != nil {
				return err
			}
			key := args[0]
			if _, err := m.Lookup(key); err != nil {
				// A name or prefix: resolve it if the data directory answers.
				if ops, done, oerr := a.volumeOps(cmd.Context()); oerr == nil {
					if ref, _, rerr := volumectl.ResolveRef(cmd.Context(), ops, key); rerr == nil {
						key = ref.Volume.String()
						if !ref.Snapshot.IsZero() {
							key = ref.Snapshot.String()
						}
					}
					done()
				}
			}
			r, err := m.Detach(cmd.Context(), key)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "detached %s from %s\n", r.Device, r.Export)
			return nil
		},
	}
}
