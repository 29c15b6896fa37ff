// Package postgres is the database agent of PostgreSQL (Debian's
// postgresql-NN packages): initdb, the postgres command line, the
// low-level backup API on one held session for snapshots, pg_basebackup
// and pg_dump streams, and their restores.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// Root is where Debian installs PostgreSQL versions, one directory each.
const Root = "/usr/lib/postgresql"

// superuser is the role the agent connects as: the bootstrap superuser
// initdb creates.
const superuser = "postgres"

// Reserved names: databases and roles the server has or forbids.
var (
	reservedDatabases = []string{"postgres", "template0", "template1"}
	reservedUsers     = []string{"postgres", "public", "none", "current_user", "session_user", "current_role", "pg_*"}
)

// Find lists the PostgreSQL versions installed under Root.
func Find(ctx context.Context) ([]dbagent.Datastore, error) {
	servers, err := filepath.Glob(filepath.Join(Root, "*", "bin", "postgres"))
	if err != nil {
		return nil, err
	}
	sort.Strings(servers)
	var out []dbagent.Datastore
	for _, server := range servers {
		cmd := exec.CommandContext(ctx, server, "--version")
		cmd.Env = dbagent.ToolEnv()
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s --version: %w", server, err)
		}
		release, major, err := parseVersion(string(b))
		if err != nil {
			return nil, err
		}
		out = append(out, dbagent.Datastore{
			Type: dbagent.PostgreSQL, Version: major, Release: release,
			Server: server, Bin: filepath.Dir(server),
		})
	}
	return out, nil
}

// Engine runs one installed PostgreSQL version.
type Engine struct {
	ds   dbagent.Datastore
	user dbagent.OSUser
}

var _ dbagent.Engine = (*Engine)(nil)

// New returns the engine of ds (from Find). When the agent runs as root
// the server runs as the OS user postgres.
func New(ds dbagent.Datastore) (*Engine, error) {
	if ds.Type != dbagent.PostgreSQL {
		return nil, fmt.Errorf("postgres engine for a %s datastore: %w", ds.Type, cairn.ErrInvalid)
	}
	u, err := dbagent.ServerUser("postgres")
	if err != nil {
		return nil, err
	}
	return &Engine{ds: ds, user: u}, nil
}

// Datastore implements dbagent.Engine.
func (e *Engine) Datastore() dbagent.Datastore { return e.ds }

func (e *Engine) tool(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(e.ds.Bin, name), args...)
	cmd.Env = dbagent.ToolEnv()
	return cmd
}

// hbaConf is the client authentication the agent writes at Init.
const hbaConf = `# Written by cairn. The agent reaches the server as the superuser over the
# unix socket in its run directory, which only root and postgres can enter;
# clients log in over TCP with a password; the superuser never logs in over
# TCP and replication is local only.
local   all           all                   trust
local   replication   all                   trust
host    all           postgres   all        reject
host    replication   all        all        reject
host    all           all        all        scram-sha-256
`

// Init implements dbagent.Engine: initdb with UTF-8, the C.UTF-8 locale
// and data checksums, then the agent's pg_hba.conf.
func (e *Engine) Init(ctx context.Context, cfg dbagent.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := e.user.MakeDir(cfg.DataDir, true); err != nil {
		return err
	}
	cmd := e.tool(ctx, "initdb", "-D", cfg.DataDir, "-U", superuser, "-E", "UTF8", "--locale=C.UTF-8",
		"--data-checksums", "--auth-local=trust", "--auth-host=scram-sha-256")
	cmd.Dir = dbagent.ToolDir
	e.user.RunAs(cmd)
	if _, err := dbagent.RunTool(cmd); err != nil {
		return fmt.Errorf("initialising %s: %w", cfg.DataDir, err)
	}
	hba := filepath.Join(cfg.DataDir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte(hbaConf), 0o600); err != nil {
		return fmt.Errorf("writing pg_hba.conf: %w", err)
	}
	return e.user.Own(hba)
}

// Instance implements dbagent.Engine.
func (e *Engine) Instance(cfg dbagent.Config) (dbagent.Instance, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckOwnSettings(ownSetting); err != nil {
		return nil, err
	}
	return &Instance{e: e, cfg: cfg}, nil
}

// ownSetting reports whether a setting (lower-cased) is the agent's:
// one of its server settings, or one a recovery writes, or a file's
// place. Only the slot's WAL bound may be given instead of the agent's
// default (the host sizes it to the volume).
func ownSetting(name string) bool {
	if name == "max_slot_wal_keep_size" {
		return false
	}
	for _, kv := range (&Instance{}).serverSettings() {
		if kv[0] == name {
			return true
		}
	}
	switch name {
	case "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
		"archive_command", "archive_library", "primary_conninfo", "primary_slot_name":
		return true
	}
	return slices.Contains(recoverySettings, name) || strings.HasPrefix(name, "recovery_target")
}

// Instance is the agent of one PostgreSQL data directory.
type Instance struct {
	e   *Engine
	cfg dbagent.Config
}

var _ dbagent.Instance = (*Instance)(nil)

// Config implements dbagent.Instance.
func (i *Instance) Config() dbagent.Config { return i.cfg }

// serverSettings are the settings the agent gives every server on its
// command line, so a data directory restored anywhere runs with the
// agent's settings, not those of where it was taken. WAL is kept at
// replica level with senders and slots free, for the held session's
// slot, pg_basebackup and, later, WAL archiving and streaming.
//
// WAL segments are not recycled: a recycled segment keeps its old
// blocks allocated in every snapshot (up to max_wal_size of stale WAL in
// each full backup), while a removed one is discarded (the snapshot step
// trims the file system) and costs nothing. New segments are still
// zero-filled (wal_init_zero, the default): without it every commit
// that reaches a new block of a segment allocates it in ext4 and its
// fdatasync commits the journal, which halved pgbench's TPS.
//
// A server that starts from a data directory not cleanly shut down (a
// restore from a snapshot or a base backup, a recover, a crash) first
// makes every file durable. With the default method that is an fsync
// per file, about 1,100 for a pgbench database, and each one reaches
// the volume as a flush of its own; syncfs makes it one flush of the
// file system, as durable.
func (i *Instance) serverSettings() [][2]string {
	return [][2]string{
		{"listen_addresses", i.cfg.Address},
		{"port", strconv.Itoa(i.cfg.Port)},
		{"unix_socket_directories", i.cfg.RunDir},
		{"unix_socket_permissions", "0700"},
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"max_slot_wal_keep_size", DefaultSlotKeep},
		{"archive_mode", "off"},
		{"fsync", "on"},
		{"full_page_writes", "on"},
		{"wal_recycle", "off"},
		{"recovery_init_sync_method", "syncfs"},
		{"password_encryption", "scram-sha-256"},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
	}
}

// Command implements dbagent.Instance: postgres in the foreground, as
// the OS user postgres, in a process group of its own (a terminal's
// signals do not reach it; the supervisor signals it by pid).
func (i *Instance) Command() (*exec.Cmd, error) {
	if err := i.e.user.MakeDir(i.cfg.RunDir, false); err != nil {
		return nil, err
	}
	args := []string{"-D", i.cfg.DataDir}
	for _, kv := range append(i.serverSettings(), i.cfg.SortedSettings()...) {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	cmd := exec.Command(i.e.ds.Server, args...)
	cmd.Env = dbagent.ToolEnv()
	cmd.Dir = dbagent.ToolDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	i.e.user.RunAs(cmd)
	return cmd, nil
}

// Ready implements dbagent.Instance.
func (i *Instance) Ready(ctx context.Context, srv dbagent.Server) error {
	return dbagent.WaitReady(ctx, srv, func(ctx context.Context) error {
		conn, err := i.connect(ctx, "postgres", "cairn-ready")
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
}

// Stop implements dbagent.Instance: SIGINT is PostgreSQL's fast shutdown
// (sessions are ended, a checkpoint written); SIGQUIT its immediate one.
func (i *Instance) Stop(ctx context.Context, srv dbagent.Server) error {
	return dbagent.StopServer(ctx, srv, syscall.SIGINT, syscall.SIGQUIT)
}

// local points cfg at the server's unix socket, as the superuser,
// without TLS or fallbacks.
func (i *Instance) local(cfg *pgconn.Config, database string, params map[string]string) {
	cfg.Host = i.cfg.RunDir
	cfg.Port = uint16(i.cfg.Port)
	cfg.User = superuser
	cfg.Password = ""
	cfg.Database = database
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.RuntimeParams = params
}

// connect opens one session as the superuser over the unix socket.
func (i *Instance) connect(ctx context.Context, database, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	i.local(&cfg.Config, database, map[string]string{"application_name": app})
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", database, err)
	}
	if conn.PgConn().ParameterStatus("standard_conforming_strings") != "on" {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("connecting to %s: standard_conforming_strings is off: %w", database, cairn.ErrUnsupported)
	}
	return conn, nil
}

// connString is a libpq connection string for the tools, as the superuser
// over the unix socket.
func (i *Instance) connString(database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s application_name=cairn-agent",
		quoteConnValue(i.cfg.RunDir), i.cfg.Port, superuser, quoteConnValue(database))
}

// quoteConnValue quotes a libpq connection string value.
func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// ident quotes an identifier.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes a string constant; valid only with
// standard_conforming_strings on, which connect checks.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// sqlState returns the SQLSTATE of a server error, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
