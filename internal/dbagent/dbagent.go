// Package dbagent is where cairn meets a database server: it initialises
// a data directory, gives a supervisor the server's command line, waits
// for the server to answer, creates databases and users, quiesces the
// server for a volume snapshot, streams physical and logical backups and
// restores each kind into a new data directory.
//
// An Engine is one installed server version (PostgreSQL in package
// postgres, MariaDB in package mariadb); an Instance is one data
// directory with its address. Both implementations run the conformance
// suite in dbagenttest against real servers.
//
// The agent runs the server as the datastore's own OS user (postgres,
// mysql) when it runs as root, and owns a run directory for the server's
// unix socket and pid file; the data directory lives on the instance's
// volume and holds nothing that names the host, the port or the run
// directory, so a copy of it (a snapshot, a clone, a restore) starts
// anywhere with another Config.
package dbagent

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// Datastore types, as Trove names them.
const (
	PostgreSQL = "postgresql"
	MariaDB    = "mariadb"
)

// Datastore is one database server version installed on the host.
type Datastore struct {
	// Type is PostgreSQL or MariaDB.
	Type string `json:"type"`
	// Version is the major version, Trove's datastore version name: "15", "10.11".
	Version string `json:"version"`
	// Release is the full version the server reports: "15.18", "10.11.19".
	Release string `json:"release"`
	// Server is the path of the server program.
	Server string `json:"server"`
	// Bin is the directory holding the datastore's client and backup tools.
	Bin string `json:"bin"`
}

// Finder lists the installed versions of one datastore type.
type Finder func(ctx context.Context) ([]Datastore, error)

// Datastores lists the versions the finders report, ordered by type and
// version: what `GET /datastores` shows.
func Datastores(ctx context.Context, finders ...Finder) ([]Datastore, error) {
	var out []Datastore
	for _, find := range finders {
		list, err := find(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Release < out[j].Release
	})
	return out, nil
}

// Config is where an instance lives and how it is reached.
type Config struct {
	// DataDir is the data directory, on the instance's volume: a
	// directory below its mount point, not the mount point itself (whose
	// lost+found PostgreSQL refuses and MariaDB would take for a
	// database). Absolute.
	DataDir string
	// RunDir holds the server's unix socket and pid file and the agent's
	// scratch files: a directory the agent owns, off the volume, with a
	// short path (a socket's path has at most 107 bytes). Absolute.
	RunDir string
	// Address is the TCP address the server listens on, e.g. 127.0.0.1.
	Address string
	// Port is the TCP port the server listens on.
	Port int
	// Settings are extra server settings (name to value) given on the
	// server's command line after the agent's own, e.g. memory sizes.
	Settings map[string]string
}

var settingName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// Validate checks the fields every engine needs.
func (c Config) Validate() error {
	if !filepath.IsAbs(c.DataDir) || !filepath.IsAbs(c.RunDir) {
		return fmt.Errorf("instance config: data and run directories must be absolute paths: %w", cairn.ErrInvalid)
	}
	if c.Address == "" {
		return fmt.Errorf("instance config: no listen address: %w", cairn.ErrInvalid)
	}
	if c.Port <= 0 || c.Port > 65535 {
		return fmt.Errorf("instance config: port %d: %w", c.Port, cairn.ErrInvalid)
	}
	if len(filepath.Join(c.RunDir, ".s.PGSQL.65535")) > 107 {
		return fmt.Errorf("instance config: run directory %s is too long for a unix socket: %w", c.RunDir, cairn.ErrInvalid)
	}
	for name, value := range c.Settings {
		if !settingName.MatchString(name) {
			return fmt.Errorf("instance config: setting name %q: %w", name, cairn.ErrInvalid)
		}
		for _, r := range value {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("instance config: setting %s has a control character: %w", name, cairn.ErrInvalid)
			}
		}
	}
	return nil
}

// CheckOwnSettings refuses extra settings that would override what an
// agent gives its server itself (its address, its durability, its WAL or
// binary log, its recovery): extra settings come after the agent's on
// the command line, so they would win. own reports whether a name,
// lower-cased, is the agent's. An agent's Instance calls it; it does no
// I/O.
func (c Config) CheckOwnSettings(own func(name string) bool) error {
	for _, kv := range c.SortedSettings() {
		if own(strings.ToLower(kv[0])) {
			return fmt.Errorf("instance config: setting %s is the agent's own and cannot be changed: %w", kv[0], cairn.ErrInvalid)
		}
	}
	return nil
}

// SortedSettings returns the settings ordered by name, so a command line
// built from them is the same every time.
func (c Config) SortedSettings() [][2]string {
	out := make([][2]string, 0, len(c.Settings))
	for k, v := range c.Settings {
		out = append(out, [2]string{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// Database is one database to create (Trove's `databases` entries).
type Database struct {
	Name string `json:"name"`
	// CharacterSet and Collate are optional; the server's defaults apply
	// when empty.
	CharacterSet string `json:"character_set,omitempty"`
	Collate      string `json:"collate,omitempty"`
}

// User is one login to create (Trove's `users` entries), granted all
// privileges on the named databases.
type User struct {
	Name      string   `json:"name"`
	Password  string   `json:"password"`
	Databases []string `json:"databases,omitempty"`
}

// Method is how a backup was taken.
type Method string

// The backup methods.
const (
	// Snapshot: the server quiesced while the volume was snapshotted.
	Snapshot Method = "snapshot"
	// Physical: the server's own physical backup tool, streamed.
	Physical Method = "physical"
	// Logical: a dump, streamed.
	Logical Method = "logical"
)

// Record describes one backup: where its data stands, what a restore
// needs besides the stream, and how long the server was held. The
// service stores it with the backup.
type Record struct {
	Datastore Datastore `json:"datastore"`
	Method    Method    `json:"method"`
	Label     string    `json:"label,omitempty"`
	// Started and Finished bound the backup in wall-clock time; Time is
	// when the backup's point was read from the server.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Time     time.Time `json:"time"`
	// Bytes is the length of the stream written (0 for a snapshot).
	Bytes int64 `json:"bytes,omitempty"`

	// PostgreSQL holds the point of a PostgreSQL backup.
	PostgreSQL *PostgresPoint `json:"postgresql,omitempty"`
	// MariaDB holds the point of a MariaDB backup.
	MariaDB *MariaDBPoint `json:"mariadb,omitempty"`
	// Quiesce holds the timings of a snapshot backup's quiesce.
	Quiesce *QuiesceTimes `json:"quiesce,omitempty"`
}

// PostgresPoint is where a PostgreSQL backup stands in the WAL.
type PostgresPoint struct {
	// Timeline is the timeline the backup started on.
	Timeline uint32 `json:"timeline"`
	// StartLSN is where the backup's WAL starts (the redo point of its
	// checkpoint). StopLSN is the backup's end: a restore of a snapshot
	// or physical backup holds exactly the transactions whose commit
	// record ends at or before it. For a logical backup the two bound the
	// moments the dumps' snapshots were taken.
	StartLSN LSN `json:"start_lsn"`
	StopLSN  LSN `json:"stop_lsn"`
	// WALSegmentSize is the server's WAL segment size in bytes.
	WALSegmentSize int64 `json:"wal_segment_size,omitempty"`
	// BackupLabel and TablespaceMap are what pg_backup_stop returned for a
	// snapshot backup; a restore writes them into the data directory.
	BackupLabel   string `json:"backup_label,omitempty"`
	TablespaceMap string `json:"tablespace_map,omitempty"`
	// Databases are the databases a logical backup holds.
	Databases []string `json:"databases,omitempty"`
}

// MariaDBPoint is where a MariaDB backup stands in the binary log and
// the InnoDB redo log.
type MariaDBPoint struct {
	// BinlogFile and BinlogPos are the binary log coordinates of the
	// backup's point; GTIDBinlogPos the GTID position at that point
	// (@@gtid_binlog_pos), GTIDCurrentPos @@gtid_current_pos when known.
	BinlogFile     string `json:"binlog_file,omitempty"`
	BinlogPos      uint64 `json:"binlog_pos,omitempty"`
	GTIDBinlogPos  string `json:"gtid_binlog_pos,omitempty"`
	GTIDCurrentPos string `json:"gtid_current_pos,omitempty"`
	// FromLSN, ToLSN and LastLSN are mariadb-backup's InnoDB LSNs: an
	// incremental backup holds the pages changed after FromLSN (its
	// parent's ToLSN).
	FromLSN     uint64 `json:"from_lsn,omitempty"`
	ToLSN       uint64 `json:"to_lsn,omitempty"`
	LastLSN     uint64 `json:"last_lsn,omitempty"`
	Incremental bool   `json:"incremental,omitempty"`
	// BinlogGeneration is the binary log's generation at the backup's
	// point (BinlogState.Generation); 0 is 1.
	BinlogGeneration uint32 `json:"binlog_generation,omitempty"`
}

// QuiesceTimes are the timings of a snapshot backup's quiesce.
type QuiesceTimes struct {
	// Acquire is how long the quiesce took to get.
	Acquire time.Duration `json:"acquire_ns"`
	// Held is how long the server was held: for MariaDB the time commits
	// were blocked (from BACKUP STAGE BLOCK_COMMIT being sent to BACKUP
	// STAGE END returning), for PostgreSQL the time from pg_backup_start
	// returning to pg_backup_stop returning (nothing is blocked then).
	Held time.Duration `json:"held_ns"`
	// Release is how long releasing took, including writing the overlay.
	Release time.Duration `json:"release_ns"`
}

// QuiesceOptions bound a quiesce.
type QuiesceOptions struct {
	// Label names the backup inside the server (PostgreSQL's backup label).
	Label string
	// Timeout bounds the wait for the quiesce: when it cannot be had in
	// time (a long transaction or DDL holds a lock), Quiesce fails and the
	// server is left as it was. 0 means 30 s.
	Timeout time.Duration
	// MaxHold bounds how long the quiesce may be held: after it the agent
	// releases the server itself and Release fails. 0 means 5 minutes.
	MaxHold time.Duration
	// ReleaseTimeout bounds releasing, which runs on a context of its own
	// so a cancelled caller still releases. 0 means 30 s.
	ReleaseTimeout time.Duration
}

// WithDefaults fills the zero fields.
func (o QuiesceOptions) WithDefaults() QuiesceOptions {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxHold <= 0 {
		o.MaxHold = 5 * time.Minute
	}
	if o.ReleaseTimeout <= 0 {
		o.ReleaseTimeout = 30 * time.Second
	}
	if o.Label == "" {
		o.Label = "cairn"
	}
	return o
}

// Part is one stream of a physical backup chain: a full backup or one of
// its incrementals.
type Part struct {
	Record Record
	// Open opens the stream; the restore closes it.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// TableChecksum is a content checksum of one table.
type TableChecksum struct {
	Database string `json:"database"`
	// Table is the table's name, schema-qualified where the server has schemas.
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
	// Sum depends on every row's content and not on the rows' physical order.
	Sum string `json:"sum"`
}

// CheckRequest is the query a check runs after the datastore's own
// check tool: Query in Database, as the superuser, in a read-only
// transaction. An empty Query runs nothing.
type CheckRequest struct {
	Database string `json:"database,omitempty"`
	Query    string `json:"query,omitempty"`
}

// CheckReport is what a check found. Passed is false when the check tool
// reported damage, or the query failed or returned no row; Detail says
// what. Result is the first column of the query's first row, as text.
type CheckReport struct {
	Passed bool   `json:"passed"`
	Tool   string `json:"tool"`
	Detail string `json:"detail"`
	Result string `json:"result,omitempty"`
}

// Server is a started server process, as its supervisor knows it.
type Server struct {
	Process *os.Process
	// Exited is closed once the supervisor has waited for the process.
	Exited <-chan struct{}
}

// Engine is one installed server version. Its methods are safe for
// concurrent use on different data directories.
type Engine interface {
	// Datastore says which server this engine runs.
	Datastore() Datastore
	// Init creates a new data directory at cfg.DataDir, which must be
	// absent or empty, owned by the server's OS user.
	Init(ctx context.Context, cfg Config) error
	// Instance returns the agent of the data directory cfg names. It
	// checks cfg and does no I/O.
	Instance(cfg Config) (Instance, error)
	// RestoreSnapshot makes cfg.DataDir, which holds the data directory
	// as a snapshot of its volume taken while quiesced, ready to start:
	// it checks the snapshot against rec and lays over it the files the
	// quiesce's Release wrote to its overlay. The server then starts
	// from the backup's point. A record or overlay it refuses leaves the
	// directory as it was.
	RestoreSnapshot(ctx context.Context, cfg Config, rec Record, overlay io.Reader) error
	// RestorePhysical fills cfg.DataDir (absent or empty) from a physical
	// backup: chain is a full backup and its incrementals, oldest first.
	// The server then starts from the last part's point. On failure the
	// directory may hold part of the restore; the caller removes it.
	RestorePhysical(ctx context.Context, cfg Config, chain []Part) error
}

// Instance is the agent of one data directory. Its methods may be called
// concurrently; each opens connections of its own.
type Instance interface {
	// Config returns the instance's configuration.
	Config() Config
	// Command returns a new command that runs the server in the
	// foreground, for a supervisor to start, watch and restart; it
	// creates the run directory. The command's output is the server's
	// log: the caller sets Stdout and Stderr. Its working directory is
	// ToolDir, never on the data directory's file system.
	Command() (*exec.Cmd, error)
	// Ready waits until the server accepts a connection; it fails when
	// srv exits first or ctx ends.
	Ready(ctx context.Context, srv Server) error
	// Stop shuts the server down cleanly (a fast shutdown) and waits for
	// srv to exit. When ctx ends first, the server is shut down at once
	// (as a crash would), waited for, and ctx's error returned.
	Stop(ctx context.Context, srv Server) error

	// CreateDatabases creates the databases; an existing one fails with
	// cairn.ErrExists, a bad name or character set with cairn.ErrInvalid.
	CreateDatabases(ctx context.Context, dbs []Database) error
	// CreateUsers creates the users and grants each all privileges on its
	// databases; an existing user fails with cairn.ErrExists.
	CreateUsers(ctx context.Context, users []User) error

	// Quiesce holds the server at a consistent point for a volume
	// snapshot, on one session held until Release. It fails within
	// opts.Timeout when the quiesce cannot be had, and leaves nothing held.
	Quiesce(ctx context.Context, opts QuiesceOptions) (Quiesced, error)
	// QuiesceHoldsCommits reports whether commits wait while a quiesce
	// is held (MariaDB's BACKUP STAGE BLOCK_COMMIT; PostgreSQL's held
	// backup blocks nothing): work a caller can do before or after
	// quiescing, it then does before; otherwise after, once the
	// quiesce's checkpoint has written the data out.
	QuiesceHoldsCommits() bool
	// BackupPhysical streams a physical backup to w; with a parent (a
	// physical record of this instance) it is incremental, where the
	// engine supports it (else cairn.ErrUnsupported).
	BackupPhysical(ctx context.Context, w io.Writer, label string, parent *Record) (Record, error)
	// BackupLogical streams a dump of the user databases and users to w.
	BackupLogical(ctx context.Context, w io.Writer, label string) (Record, error)
	// RestoreLogical loads a logical backup into the running server, which
	// should be freshly initialised.
	RestoreLogical(ctx context.Context, r io.Reader) error
	// Checksums returns a checksum of every table of the user databases,
	// ordered by database and table.
	Checksums(ctx context.Context) ([]TableChecksum, error)
	// Check runs the datastore's own consistency check over every
	// database (PostgreSQL's pg_amcheck of heaps and B-tree indexes,
	// installing its extension where missing; MariaDB's mariadb-check),
	// then req's query. Damage found, or a query that fails or returns no
	// row, is a report that did not pass; the error is for a check that
	// could not run (the server unreachable, ctx ended).
	Check(ctx context.Context, req CheckRequest) (CheckReport, error)
}

// Quiesced is a held quiesce. Release and Abort may be called from any
// goroutine; the first call ends the quiesce, and the session with it.
type Quiesced interface {
	// Record returns what is known of the backup while it is held: the
	// datastore, the label and, for MariaDB, the point.
	Record() Record
	// Release ends the quiesce and returns the backup's record. It then
	// writes to overlay (unless nil) the files a restore lays over the
	// snapshot (a tar stream RestoreSnapshot reads back: PostgreSQL's
	// backup_label, tablespace_map and the WAL from the backup's start to
	// its stop; nothing for MariaDB). It always ends the quiesce and the
	// session, also when it fails; when ctx has ended it still releases,
	// on a context of its own bounded by opts.ReleaseTimeout. It fails
	// when the quiesce ended before (Abort, MaxHold, a lost session):
	// a snapshot taken then is not a consistent backup.
	Release(ctx context.Context, overlay io.Writer) (Record, error)
	// Abort ends the quiesce without a record, e.g. when the snapshot
	// failed. It is idempotent and does nothing after Release.
	Abort() error
	// Done is closed once the quiesce has ended, however it ended.
	Done() <-chan struct{}
}

// WALSource is an Instance whose server's write-ahead log can be
// streamed for archiving (PostgreSQL: over a physical replication slot
// the archive owns, so the server keeps what the archive has not yet
// stored). Its methods may be called concurrently, but one StreamWAL at a
// time holds the slot: a second fails while the first runs.
type WALSource interface {
	// WALIdentity says which cluster and timeline the server is on and
	// how far it has flushed its log.
	WALIdentity(ctx context.Context) (WALIdentity, error)
	// StreamWAL streams the log of req.Timeline from req.Start to fn, in
	// order, until ctx ends or fn fails (returning fn's error), or the
	// timeline ends (returning its end). It makes the archive's slot when
	// there is none. Every req.StatusInterval it tells the server the
	// slot may let go of what lies before req.Flushed(), and the server
	// answers with a keepalive (a message without Data), so fn hears from
	// an idle server too.
	StreamWAL(ctx context.Context, req WALStreamRequest, fn func(WALMessage) error) (*TimelineEnd, error)
	// TimelineHistory returns the server's history file of a timeline (2
	// or more).
	TimelineHistory(ctx context.Context, timeline uint32) ([]byte, error)
	// WALSlot reports the archive slot's state; Exists is false when
	// there is none.
	WALSlot(ctx context.Context) (WALSlot, error)
}

// WALIdentity is a server's place in its log.
type WALIdentity struct {
	// SystemID identifies the cluster (PostgreSQL's system identifier);
	// a restored copy keeps it, so the archive keys on the instance.
	SystemID string `json:"system_id"`
	Timeline uint32 `json:"timeline"`
	// Flushed is the end of the log the server has made durable.
	Flushed     LSN   `json:"flushed"`
	SegmentSize int64 `json:"segment_size"`
}

// WALStreamRequest is where a stream starts.
type WALStreamRequest struct {
	Timeline uint32
	Start    LSN
	// Flushed returns the position before which the archive has stored
	// everything; nil means Start.
	Flushed func() LSN
	// StatusInterval is how often the server is told the flushed
	// position and asked for a keepalive, 0 for 1 s.
	StatusInterval time.Duration
}

// WALMessage is one message of a stream: bytes of the log (Data, from
// Start), or a keepalive (no Data) that says how far the server has
// written.
type WALMessage struct {
	Start LSN
	Data  []byte
	// ServerEnd is the end of the log on the server when it sent the
	// message, ServerTime its clock then.
	ServerEnd  LSN
	ServerTime time.Time
	// More says another message was already waiting when this one was
	// handed on: a relay may hold its flush until a message without it,
	// so a busy server's many small messages cost one write, not one
	// each.
	More bool
}

// TimelineEnd is where a stream's timeline ended: the server switched to
// Next at Switch (a restore or recovery promoted it).
type TimelineEnd struct {
	Next   uint32
	Switch LSN
}

// WALSlot is the archive slot's state, as the server reports it.
type WALSlot struct {
	Exists     bool `json:"exists"`
	Active     bool `json:"active"`
	RestartLSN LSN  `json:"restart_lsn"`
	// Status is PostgreSQL's wal_status: reserved, extended, unreserved
	// (the slot is about to lose WAL), lost (it has).
	Status string `json:"wal_status"`
	// SafeBytes is how much more WAL may be written before the slot loses
	// some (max_slot_wal_keep_size), -1 when unbounded.
	SafeBytes int64 `json:"safe_wal_size"`
	// KeepBytes is max_slot_wal_keep_size, -1 when unbounded.
	KeepBytes int64 `json:"max_slot_wal_keep_size"`
}

// BinlogSource is an Instance whose server's binary log can be streamed
// for archiving (MariaDB). Its methods may be called concurrently; the
// host runs one StreamBinlog at a time per instance.
type BinlogSource interface {
	// BinlogState reports the server's binary log files, where it
	// writes now, its GTID position and its clock.
	BinlogState(ctx context.Context) (BinlogState, error)
	// StreamBinlog streams the server's binary log files to fn, in order,
	// from the start of req.File on and across every rotation, until ctx
	// ends, fn fails (returning fn's error) or the server's stream
	// breaks. Every req.StatusInterval it hands fn a status (a message
	// without Data) saying how far the server had written, and when. A
	// req.File the server no longer has fails with cairn.ErrGone.
	StreamBinlog(ctx context.Context, req BinlogStreamRequest, fn func(BinlogMessage) error) error
}

// BinlogState is a server's place in its binary log.
type BinlogState struct {
	// ServerID is the server's server_id.
	ServerID string `json:"server_id"`
	// Files are the binary log files the server has, oldest first.
	Files []BinlogFile `json:"files"`
	// File and Pos are where the server writes next (SHOW MASTER STATUS).
	File string `json:"file"`
	Pos  uint64 `json:"pos"`
	// GTIDBinlogPos is @@gtid_binlog_pos.
	GTIDBinlogPos string `json:"gtid_binlog_pos"`
	// Time is the server's clock when it was asked.
	Time time.Time `json:"time"`
	// Generation is the binary log's history the server is on: 1 from
	// its first start, a new one after every recovery that replayed a
	// binary log into it (see BinlogStart.Generation). It lives on the
	// volume, beside the data, so a volume put back as it was puts the
	// generation back too.
	Generation uint32 `json:"generation"`
}

// BinlogFile is one binary log file on the server.
type BinlogFile struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
}

// BinlogStreamRequest is where a binary log stream starts.
type BinlogStreamRequest struct {
	// File is the file the stream starts with, from its first byte.
	File string
	// StatusInterval is how often a status is handed on, 0 for 1 s.
	StatusInterval time.Duration
}

// BinlogMessage is one message of a binary log stream: bytes of File
// from Start (Start 0 is the file's first byte, its magic), or a status
// (no Data): the server had written its log up to ServerPos in
// ServerFile at ServerTime (its clock). A file's bytes come in order and
// whole before the next file's; messages need not end at event
// boundaries.
type BinlogMessage struct {
	File       string    `json:"file,omitempty"`
	Start      uint64    `json:"start,omitempty"`
	Data       []byte    `json:"-"`
	ServerFile string    `json:"server_file,omitempty"`
	ServerPos  uint64    `json:"server_pos,omitempty"`
	ServerTime time.Time `json:"server_time,omitzero"`
}

// BinlogStart is where a MariaDB replay of archived binary logs starts:
// after the GTID position GTID (as @@gtid_binlog_pos prints it), or, when
// GTID is empty, at Pos in File.
type BinlogStart struct {
	File string `json:"file,omitempty"`
	Pos  uint64 `json:"pos,omitempty"`
	GTID string `json:"gtid,omitempty"`
	// Generation, when not 0, is the generation the server is on once
	// the replay is done (BinlogState.Generation): its binary log from
	// then on is a new history, which an archive must not mix with the
	// one the files replayed came from.
	Generation uint32 `json:"generation,omitempty"`
}

// PointInTime is an Engine whose servers replay their log to a point in
// time (PostgreSQL's archive recovery; MariaDB's replay of binary log
// files, which FinishRecovery runs on the started server).
type PointInTime interface {
	// PrepareRecovery makes cfg.DataDir, restored from a snapshot or a
	// physical backup, replay at its next start the log files in t.Dir
	// (whole WAL segments and timeline history files, as an archive
	// holds them) up to t, then leave recovery on a new timeline. The
	// server's first start then recovers; FinishRecovery waits for it.
	PrepareRecovery(ctx context.Context, cfg Config, t RecoveryTarget) error
	// FinishRecovery waits until the server of cfg, started after
	// PrepareRecovery, has left recovery and accepts writes, then clears
	// the recovery's settings. It fails when srv exits first (a target
	// the WAL given does not reach, say) or ctx ends.
	FinishRecovery(ctx context.Context, cfg Config, srv Server) error
}

// Markers in a RecoveryTarget's Dir while its log files arrive. Whoever
// writes the files renames each into place whole, then creates
// LogsHistories once every timeline history file is there (the first
// segment came, or the end), and finally LogsEnd, or LogsFailed if the
// rest will never come. A server looking for a file that is not there
// yet waits for it until one of these says it will not come: a history
// file after LogsHistories, any file after LogsEnd. After LogsFailed the
// recovery must fail, never end early at the last file it got.
const (
	LogsHistories = ".histories"
	LogsEnd       = ".end"
	LogsFailed    = ".failed"
)

// RecoveryTarget says how far a recovery replays.
type RecoveryTarget struct {
	// Time: the recovery stops before the first transaction that ended
	// after it, so every transaction that ended at or before it is in;
	// zero replays every file given.
	Time time.Time
	// Timeline is the timeline whose history the recovery follows.
	Timeline uint32
	// Dir holds the log files; PrepareRecovery gives it and them to the
	// server's OS user, private. WAL files may still be arriving while
	// the server replays (see LogsEnd): each appears whole under its own
	// name, timeline histories before segments, segments in order.
	Dir string
	// Binlog, for MariaDB, is where the replay starts. Dir then holds
	// the binary log files from the one it starts in, named as the
	// server named them; the last one ends where the replay stops (Time
	// is then zero: the files given end at the target).
	Binlog *BinlogStart
}
