// Package mariadb is the database agent of MariaDB (Debian's
// mariadb-server, mariadb-backup and mariadb-client packages):
// mariadb-install-db, the mariadbd command line with the binary log on,
// BACKUP STAGE on one held connection for snapshots, mariadb-backup and
// mariadb-dump streams, and their restores.
package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// Where Debian installs MariaDB.
const (
	Server = "/usr/sbin/mariadbd"
	Bin    = "/usr/bin"
)

// Reserved names: the server's own databases and accounts.
var (
	reservedDatabases = []string{"mysql", "information_schema", "performance_schema", "sys"}
	reservedUsers     = []string{"root", "mysql", "mariadb.sys", "public"}
)

// Find lists the MariaDB version installed at Server.
func Find(ctx context.Context) ([]dbagent.Datastore, error) {
	if _, err := os.Stat(Server); err != nil {
		return nil, nil
	}
	cmd := exec.CommandContext(ctx, Server, "--no-defaults", "--version")
	cmd.Env = dbagent.ToolEnv()
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", Server, err)
	}
	release, major, err := parseVersion(string(b))
	if err != nil {
		return nil, err
	}
	return []dbagent.Datastore{{Type: dbagent.MariaDB, Version: major, Release: release, Server: Server, Bin: Bin}}, nil
}

// Engine runs the installed MariaDB.
type Engine struct {
	ds   dbagent.Datastore
	user dbagent.OSUser
	// admin is the account the agent connects as: its own OS user's name,
	// authenticated by the unix_socket plugin, so it has no password.
	admin string
}

var _ dbagent.Engine = (*Engine)(nil)

// New returns the engine of ds (from Find). When the agent runs as root
// the server runs as the OS user mysql.
func New(ds dbagent.Datastore) (*Engine, error) {
	if ds.Type != dbagent.MariaDB {
		return nil, fmt.Errorf("mariadb engine for a %s datastore: %w", ds.Type, cairn.ErrInvalid)
	}
	u, err := dbagent.ServerUser("mysql")
	if err != nil {
		return nil, err
	}
	cur, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("current user: %w", err)
	}
	return &Engine{ds: ds, user: u, admin: cur.Username}, nil
}

// Datastore implements dbagent.Engine.
func (e *Engine) Datastore() dbagent.Datastore { return e.ds }

func (e *Engine) tool(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(e.ds.Bin, name), append([]string{"--no-defaults"}, args...)...)
	cmd.Env = dbagent.ToolEnv()
	return cmd
}

// durableSettings are the settings a data directory is made and run with:
// UTF-8 by default, the binary log on (row-based, synced at every commit,
// GTIDs strict) for the backups' coordinates and, later, its archive.
var durableSettings = [][2]string{
	{"character-set-server", "utf8mb4"},
	{"collation-server", "utf8mb4_general_ci"},
	{"server-id", "1"},
	{"log-bin", "mysql-bin"},
	{"log-bin-index", "mysql-bin.index"},
	{"binlog-format", "ROW"},
	{"sync-binlog", "1"},
	{"innodb-flush-log-at-trx-commit", "1"},
	{"gtid-strict-mode", "1"},
	{"skip-name-resolve", "1"},
}

func settingArgs(lists ...[][2]string) []string {
	var args []string
	for _, l := range lists {
		for _, kv := range l {
			args = append(args, "--"+kv[0]+"="+kv[1])
		}
	}
	return args
}

// Init implements dbagent.Engine: mariadb-install-db as the server's OS
// user, the agent's account (named as its OS user) authenticated by the
// unix socket.
func (e *Engine) Init(ctx context.Context, cfg dbagent.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := e.user.MakeDir(cfg.DataDir, true); err != nil {
		return err
	}
	if err := e.user.MakeDir(tmpDir(cfg), false); err != nil {
		return err
	}
	args := append([]string{"--datadir=" + cfg.DataDir, "--tmpdir=" + tmpDir(cfg), "--skip-test-db",
		"--auth-root-authentication-method=socket", "--auth-root-socket-user=" + e.admin},
		settingArgs(durableSettings, cfg.SortedSettings())...)
	cmd := e.tool(ctx, "mariadb-install-db", args...)
	cmd.Dir = dbagent.ToolDir
	e.user.RunAs(cmd)
	if _, err := dbagent.RunTool(cmd); err != nil {
		return fmt.Errorf("initialising %s: %w", cfg.DataDir, err)
	}
	return e.user.OwnTree(cfg.DataDir)
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

// ownSetting reports whether an option (lower-cased; MariaDB takes _ and
// - alike) is the agent's: one of its durable settings, a place it
// gives on the command line, or one that would turn the binary log off
// or read an option file.
func ownSetting(name string) bool {
	name = strings.ReplaceAll(name, "_", "-")
	for _, kv := range durableSettings {
		if kv[0] == name {
			return true
		}
	}
	switch name {
	case "datadir", "tmpdir", "socket", "pid-file", "bind-address", "port", "skip-networking",
		"no-defaults", "defaults-file", "defaults-extra-file", "defaults-group-suffix",
		"skip-log-bin", "disable-log-bin", "log-basename", "gtid-domain-id", "user":
		return true
	}
	return false
}

// Instance is the agent of one MariaDB data directory.
type Instance struct {
	e   *Engine
	cfg dbagent.Config
}

var _ dbagent.Instance = (*Instance)(nil)

// Config implements dbagent.Instance.
func (i *Instance) Config() dbagent.Config { return i.cfg }

func (i *Instance) socket() string { return filepath.Join(i.cfg.RunDir, "mysqld.sock") }

// tmpDir is the server's directory for temporary files: beside the data
// directory on the instance's volume, the server's user's alone. Never
// the host's shared /tmp: a MariaDB server deletes every "#sql" file in
// its tmpdir when it starts, so on a shared one a starting instance
// deletes the temporary tables of the others (a concurrent
// mariadb-install-db failed on it: "Error on delete of
// '/tmp/#sql-temptable-…'").
func tmpDir(cfg dbagent.Config) string {
	return filepath.Join(filepath.Dir(cfg.DataDir), "mariadb-tmp")
}

// Command implements dbagent.Instance: mariadbd in the foreground, as the
// OS user mysql, in a process group of its own, reading no option file:
// everything it runs with is on its command line. Its log goes to
// standard error.
func (i *Instance) Command() (*exec.Cmd, error) {
	if err := i.e.user.MakeDir(i.cfg.RunDir, false); err != nil {
		return nil, err
	}
	if err := i.e.user.MakeDir(tmpDir(i.cfg), false); err != nil {
		return nil, err
	}
	args := append([]string{"--no-defaults",
		"--datadir=" + i.cfg.DataDir,
		"--tmpdir=" + tmpDir(i.cfg),
		"--socket=" + i.socket(),
		"--pid-file=" + filepath.Join(i.cfg.RunDir, "mysqld.pid"),
		"--bind-address=" + i.cfg.Address,
		"--port=" + strconv.Itoa(i.cfg.Port),
	}, settingArgs(durableSettings, i.cfg.SortedSettings())...)
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
		db := i.openDB("")
		defer db.Close()
		return db.PingContext(ctx)
	})
}

// Stop implements dbagent.Instance: SIGTERM is MariaDB's clean shutdown;
// SIGKILL, a crash InnoDB recovers from, the immediate one.
func (i *Instance) Stop(ctx context.Context, srv dbagent.Server) error {
	return dbagent.StopServer(ctx, srv, syscall.SIGTERM, syscall.SIGKILL)
}

// openDB returns a pool of connections to database as the agent's
// account over the unix socket.
func (i *Instance) openDB(database string) *sql.DB {
	c := mysql.NewConfig()
	c.User = i.e.admin
	c.Net = "unix"
	c.Addr = i.socket()
	c.DBName = database
	c.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		// NewConnector fails only on a malformed config, which this is not.
		panic(err)
	}
	return sql.OpenDB(conn)
}

// Server error numbers the agent maps.
const (
	errDBCreateExists      = 1007
	errCannotUser          = 1396
	errUnknownCharset      = 1115
	errUnknownCollation    = 1273
	errCollationMismatch   = 1253
	errBadDB               = 1049
	errLockWaitTimeout     = 1205
	errStatementTimeout    = 1969
	errNoSuchThread        = 1094
	errQueryInterrupted    = 1317
	errBackupStageNotStart = 4146
)

func errNumber(err error) uint16 {
	var m *mysql.MySQLError
	if errors.As(err, &m) {
		return m.Number
	}
	return 0
}

// serverError maps the server's errors to the root sentinels.
func serverError(what string, err error) error {
	switch errNumber(err) {
	case errDBCreateExists, errCannotUser:
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrExists)
	case errUnknownCharset, errUnknownCollation, errCollationMismatch:
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrInvalid)
	case errBadDB:
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ident quotes an identifier.
func ident(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// account quotes a user name as an account at any host.
func account(user string) string { return "'" + strings.ReplaceAll(user, "'", "''") + "'@'%'" }
