package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/metrics"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
)

// serveSettings are cairn serve's settings. Each comes from, in order:
// its flag, its CAIRN_* variable, the config file, the default.
type serveSettings struct {
	DataDir          string          `yaml:"data_dir"`
	Listen           string          `yaml:"listen"`
	Catalog          string          `yaml:"catalog"`
	BackupStore      string          `yaml:"backup_store"`
	BackupKeyFile    string          `yaml:"backup_key_file"`
	DefaultContainer string          `yaml:"default_container"`
	Workers          int             `yaml:"workers"`
	NBDSocket        string          `yaml:"nbd_socket"`
	NBDListen        string          `yaml:"nbd_listen"`
	Webhooks         []webhookConfig `yaml:"webhooks"`
	LogFormat        string          `yaml:"log_format"`
	LogLevel         string          `yaml:"log_level"`
}

type webhookConfig struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secret_file"`
}

// serviceFile, in the data directory, says which process serves it and
// where; clients find the API there.
const serviceFile = "service.json"

// adminTokenFile, in the data directory, holds the token made on the
// first start (mode 0600).
const adminTokenFile = "admin-token"

type serviceInfo struct {
	PID       int    `json:"pid"`
	URL       string `json:"url"`
	NBDSocket string `json:"nbd_socket,omitempty"`
}

func (a *app) serviceCommand() *cobra.Command {
	var st serveSettings
	var configFile string
	var webhookURLs []string
	var webhookSecret string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the block storage service: API, tasks, NBD exports",
		Long: `Run the block storage service on this machine: the REST API
(/v3/{project_id}/volumes|snapshots|backups, OpenAPI at /openapi.yaml),
the durable task runner, the volume engine and its NBD exports.

With no settings it keeps everything in the data directory: the SQLite
catalog (catalog.db), volumes, backups in a local repository per
container (backups/CONTAINER) opened with a generated key file
(backup.key: keep a copy, without it the backups cannot be read), and
the API on 127.0.0.1:8776. On the first start it creates the project
"admin" and an admin token, written to admin-token in the data directory.

Every setting is a flag, a CAIRN_* environment variable (the flag's name
upper-cased, - as _, e.g. CAIRN_BACKUP_STORE) or a key of the YAML config
file (--config, CAIRN_CONFIG; the flag's name with _ for -); a flag beats
the variable, which beats the file.

Settings:
  --data-dir DIR           volumes, catalog, keys (default ~/.local/share/cairn)
  --listen ADDR            API address (default 127.0.0.1:8776)
  --catalog DSN            a SQLite file path, or postgres://USER@HOST/DB (default DATA_DIR/catalog.db)
  --backup-store LOC       where containers live: a directory, s3://BUCKET[/PREFIX],
                           swift:// (a Swift container per container) or swift://C[/PREFIX]
                           (default DATA_DIR/backups); credentials as for cairn repo
  --backup-key-file F      the repositories' key file, created when missing (default DATA_DIR/backup.key)
  --default-container C    container of backups that name none (default volumebackups)
  --workers N              tasks running at once (default 8)
  --nbd-socket PATH        unix socket of attached volumes' NBD exports (default DATA_DIR/nbd.sock)
  --nbd-listen ADDR        also export over TCP (e.g. 127.0.0.1:10809; default off)
  --webhook URL            POST every notification here (repeatable); config file: webhooks: [{url, secret_file}]
  --webhook-secret-file F  HMAC-SHA256 key signing --webhook deliveries (X-Cairn-Signature)
  --log-format text|json   structured log format on stderr (default json)
  --log-level LEVEL        debug, info, warn or error (default info)`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.settle(cmd.Flags(), &st, configFile); err != nil {
				return err
			}
			for _, u := range webhookURLs {
				st.Webhooks = append(st.Webhooks, webhookConfig{URL: u, SecretFile: webhookSecret})
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.serve(ctx, st)
		},
	}
	a.serveFlags(cmd.Flags(), &st, &configFile, &webhookURLs, &webhookSecret)
	a.kdfFlags(cmd)
	return cmd
}

// serveFlags defines serve's flags on f.
func (a *app) serveFlags(f *pflag.FlagSet, st *serveSettings, configFile *string, webhookURLs *[]string, webhookSecret *string) {
	f.StringVar(configFile, "config", "", "YAML config file")
	f.StringVar(&a.dataDirFlag, "data-dir", "", "data directory")
	f.StringVar(&st.Listen, "listen", "", "API address")
	f.StringVar(&st.Catalog, "catalog", "", "catalog: SQLite path or postgres:// URL")
	f.StringVar(&st.BackupStore, "backup-store", "", "where backup containers live")
	f.StringVar(&st.BackupKeyFile, "backup-key-file", "", "repositories' key file")
	f.StringVar(&st.DefaultContainer, "default-container", "", "default backup container")
	f.IntVar(&st.Workers, "workers", 0, "tasks running at once")
	f.StringVar(&st.NBDSocket, "nbd-socket", "", "NBD unix socket")
	f.StringVar(&st.NBDListen, "nbd-listen", "", "NBD TCP address")
	f.StringArrayVar(webhookURLs, "webhook", nil, "notification webhook URL")
	f.StringVar(webhookSecret, "webhook-secret-file", "", "webhook signing key file")
	f.StringVar(&st.LogFormat, "log-format", "", "text or json")
	f.StringVar(&st.LogLevel, "log-level", "", "debug, info, warn, error")
}

// settle fills st from the environment, the config file and defaults
// where its flag was not given.
func (a *app) settle(flags *pflag.FlagSet, st *serveSettings, configFile string) error {
	var file serveSettings
	if configFile == "" {
		configFile = a.getenv("CAIRN_CONFIG")
	}
	if configFile != "" {
		data, err := os.ReadFile(configFile)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(&file); err != nil {
			return usageError{fmt.Errorf("config file %s: %w", configFile, err)}
		}
		st.Webhooks = file.Webhooks
	}
	pick := func(flag string, dst *string, fromFile, def string) {
		if flags.Changed(flag) {
			return
		}
		env := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		*dst = firstNonEmpty(a.getenv(env), fromFile, def)
	}
	if !flags.Changed("data-dir") && a.getenv("CAIRN_DATA_DIR") == "" && file.DataDir != "" {
		a.dataDirFlag = file.DataDir
	}
	dir, err := a.dataDir()
	if err != nil {
		return err
	}
	st.DataDir = dir
	pick("listen", &st.Listen, file.Listen, "127.0.0.1:8776")
	pick("catalog", &st.Catalog, file.Catalog, filepath.Join(dir, "catalog.db"))
	pick("backup-store", &st.BackupStore, file.BackupStore, filepath.Join(dir, "backups"))
	pick("backup-key-file", &st.BackupKeyFile, file.BackupKeyFile, filepath.Join(dir, "backup.key"))
	pick("default-container", &st.DefaultContainer, file.DefaultContainer, "volumebackups")
	pick("nbd-socket", &st.NBDSocket, file.NBDSocket, filepath.Join(dir, "nbd.sock"))
	pick("nbd-listen", &st.NBDListen, file.NBDListen, "")
	pick("log-format", &st.LogFormat, file.LogFormat, "json")
	pick("log-level", &st.LogLevel, file.LogLevel, "info")
	if !flags.Changed("workers") {
		st.Workers = file.Workers
		if v := a.getenv("CAIRN_WORKERS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return usageError{fmt.Errorf("CAIRN_WORKERS %q: want a positive number", v)}
			}
			st.Workers = n
		}
		if st.Workers == 0 {
			st.Workers = 8
		}
	}
	if st.Workers < 1 || st.Workers > 256 {
		return usageError{fmt.Errorf("workers %d: want 1 to 256", st.Workers)}
	}
	if st.LogFormat != "json" && st.LogFormat != "text" {
		return usageError{fmt.Errorf("log format %q: want text or json", st.LogFormat)}
	}
	return nil
}

func (a *app) serviceLogger(st serveSettings) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(st.LogLevel)); err != nil {
		return nil, usageError{fmt.Errorf("log level %q: want debug, info, warn or error", st.LogLevel)}
	}
	opts := &slog.HandlerOptions{Level: level}
	if st.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
}

// openCatalog opens the catalog a DSN names.
func openCatalog(ctx context.Context, dsn string) (catalog.Store, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, strings.TrimPrefix(dsn, "sqlite:"))
}

// containerLocation is where a container's repository lives under base.
func containerLocation(base, container string) string {
	if base == "swift://" {
		return "swift://" + container
	}
	loc, query, _ := strings.Cut(base, "?")
	loc = strings.TrimRight(loc, "/") + "/" + container
	if query != "" {
		loc += "?" + query
	}
	return loc
}

func (a *app) serve(ctx context.Context, st serveSettings) error {
	log, err := a.serviceLogger(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(st.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	eng, err := volume.Open(st.DataDir, volume.Options{Logger: log})
	if errors.Is(err, cairn.ErrConflict) {
		return fmt.Errorf("data directory %s is held by another process (cairn serve or cairn volume serve): %w", st.DataDir, err)
	}
	if err != nil {
		return err
	}
	defer eng.Close()
	cat, err := openCatalog(ctx, st.Catalog)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer cat.Close()
	token, err := bootstrap(ctx, cat, st.DataDir)
	if err != nil {
		return err
	}
	if token != "" {
		log.Info("created project admin and its admin token", "file", filepath.Join(st.DataDir, adminTokenFile))
	}
	secret, err := a.readKeyFile(st.BackupKeyFile, true)
	if err != nil {
		return err
	}
	var hooks []notify.Webhook
	for _, w := range st.Webhooks {
		h := notify.Webhook{URL: w.URL}
		if w.SecretFile != "" {
			if h.Secret, err = os.ReadFile(w.SecretFile); err != nil {
				return fmt.Errorf("webhook secret: %w", err)
			}
			h.Secret = []byte(strings.TrimSpace(string(h.Secret)))
		}
		hooks = append(hooks, h)
	}
	notifier := notify.New(notify.Options{Webhooks: hooks, Logger: log})
	met := metrics.New()
	openRepo := func(ctx context.Context, container string) (*repo.Repository, error) {
		loc := containerLocation(st.BackupStore, container)
		s, err := a.openStore(ctx, loc, true)
		if err != nil {
			return nil, err
		}
		// The repository owns the store; until one does, the store is ours.
		var r *repo.Repository
		if _, err = repo.ReadConfig(ctx, s.backend); errors.Is(err, cairn.ErrNotRepository) {
			log.Info("creating the repository of a container", "container", container)
			r, err = repo.Init(ctx, s.backend, secret, repo.InitOptions{GC: s.gcParams()}, a.repoOptions(s))
		} else if err == nil {
			r, err = repo.Open(ctx, s.backend, secret, a.repoOptions(s))
		}
		if err != nil {
			closeStore(s.backend)
			return nil, err
		}
		return r, nil
	}
	svc := service.New(service.Config{Catalog: cat, Engine: eng, OpenRepo: openRepo,
		DefaultContainer: st.DefaultContainer, Notifier: notifier, Observer: met, Logger: log,
		Workers: st.Workers, NBDSocket: st.NBDSocket, NBDAddress: st.NBDListen})
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Stop()

	// NBD exports of attached volumes.
	nbdSrv := nbd.NewServer(svc.Exports(), nbd.Options{Logger: log})
	_ = os.Remove(st.NBDSocket)
	ul, err := net.Listen("unix", st.NBDSocket)
	if err != nil {
		return fmt.Errorf("nbd socket: %w", err)
	}
	go func() { _ = nbdSrv.Serve(ctx, ul) }()
	if st.NBDListen != "" {
		tl, err := net.Listen("tcp", st.NBDListen)
		if err != nil {
			return fmt.Errorf("nbd listen: %w", err)
		}
		go func() { _ = nbdSrv.Serve(ctx, tl) }()
	}

	ln, err := net.Listen("tcp", st.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	url := "http://" + ln.Addr().String()
	info, _ := json.Marshal(serviceInfo{PID: os.Getpid(), URL: url, NBDSocket: st.NBDSocket})
	infoPath := filepath.Join(st.DataDir, serviceFile)
	if err := os.WriteFile(infoPath, info, 0o600); err != nil {
		return fmt.Errorf("service file: %w", err)
	}
	defer os.Remove(infoPath)
	srv := &http.Server{Handler: api.New(svc, met, log), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	log.Info("serving", "api", url, "nbd_socket", st.NBDSocket, "catalog", redactDSN(st.Catalog),
		"backup_store", st.BackupStore, "workers", st.Workers, "cpus", runtime.GOMAXPROCS(0))
	if !a.json {
		fmt.Fprintf(a.stdout, "cairn serving on %s (data directory %s)\n", url, st.DataDir)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	svc.Stop()
	_ = notifier.Close(sctx)
	return nil
}

// redactDSN hides a catalog URL's password.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			user := dsn[i+3 : at]
			if u, _, ok := strings.Cut(user, ":"); ok {
				return dsn[:i+3] + u + ":***" + dsn[at:]
			}
		}
	}
	return dsn
}

// bootstrap makes the admin project and an admin token when the catalog
// has no project, writing the token to the data directory.
func bootstrap(ctx context.Context, cat catalog.Store, dir string) (string, error) {
	var n int
	err := cat.View(ctx, func(tx catalog.Tx) error {
		list, err := tx.Projects(ctx)
		n = len(list)
		return err
	})
	if err != nil || n > 0 {
		return "", err
	}
	if _, err := service.CreateProject(ctx, cat, service.AdminProject, "admin", cairn.Unlimited, time.Now()); err != nil && !errors.Is(err, cairn.ErrExists) {
		return "", err
	}
	secret, _, err := service.CreateToken(ctx, cat, cairn.Token{ProjectID: service.AdminProject, Name: "admin (first start)", Admin: true})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, adminTokenFile)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	return secret, nil
}
