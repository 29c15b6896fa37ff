package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/blockdev"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/objstore/metered"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volbackup"
	"github.com/cairnproject/cairn/internal/volumectl"
)

func (a *app) repoCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Work directly on a backup repository",
		Long: `Work directly on a backup repository, without a server.

The repository is given by --repo or CAIRN_REPO:

  /srv/backups/repo                       a directory
  s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path-style=true&profile=P]
  swift://CONTAINER[/PREFIX][?region=R]

S3 credentials come from the usual AWS variables and profiles
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL_S3; CAIRN_S3_ENDPOINT, CAIRN_S3_PATH_STYLE). Swift
credentials come from ST_AUTH/ST_USER/ST_KEY (tempauth), the OS_*
variables (Keystone v3 passwords or application credentials, OS_REGION_NAME),
or clouds.yaml via OS_CLOUD. Nothing outside the repository is needed to
open it: another machine with the same location and key restores everything.

It is unlocked by --key-file (CAIRN_KEY_FILE), --password-file
(CAIRN_PASSWORD_FILE), CAIRN_PASSWORD, or a password typed on the terminal.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&a.repo, "repo", "", "repository location: a directory, s3://BUCKET[/PREFIX] or swift://CONTAINER[/PREFIX] (env CAIRN_REPO)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "report retried requests on stderr")
	pf.StringVar(&a.passwordFile, "password-file", "", "read the password from this file (env CAIRN_PASSWORD_FILE)")
	pf.StringVar(&a.keyFile, "key-file", "", "unlock with this key file (env CAIRN_KEY_FILE)")
	pf.IntVar(&a.transfers, "transfers", 0, "concurrent requests to the store (default 4 for a directory, 16 for S3 and Swift)")
	pf.IntVar(&a.workers, "workers", 0, "goroutines that hash, compress and encrypt (default: number of CPUs)")
	pf.IntVar(&a.readers, "readers", 0, "concurrent reads of a backup source (default 1)")
	pf.IntVar(&a.readAhead, "read-ahead", 0, "chunks read ahead of the workers (default 12)")
	cmd.AddCommand(a.initCommand(), a.keyCommand(), a.backupCommand(), a.restoreCommand(), a.lsCommand(),
		a.showCommand(), a.diffCommand(), a.forgetCommand(), a.gcCommand(), a.checkCommand())
	return cmd
}

func (a *app) repoOptions(st *store) repo.Options {
	transfers := a.transfers
	if transfers == 0 && st.remote {
		transfers = 16 // a remote store needs requests in flight to stay busy
	}
	return repo.Options{Transfers: transfers, Workers: a.workers, Readers: a.readers, ReadAhead: a.readAhead, KDF: a.kdf}
}

// kdfFlags adds the (hidden) cost parameters of new keys; tests use cheap
// ones, the defaults follow RFC 9106.
func (a *app) kdfFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Uint32Var(&a.kdf.Time, "kdf-time", crypto.DefaultKDF.Time, "argon2id passes for new keys")
	f.Uint32Var(&a.kdf.MemoryKiB, "kdf-memory", crypto.DefaultKDF.MemoryKiB, "argon2id memory in KiB for new keys")
	f.Uint8Var(&a.kdf.Threads, "kdf-threads", crypto.DefaultKDF.Threads, "argon2id lanes for new keys")
	for _, n := range []string{"kdf-time", "kdf-memory", "kdf-threads"} {
		_ = f.MarkHidden(n)
	}
}

// open unlocks the repository named by the flags. The caller closes it,
// which closes the store.
func (a *app) open(ctx context.Context) (r *repo.Repository, err error) {
	st, err := a.openStore(ctx, a.env("CAIRN_REPO", a.repo), false)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeStore(st.backend)
		}
	}()
	a.meter = st.meter
	// Fail on a missing or foreign repository before asking for a password.
	if _, err := repo.ReadConfig(ctx, st.backend); err != nil {
		return nil, err
	}
	secret, err := a.secret(false, false)
	if err != nil {
		return nil, err
	}
	return repo.Open(ctx, st.backend, secret, a.repoOptions(st))
}

func (a *app) initCommand() *cobra.Command {
	var chunkSize, compression, margin string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository",
		Long: `Create a repository. With --key-file, a missing key file is created with a
random key; keep a copy of it, the repository cannot be opened without it.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := parseSize(chunkSize)
			if err != nil {
				return usageError{err}
			}
			level, err := format.ParseLevel(compression)
			if err != nil {
				return usageError{err}
			}
			st, err := a.openStore(cmd.Context(), a.env("CAIRN_REPO", a.repo), true)
			if err != nil {
				return err
			}
			be := st.backend
			var r *repo.Repository
			defer func() {
				if r == nil { // no repository took the store over
					closeStore(be)
				}
			}()
			gc := st.gcParams()
			if margin != "" {
				d, err := time.ParseDuration(margin)
				if err != nil || d < 0 {
					return usageError{fmt.Errorf("--consistency-margin %q: want a duration such as 30s", margin)}
				}
				gc.ConsistencyMargin = format.Duration(d)
			}
			secret, err := a.secret(true, true)
			if err != nil {
				return err
			}
			r, err = repo.Init(cmd.Context(), be, secret, repo.InitOptions{ChunkSize: size, Compression: level, GC: gc}, a.repoOptions(st))
			if err != nil {
				return err
			}
			defer r.Close()
			cfg := r.Config()
			if a.json {
				return a.printJSON(map[string]any{"id": cfg.ID, "location": be.Location(), "chunk_size": cfg.ChunkSize, "compression": cfg.Compression, "key": r.KeyID()})
			}
			fmt.Fprintf(a.stdout, "created repository %s at %s (chunk size %s, compression %s)\n", cfg.ID.Short(), be.Location(), formatBytes(cfg.ChunkSize), cfg.Compression)
			return nil
		},
	}
	a.kdfFlags(cmd)
	cmd.Flags().StringVar(&chunkSize, "chunk-size", "4MiB", "size of the chunks block data is cut into")
	cmd.Flags().StringVar(&compression, "compression", "fastest", "default compression: fastest (zstd 1), default (zstd 3), better, best, off")
	cmd.Flags().StringVar(&margin, "consistency-margin", "", "longest the store's listings may lag writes (default: 0 for directories and S3, 30s for Swift)")
	return cmd
}

func (a *app) keyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Manage the keys that unlock a repository"}
	var newKeyFile, newPasswordFile string
	addFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&newKeyFile, "new-key-file", "", "protect the new key with this key file (created if missing)")
		c.Flags().StringVar(&newPasswordFile, "new-password-file", "", "protect the new key with the password in this file (or CAIRN_NEW_PASSWORD)")
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a key",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			secret, err := a.newSecret(newKeyFile, newPasswordFile)
			if err != nil {
				return err
			}
			id, err := r.AddKey(cmd.Context(), secret)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"id": id, "kind": secret.Kind})
			}
			fmt.Fprintf(a.stdout, "added key %s\n", id.Short())
			return nil
		},
	}
	addFlags(add)
	a.kdfFlags(add)
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Replace the key in use with one for a new password or key file",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			secret, err := a.newSecret(newKeyFile, newPasswordFile)
			if err != nil {
				return err
			}
			old := r.KeyID()
			id, err := r.ChangeSecret(cmd.Context(), secret)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"id": id, "replaced": old})
			}
			fmt.Fprintf(a.stdout, "replaced key %s with %s\n", old.Short(), id.Short())
			return nil
		},
	}
	passwd.Flags().StringVar(&newKeyFile, "new-key-file", "", "protect the new key with this key file (created if missing)")
	passwd.Flags().StringVar(&newPasswordFile, "new-password-file", "", "protect the new key with the password in this file (or CAIRN_NEW_PASSWORD)")
	a.kdfFlags(passwd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List keys",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := r.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(keys)
			}
			var rows [][]string
			for _, k := range keys {
				cur := ""
				if k.Current {
					cur = "*"
				}
				rows = append(rows, []string{cur + k.ID.Short(), k.Kind, k.Created.Local().Format(time.DateTime), k.Username, k.Hostname})
			}
			table(a.stdout, []string{"ID", "KIND", "CREATED", "USER", "HOST"}, rows)
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove KEY",
		Short: "Remove a key (not the last one, nor the one in use)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			id, err := r.ResolveKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := r.RemoveKey(cmd.Context(), id); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"removed": id})
			}
			fmt.Fprintf(a.stdout, "removed key %s\n", id.Short())
			return nil
		},
	}
	cmd.AddCommand(add, list, remove, passwd)
	return cmd
}

func parseTags(tags []string) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("tag %q: want KEY=VALUE", t)}
		}
		out[k] = v
	}
	return out, nil
}

func (a *app) backupCommand() *cobra.Command {
	var tags []string
	var parent, changedFile, compression, volumeRef, snapshotRef, name string
	var noParent, stdin bool
	cmd := &cobra.Command{
		Use:   "backup SOURCE | --volume VOLUME | --snapshot SNAPSHOT | --stdin --name NAME",
		Short: "Back up a raw image file, a block device, a volume or snapshot, or a stream",
		Long: `Back up a raw image file or block device. Holes and zero chunks are recorded,
not stored. Chunks already in the repository are never stored again.

The parent (by default the latest backup of the same source path) lets
unchanged chunks be recognised. With --changed-extents, only the byte ranges
listed in the file are read; every other chunk is taken from the parent. The
file format is in docs/format.md; 'cairn repo diff' writes it.

With --volume or --snapshot the source is a volume of the data directory
(--data-dir). A volume is snapshotted first and the snapshot kept as the
base of its next incremental (the previous base is then deleted). When the
parent backup's snapshot still exists, only the extents the volume engine
lists as changed since it are read.

With --stdin the backup reads a stream of unknown length from standard
input (a database dump, a tar stream) and keeps it under --name, cut into
content-defined chunks: a later dump shares every chunk but those around
what changed, and no temporary copy is made on disk. For the best dedup,
turn the tool's own compression off (pg_dump -Fc -Z0); the chunks are
compressed. 'repo restore BACKUP --stdout' writes the stream back. A tool
that dies mid-way may leave a stream that just ends: use 'set -o pipefail'
so its failure is seen, and check the restored stream with the tool.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			fromVolume := volumeRef != "" || snapshotRef != ""
			if stdin || name != "" {
				switch {
				case !stdin:
					return usageError{errors.New("--name names a stream read with --stdin")}
				case fromVolume || len(args) > 0:
					return usageError{errors.New("give a SOURCE, --volume/--snapshot or --stdin, not several")}
				case name == "":
					return usageError{errors.New("--stdin needs --name, the name of the stream (a database, say)")}
				case parent != "" || noParent || changedFile != "":
					return usageError{errors.New("--parent, --no-parent and --changed-extents are for images and volumes; a stream dedups against every stored chunk")}
				}
			}
			switch {
			case volumeRef != "" && snapshotRef != "":
				return usageError{errors.New("give --volume or --snapshot, not both")}
			case fromVolume && len(args) > 0:
				return usageError{errors.New("give a SOURCE or --volume/--snapshot, not both")}
			case !fromVolume && !stdin && len(args) != 1:
				return usageError{errors.New("give the SOURCE to back up (a file or block device), or --volume/--snapshot")}
			case fromVolume && changedFile != "":
				return usageError{errors.New("--changed-extents is for file sources; volumes track their own changes")}
			}
			tagMap, err := parseTags(tags)
			if err != nil {
				return err
			}
			opts := repo.BackupOptions{Tags: tagMap, NoParent: noParent}
			if compression != "" {
				level, err := format.ParseLevel(compression)
				if err != nil {
					return usageError{err}
				}
				opts.Compression = &level
			}
			if changedFile != "" {
				if noParent {
					return usageError{errors.New("--changed-extents needs a parent; it cannot go with --no-parent")}
				}
				f, err := os.Open(changedFile)
				if err != nil {
					return fmt.Errorf("changed extents: %w", err)
				}
				opts.Changed, err = extents.Parse(f)
				f.Close()
				if err != nil {
					return err
				}
			}
			if fromVolume {
				return a.backupVolume(ctx, volumeRef, snapshotRef, parent, opts)
			}
			if stdin {
				return a.backupStdin(ctx, name, opts)
			}
			src, err := blockdev.OpenSource(args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			opts.SourceName = args[0]
			if !src.IsBlockDevice() {
				if abs, err := filepath.Abs(args[0]); err == nil {
					opts.SourceName = abs
				}
			}
			r, err := a.openForBackup(ctx, parent, &opts)
			if err != nil {
				return err
			}
			defer r.Close()
			stop := a.showProgress("backup", opts.Progress, backupDetail)
			m, err := r.Backup(ctx, src, opts)
			stop()
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(struct {
					*format.Manifest
					Requests metered.Counts `json:"requests"`
				}{m, a.meter.Counts()})
			}
			a.printBackupSummary(m)
			a.printRequests()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&tags, "tag", nil, "attach KEY=VALUE to the backup (repeatable)")
	f.StringVar(&parent, "parent", "", "compare with this backup instead of the latest of the same source")
	f.BoolVar(&noParent, "no-parent", false, "compare with no parent (chunks are still deduplicated)")
	f.StringVar(&changedFile, "changed-extents", "", "read only the byte ranges listed in this file (relative to the parent)")
	f.StringVar(&compression, "compression", "", "compression for this backup (default: the repository's)")
	f.StringVar(&volumeRef, "volume", "", "back up this volume (through a snapshot kept as the next incremental's base)")
	f.StringVar(&snapshotRef, "snapshot", "", "back up this snapshot of a volume")
	f.StringVar(&a.dataDirFlag, "data-dir", "", "the volumes' data directory (with --volume/--snapshot)")
	f.BoolVar(&stdin, "stdin", false, "back up the stream read from standard input (a dump, a tar stream)")
	f.StringVar(&name, "name", "", "the name of the stream read with --stdin")
	return cmd
}

// backupStdin backs up standard input as a stream named name, with the
// tags and compression of opts.
func (a *app) backupStdin(ctx context.Context, name string, opts repo.BackupOptions) error {
	if term.IsTerminal(int(a.stdin.Fd())) {
		return usageError{errors.New("--stdin reads a stream piped in, and standard input is a terminal")}
	}
	r, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	p := &repo.Progress{}
	stop := a.showProgress("backup", p, backupDetail)
	m, err := r.BackupStream(ctx, a.stdin, repo.StreamOptions{Name: name, Tags: opts.Tags, Compression: opts.Compression, Progress: p})
	stop()
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(struct {
			*format.Manifest
			Requests metered.Counts `json:"requests"`
		}{m, a.meter.Counts()})
	}
	a.printBackupSummary(m)
	a.printRequests()
	return nil
}

// openForBackup opens the repository, resolves --parent into opts and
// gives opts a progress record. The caller closes the repository.
func (a *app) openForBackup(ctx context.Context, parent string, opts *repo.BackupOptions) (*repo.Repository, error) {
	r, err := a.open(ctx)
	if err != nil {
		return nil, err
	}
	if parent != "" {
		m, err := r.ResolveBackup(ctx, parent)
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("parent: %w", err)
		}
		opts.Parent = &m.ID
	}
	opts.Progress = &repo.Progress{}
	return r, nil
}

// backupVolume backs up a volume or snapshot of the data directory.
func (a *app) backupVolume(ctx context.Context, volumeRef, snapshotRef, parent string, opts repo.BackupOptions) error {
	ops, done, err := a.volumeOps(ctx)
	if err != nil {
		return err
	}
	defer done()
	req := volbackup.Request{Options: opts, Logger: a.logger()}
	if volumeRef != "" {
		v, err := volumectl.ResolveVolume(ctx, ops, volumeRef)
		if err != nil {
			return err
		}
		req.Volume = v.ID
	} else {
		s, err := volumectl.ResolveSnapshot(ctx, ops, snapshotRef)
		if err != nil {
			return err
		}
		req.Snapshot = s.ID
	}
	r, err := a.openForBackup(ctx, parent, &req.Options)
	if err != nil {
		return err
	}
	defer r.Close()
	stop := a.showProgress("backup", req.Options.Progress, backupDetail)
	res, err := volbackup.Backup(ctx, r, ops, req)
	stop()
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(struct {
			*format.Manifest
			Snapshot     cairn.ID       `json:"snapshot"`
			Tracked      bool           `json:"changed_block_tracking"`
			Reason       string         `json:"full_read_reason,omitempty"`
			ChangedBytes int64          `json:"changed_bytes"`
			Requests     metered.Counts `json:"requests"`
		}{res.Manifest, res.Snapshot, res.Tracked, res.Reason, res.ChangedBytes, a.meter.Counts()})
	}
	a.printBackupSummary(res.Manifest)
	if res.Tracked {
		fmt.Fprintf(a.stdout, "  tracking   %s changed since the parent's snapshot\n", formatBytes(res.ChangedBytes))
	} else {
		fmt.Fprintf(a.stdout, "  tracking   not used: %s\n", res.Reason)
	}
	fmt.Fprintf(a.stdout, "  snapshot   %s\n", res.Snapshot)
	a.printRequests()
	return nil
}

func (a *app) printBackupSummary(m *format.Manifest) {
	s := m.Stats
	d := time.Duration(s.Duration)
	parent := "none"
	if m.Parent != nil {
		parent = m.Parent.Short()
	}
	fmt.Fprintf(a.stdout, "backup %s of %s (%s) done in %s, %s\n", m.ID.Short(), m.Source, formatBytes(m.Size), d.Round(time.Millisecond), rate(m.Size, d))
	if m.IsStream() {
		fmt.Fprintf(a.stdout, "  read       %s\n", formatBytes(s.BytesRead))
	} else {
		fmt.Fprintf(a.stdout, "  parent     %s\n", parent)
		fmt.Fprintf(a.stdout, "  read       %s\n", formatBytes(s.BytesRead))
		fmt.Fprintf(a.stdout, "  unchanged  %s\n", formatBytes(s.BytesUnchanged))
	}
	fmt.Fprintf(a.stdout, "  dedup      %s\n", formatBytes(s.BytesDedup))
	fmt.Fprintf(a.stdout, "  zero       %s\n", formatBytes(s.BytesZero))
	fmt.Fprintf(a.stdout, "  new        %s in %d chunks, stored as %s (%s)\n", formatBytes(s.BytesNew), s.ChunksNew, formatBytes(s.BytesStored), ratio(s.BytesStored, s.BytesNew))
	if m.Stream != nil {
		fmt.Fprintf(a.stdout, "  blake3     %s\n", m.Stream.Hash)
	}
}

func (a *app) printRequests() {
	c := a.meter.Counts()
	fmt.Fprintf(a.stdout, "  requests %d to the store: %d PUT (%s), %d GET (%s), %d HEAD, %d LIST, %d DELETE\n",
		c.Requests(), c.Puts, formatBytes(c.PutBytes), c.Gets, formatBytes(c.GetBytes), c.Stats, c.Lists, c.Deletes)
}

func (a *app) restoreCommand() *cobra.Command {
	var overwrite, stdout bool
	cmd := &cobra.Command{
		Use:   "restore BACKUP TARGET | restore BACKUP --stdout",
		Short: "Restore a backup to a file or block device, or a stream to standard output",
		Long: `Restore a backup (an ID, a unique ID prefix, or "latest") to a file or block
device. A new file is created sparse: zero chunks become holes. Writing into
an existing file or a block device needs --overwrite; only what differs is
written (a delta restore), and the rest is counted as skipped. Every chunk is
authenticated before any of it is written.

With --stdout a stream backup ('repo backup --stdin') is written, in order,
to standard output (into pg_restore, say), and its BLAKE3 checked at the
end; the report goes to standard error. A failed restore exits non-zero
after writing part of the stream: use 'set -o pipefail'.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if stdout {
				if len(args) != 1 {
					return usageError{errors.New("--stdout takes the BACKUP only, no TARGET")}
				}
				return nil
			}
			return exactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if stdout {
				return a.restoreStdout(ctx, args[0])
			}
			r, err := a.open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			m, err := r.ResolveBackup(ctx, args[0])
			if err != nil {
				return err
			}
			t, err := blockdev.OpenTarget(args[1], m.Size, overwrite)
			if err != nil {
				if errors.Is(err, cairn.ErrExists) {
					return usageError{err}
				}
				return err
			}
			defer t.Close()
			p := &repo.Progress{}
			stop := a.showProgress("restore", p, restoreDetail)
			stats, err := r.Restore(ctx, m, t, p)
			stop()
			if err != nil {
				return err
			}
			if err := t.Close(); err != nil {
				return fmt.Errorf("closing target: %w", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"backup": m.ID, "target": args[1], "stats": stats, "requests": a.meter.Counts()})
			}
			fmt.Fprintf(a.stdout, "restored %s (%s) to %s in %s, %s\n", m.ID.Short(), formatBytes(m.Size), args[1], stats.Duration.Round(time.Millisecond), rate(m.Size, stats.Duration))
			fmt.Fprintf(a.stdout, "  written  %s\n  zero     %s\n  skipped  %s (already correct in the target)\n  fetched  %s in %d chunks\n",
				formatBytes(stats.BytesWritten), formatBytes(stats.BytesZero), formatBytes(stats.BytesSkipped), formatBytes(stats.BytesFetched), stats.ChunksFetched)
			a.printRequests()
			return nil
		},
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "write into an existing non-empty file or a block device")
	cmd.Flags().BoolVar(&stdout, "stdout", false, "write a stream backup to standard output")
	return cmd
}

// restoreStdout writes stream backup ref to standard output. Reports,
// errors included, go to standard error: standard output is the stream's.
func (a *app) restoreStdout(ctx context.Context, ref string) error {
	out := a.stdout
	a.stdout = a.stderr
	r, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	m, err := r.ResolveBackup(ctx, ref)
	if err != nil {
		return err
	}
	p := &repo.Progress{}
	stop := a.showProgress("restore", p, restoreDetail)
	stats, err := r.RestoreStream(ctx, m, out, p)
	stop()
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(map[string]any{"backup": m.ID, "target": "stdout", "stats": stats, "requests": a.meter.Counts()})
	}
	fmt.Fprintf(a.stdout, "restored %s (%s) to standard output in %s, %s, blake3 %s\n", m.ID.Short(), formatBytes(m.Size),
		stats.Duration.Round(time.Millisecond), rate(m.Size, stats.Duration), m.Stream.Hash)
	fmt.Fprintf(a.stdout, "  fetched  %s in %d chunks\n", formatBytes(stats.BytesFetched), stats.ChunksFetched)
	a.printRequests()
	return nil
}

func (a *app) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List backups",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			list, err := r.Backups(cmd.Context())
			if err != nil {
				return err
			}
			for name, err := range list.Damaged {
				fmt.Fprintf(a.stderr, "warning: backup %s is unreadable: %v\n", name, err)
			}
			if a.json {
				if list.Backups == nil {
					list.Backups = []*format.Manifest{}
				}
				return a.printJSON(list.Backups)
			}
			var rows [][]string
			for _, m := range list.Backups {
				parent := ""
				if m.Parent != nil {
					parent = m.Parent.Short()
				}
				rows = append(rows, []string{m.ID.Short(), m.Time.Local().Format(time.DateTime), m.Kind, formatBytes(m.Size),
					formatBytes(m.Stats.BytesStored), parent, m.Source, formatTags(m.Tags)})
			}
			table(a.stdout, []string{"ID", "TIME", "KIND", "SIZE", "STORED", "PARENT", "SOURCE", "TAGS"}, rows)
			return nil
		},
	}
}

func formatTags(tags map[string]string) string {
	var parts []string
	for k, v := range tags {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (a *app) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show BACKUP",
		Short: "Show a backup",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			m, err := r.ResolveBackup(ctx, args[0])
			if err != nil {
				return err
			}
			entries, err := r.Index(ctx, m)
			if err != nil {
				return err
			}
			var zero int64
			chunks := map[format.ChunkID]bool{}
			for _, e := range entries {
				if e.Zero {
					zero += e.Length
				} else {
					chunks[e.Chunk] = true
				}
			}
			if a.json {
				return a.printJSON(map[string]any{"backup": m, "chunks": len(chunks), "zero_bytes": zero})
			}
			parent := "none"
			if m.Parent != nil {
				parent = m.Parent.String()
			}
			w := a.stdout
			fmt.Fprintf(w, "id           %s\n", m.ID)
			fmt.Fprintf(w, "kind         %s\n", m.Kind)
			fmt.Fprintf(w, "time         %s\n", m.Time.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "data time    %s\n", m.DataTime.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "source       %s\n", m.Source)
			fmt.Fprintf(w, "host         %s\n", m.Hostname)
			fmt.Fprintf(w, "size         %s (%d bytes)\n", formatBytes(m.Size), m.Size)
			if m.Stream != nil {
				c := m.Stream.Chunker
				fmt.Fprintf(w, "blake3       %s\n", m.Stream.Hash)
				fmt.Fprintf(w, "chunk size   %s to %s, content-defined (%s)\n", formatBytes(c.MinSize), formatBytes(c.MaxSize), c.Algorithm)
			} else {
				fmt.Fprintf(w, "chunk size   %s\n", formatBytes(m.ChunkSize))
			}
			fmt.Fprintf(w, "chunks       %d distinct, %s zero\n", len(chunks), formatBytes(zero))
			fmt.Fprintf(w, "compression  %s\n", m.Compression)
			fmt.Fprintf(w, "parent       %s\n", parent)
			fmt.Fprintf(w, "tags         %s\n", formatTags(m.Tags))
			fmt.Fprintf(w, "duration     %s\n", time.Duration(m.Stats.Duration).Round(time.Millisecond))
			fmt.Fprintf(w, "read         %s\n", formatBytes(m.Stats.BytesRead))
			fmt.Fprintf(w, "new          %s in %d chunks, stored as %s\n", formatBytes(m.Stats.BytesNew), m.Stats.ChunksNew, formatBytes(m.Stats.BytesStored))
			return nil
		},
	}
}

func (a *app) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff A B",
		Short: "List the byte ranges that differ between two backups",
		Long: `List the byte ranges whose content differs between backups A and B, from
their indexes alone. The output is a changed-extents file: with A as parent,
it can be passed to 'repo backup --changed-extents'.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			ma, err := r.ResolveBackup(ctx, args[0])
			if err != nil {
				return err
			}
			mb, err := r.ResolveBackup(ctx, args[1])
			if err != nil {
				return err
			}
			d, err := r.Diff(ctx, ma, mb)
			if err != nil {
				return err
			}
			if a.json {
				if d.Extents == nil {
					d.Extents = []cairn.Extent{}
				}
				return a.printJSON(d)
			}
			fmt.Fprintf(a.stdout, "# %s (%d bytes) -> %s (%d bytes): %d extents, %s changed\n",
				ma.ID.Short(), ma.Size, mb.ID.Short(), mb.Size, len(d.Extents), formatBytes(extents.Total(d.Extents)))
			return extents.WriteText(a.stdout, d)
		},
	}
}

func (a *app) forgetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "forget BACKUP...",
		Short: "Remove backups (their data is freed by gc)",
		Long: `Remove backups. Other backups never depend on them: every backup restores on
its own. The chunks only they used are deleted by the next 'repo gc'.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			var ids []cairn.ID
			for _, ref := range args {
				m, err := r.ResolveBackup(ctx, ref)
				if err != nil {
					return err
				}
				ids = append(ids, m.ID)
			}
			if err := r.Forget(ctx, ids); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"forgotten": ids})
			}
			for _, id := range ids {
				fmt.Fprintf(a.stdout, "forgot %s\n", id.Short())
			}
			return nil
		},
	}
}

func (a *app) gcCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete chunks no backup references",
		Long: `Delete chunks that no backup references. Safe while backups run: chunks a
running backup may still use are kept (see docs/format.md), and what must
wait is reported and freed by a later gc.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			stats, err := r.GC(cmd.Context(), repo.GCOptions{DryRun: dryRun})
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(stats)
			}
			if dryRun {
				fmt.Fprintf(a.stdout, "would free %d chunks (%s); %d of %d chunks are referenced by %d backups\n",
					stats.ChunksCondemned, formatBytes(stats.BytesPending), stats.ChunksReferenced, stats.ChunksStored, stats.Backups)
				return nil
			}
			fmt.Fprintf(a.stdout, "freed %s in %d chunks; %d chunks referenced by %d backups remain\n",
				formatBytes(stats.BytesFreed), stats.ChunksDeleted, stats.ChunksReferenced, stats.Backups)
			if stats.ChunksPending > 0 {
				fmt.Fprintf(a.stdout, "%d chunks (%s) wait for a later gc:\n", stats.ChunksPending, formatBytes(stats.BytesPending))
				for _, p := range stats.Pending {
					fmt.Fprintf(a.stdout, "  %s\n", p)
				}
			}
			if n := stats.IndexPartsDeleted + stats.SessionsRemoved + stats.TemporaryRemoved; n > 0 {
				fmt.Fprintf(a.stdout, "removed %d orphaned index parts, %d interrupted sessions, %d temporary files\n",
					stats.IndexPartsDeleted, stats.SessionsRemoved, stats.TemporaryRemoved)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be freed without changing anything")
	return cmd
}

func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v <= 0 || v > 100 {
		return 0, usageError{fmt.Errorf("--read-data-subset %q: want a percentage in (0, 100]", s)}
	}
	return v / 100, nil
}

func (a *app) checkCommand() *cobra.Command {
	var readData bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository",
		Long: `Verify keys, manifests and indexes, and that every referenced chunk is stored.
--read-data also reads, authenticates and hashes every chunk; --read-data-subset
does so for a random share of the referenced chunks. Problems name the
backups they affect; the exit status is 3 when any is found.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := repo.CheckOptions{ReadData: readData}
			if subset != "" {
				if readData {
					return usageError{errors.New("--read-data and --read-data-subset exclude each other")}
				}
				v, err := parsePercent(subset)
				if err != nil {
					return err
				}
				opts.ReadDataSubset = v
			}
			r, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			opts.Progress = &repo.Progress{}
			stop := a.showProgress("check", opts.Progress, checkDetail)
			rep, err := r.Check(cmd.Context(), opts)
			stop()
			if err != nil {
				return err
			}
			if a.json {
				if rep.Problems == nil {
					rep.Problems = []repo.Problem{}
				}
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "checked %d backups and %d chunks", rep.Backups, rep.Chunks)
				if rep.ChunksRead > 0 {
					fmt.Fprintf(a.stdout, ", read %d chunks (%s)", rep.ChunksRead, formatBytes(rep.BytesRead))
				}
				fmt.Fprintln(a.stdout)
				for _, n := range rep.Notes {
					fmt.Fprintf(a.stdout, "note: %s\n", n)
				}
				for _, p := range rep.Problems {
					fmt.Fprintf(a.stdout, "PROBLEM: %s\n", p)
				}
				if len(rep.Problems) == 0 {
					fmt.Fprintln(a.stdout, "no problems found")
				}
			}
			if len(rep.Problems) > 0 {
				return &exitStatusError{code: exitCheckFailed, err: fmt.Errorf("%d problems found, affecting %d backups", len(rep.Problems), rep.AffectedCount)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "read and verify every chunk")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "read and verify this percentage of the referenced chunks, e.g. 10%")
	return cmd
}
