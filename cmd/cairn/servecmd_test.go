package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairnproject/cairn/internal/notify"
)

// TestServeSettings: each setting comes from its flag, else its CAIRN_*
// variable, else the config file, else the default.
func TestServeSettings(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "cairn.yaml")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:1111\ncatalog: /file/catalog.db\nworkers: 3\nstore_requests: 12\nlog_format: text\ndb_settings: [\"postgresql:max_wal_size=3GB\"]\nwebhooks:\n  - url: http://127.0.0.1:9/hook\n    secret_file: /k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: x\ncolour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want func(serveSettings) bool
		err  string
	}{
		{"defaults", nil, map[string]string{"CAIRN_DATA_DIR": dir}, "", func(s serveSettings) bool {
			return s.Listen == "127.0.0.1:8776" && s.Catalog == filepath.Join(dir, "catalog.db") &&
				s.BackupStore == filepath.Join(dir, "backups") && s.Workers == 8 && s.StoreRequests == 32 && s.LogFormat == "json" &&
				s.NBDSocket == filepath.Join(dir, "nbd.sock") && s.DefaultContainer == "volumebackups" &&
				s.DBAddress == "127.0.0.1" && s.DBPorts == "17500-17999" && s.DBRunDir == "/run/cairn-db" && s.BackupNice == "10" && s.QuiesceTimeout == "30s" && s.WALArchive == "on" &&
				s.RestorePointInterval == "5m" && s.RestorePoints == 24
		}, ""},
		{"restore points", []string{"--restore-point-interval", "30s", "--restore-points", "100"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", func(s serveSettings) bool {
			return s.RestorePointInterval == "30s" && s.RestorePoints == 100
		}, ""},
		{"restore points off from env", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_RESTORE_POINT_INTERVAL": "0"}, "", func(s serveSettings) bool {
			return s.RestorePointInterval == "0"
		}, ""},
		{"restore point interval too short", []string{"--restore-point-interval", "1s"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "from 10s to 24h"},
		{"restore point interval not a duration", []string{"--restore-point-interval", "often"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "restore point interval"},
		{"too many restore points", []string{"--restore-points", "5000"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "want 1 to 1000"},
		{"quiesce timeout", []string{"--quiesce-timeout", "2s"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", func(s serveSettings) bool {
			return s.QuiesceTimeout == "2s"
		}, ""},
		{"bad quiesce timeout", []string{"--quiesce-timeout", "500ms"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "quiesce timeout"},
		{"wal archive off", []string{"--wal-archive", "off"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", func(s serveSettings) bool {
			return s.WALArchive == "off"
		}, ""},
		{"bad wal archive", []string{"--wal-archive", "yes"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "want on or off"},
		{"quiesce timeout not a duration", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_QUIESCE_TIMEOUT": "soon"}, "", nil, "from 1s to 1h"},
		{"backup nice from env", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_BACKUP_NICE": "0"}, "", func(s serveSettings) bool {
			return s.BackupNice == "0"
		}, ""},
		{"bad backup nice", []string{"--backup-nice", "20"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "backup nice"},
		{"backup nice not a number", []string{"--backup-nice", "low"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "want 0 to 19"},
		{"database ports from env", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_DB_PORTS": "20000-20009"}, "", func(s serveSettings) bool {
			return s.DBPorts == "20000-20009"
		}, ""},
		{"bad database ports", []string{"--db-ports", "9-1"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "--db-ports"},
		{"database settings from flags", []string{"--db-setting", "postgresql:max_wal_size=4GB", "--db-setting", "mariadb:innodb_buffer_pool_size=1G"}, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_DB_SETTING": "postgresql:work_mem=8MB"}, conf, func(s serveSettings) bool {
			return len(s.DBSettings) == 2 && s.DBSettings[0] == "postgresql:max_wal_size=4GB" && s.DBSettings[1] == "mariadb:innodb_buffer_pool_size=1G"
		}, ""},
		{"database settings from env", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_DB_SETTING": " postgresql:work_mem=8MB  postgresql:max_wal_size=2GB"}, conf, func(s serveSettings) bool {
			return len(s.DBSettings) == 2 && s.DBSettings[0] == "postgresql:work_mem=8MB" && s.DBSettings[1] == "postgresql:max_wal_size=2GB"
		}, ""},
		{"database settings from the file", nil, map[string]string{"CAIRN_DATA_DIR": dir}, conf, func(s serveSettings) bool {
			return len(s.DBSettings) == 1 && s.DBSettings[0] == "postgresql:max_wal_size=3GB"
		}, ""},
		{"database setting without a datastore", []string{"--db-setting", "max_wal_size=4GB"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "want DATASTORE:NAME=VALUE"},
		{"database setting of an unknown datastore", []string{"--db-setting", "postgres:max_wal_size=4GB"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, `datastore "postgres"`},
		{"database setting given twice", []string{"--db-setting", "postgresql:work_mem=1MB", "--db-setting", "postgresql:work_mem=2MB"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "given twice"},
		{"file", nil, map[string]string{"CAIRN_DATA_DIR": dir}, conf, func(s serveSettings) bool {
			return s.Listen == "127.0.0.1:1111" && s.Catalog == "/file/catalog.db" && s.Workers == 3 && s.StoreRequests == 12 &&
				s.LogFormat == "text" && len(s.Webhooks) == 1 && s.Webhooks[0].SecretFile == "/k"
		}, ""},
		{"env beats file", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_LISTEN": "127.0.0.1:2222", "CAIRN_WORKERS": "5", "CAIRN_STORE_REQUESTS": "7"}, conf, func(s serveSettings) bool {
			return s.Listen == "127.0.0.1:2222" && s.Workers == 5 && s.StoreRequests == 7 && s.Catalog == "/file/catalog.db"
		}, ""},
		{"flag beats env for store requests", []string{"--store-requests", "4"}, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_STORE_REQUESTS": "7"}, conf, func(s serveSettings) bool {
			return s.StoreRequests == 4
		}, ""},
		{"bad store requests", []string{"--store-requests", "0"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "store-requests"},
		{"bad env store requests", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_STORE_REQUESTS": "-1"}, "", nil, "CAIRN_STORE_REQUESTS"},
		{"flag beats env", []string{"--listen", "127.0.0.1:3333", "--workers", "2"}, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_LISTEN": "127.0.0.1:2222", "CAIRN_WORKERS": "5"}, conf, func(s serveSettings) bool {
			return s.Listen == "127.0.0.1:3333" && s.Workers == 2
		}, ""},
		{"config from env", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_CONFIG": conf}, "", func(s serveSettings) bool {
			return s.Listen == "127.0.0.1:1111"
		}, ""},
		{"unknown key", nil, map[string]string{"CAIRN_DATA_DIR": dir}, bad, nil, "colour"},
		{"bad workers", []string{"--workers", "0"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "workers"},
		{"bad env workers", nil, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_WORKERS": "many"}, "", nil, "CAIRN_WORKERS"},
		{"bad log format", []string{"--log-format", "xml"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "log format"},
		{"missing file", nil, map[string]string{"CAIRN_DATA_DIR": dir}, filepath.Join(dir, "none.yaml"), nil, "config file"},
		{"keystone", []string{"--keystone-credentials", "/etc/cairn/openrc"}, map[string]string{"CAIRN_DATA_DIR": dir, "CAIRN_KEYSTONE_URL": "http://127.0.0.1:5000/v3"}, "", func(s serveSettings) bool {
			return s.KeystoneCredentials == "/etc/cairn/openrc" && s.KeystoneURL == "http://127.0.0.1:5000/v3" && s.KeystoneCacheTime == "5m"
		}, ""},
		{"keystone url without credentials", []string{"--keystone-url", "http://127.0.0.1:5000/v3"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "--keystone-credentials"},
		{"bad keystone cache time", []string{"--keystone-cache-time", "2h"}, map[string]string{"CAIRN_DATA_DIR": dir}, "", nil, "keystone cache time"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := &app{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return c.env[k] }}
			var st serveSettings
			var configFile, secret string
			var hooks []string
			f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			a.serveFlags(f, &st, &configFile, &hooks, &secret)
			if err := f.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if configFile == "" {
				configFile = c.file
			}
			err := a.settle(f, &st, configFile)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil || !c.want(st) {
				t.Fatalf("settings %+v, err %v", st, err)
			}
		})
	}
}

// TestKeystoneValidator: the credentials file is read and checked when
// serve starts; its errors name the file and what is wrong.
func TestKeystoneValidator(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "export OS_USERNAME=cairn\nexport OS_PASSWORD=pw\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_NAME=service\nexport OS_PROJECT_DOMAIN_NAME=Default\n"
	for _, tc := range []struct {
		name string
		st   serveSettings
		url  string
		err  string
	}{
		{"none", serveSettings{KeystoneCacheTime: "5m"}, "", ""},
		{"url from the file", serveSettings{KeystoneCredentials: write("rc1", good+"export OS_AUTH_URL=http://127.0.0.1:5000/v3\n"), KeystoneCacheTime: "5m"}, "http://127.0.0.1:5000/v3", ""},
		{"flag beats file", serveSettings{KeystoneURL: "http://127.0.0.1:6000/v3", KeystoneCredentials: write("rc2", good+"export OS_AUTH_URL=http://127.0.0.1:5000/v3\n"), KeystoneCacheTime: "5m"}, "http://127.0.0.1:6000/v3", ""},
		{"no url", serveSettings{KeystoneCredentials: write("rc3", good), KeystoneCacheTime: "5m"}, "", "no OS_AUTH_URL"},
		{"missing file", serveSettings{KeystoneCredentials: filepath.Join(dir, "none"), KeystoneCacheTime: "5m"}, "", "no such file"},
		{"no password", serveSettings{KeystoneCredentials: write("rc4", "OS_USERNAME=u\n"), KeystoneURL: "http://h/v3", KeystoneCacheTime: "5m"}, "", "OS_PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, url, err := keystoneValidator(tc.st)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || url != tc.url || (v == nil) != (tc.url == "") {
				t.Fatalf("validator %v, url %q, err %v", v, url, err)
			}
		})
	}
}

// TestServeWebhook: cairn serve posts signed notifications to a webhook,
// and exports the bound on its requests to the backup store.
func TestServeWebhook(t *testing.T) {
	key := filepath.Join(t.TempDir(), "hook.key")
	if err := os.WriteFile(key, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events := make(chan notify.Event, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !notify.Verify([]byte("s3cret"), r.Header.Get("X-Cairn-Timestamp"), body, r.Header.Get("X-Cairn-Signature")) {
			t.Errorf("a delivery with a bad signature: %s", body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var e notify.Event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("delivery %s: %v", body, err)
		}
		events <- e
	}))
	defer hook.Close()
	p := startService(t, filepath.Join(t.TempDir(), "data"), "--webhook", hook.URL, "--webhook-secret-file", key, "--store-requests", "3")
	// The bound on requests to the backup store is exported.
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"cairn_store_requests_limit 3", "cairn_store_requests_in_flight 0", "cairn_store_requests_waiting 0"} {
		if !strings.Contains(string(metricsText), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var v struct{ Volume map[string]any }
	p.mustCall(202, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "hooked"}}, &v)
	want := map[string]bool{"volume.create.start": false, "volume.create.end": false}
	deadline := time.After(pointTimeout)
	for !want["volume.create.start"] || !want["volume.create.end"] {
		select {
		case e := <-events:
			if _, ok := want[e.Type]; ok && e.Payload["id"] == v.Volume["id"] && e.ProjectID == "admin" {
				want[e.Type] = true
			}
		case <-deadline:
			t.Fatalf("notifications seen: %v; log: %s", want, p.log.String())
		}
	}
	if strings.Contains(p.log.String(), "s3cret") {
		t.Fatal("the webhook secret is in the log")
	}
}

// TestDBSettingsForwarded: serve's --db-setting values reach the data
// plane it starts, each as a flag of its own, and are read back there.
func TestDBSettingsForwarded(t *testing.T) {
	o := dbHostOptions{settings: []string{"postgresql:max_wal_size=4GB", "mariadb:innodb_buffer_pool_size=1G"}}
	args := o.args()
	want := []string{"--db-setting", "postgresql:max_wal_size=4GB", "--db-setting", "mariadb:innodb_buffer_pool_size=1G"}
	if strings.Join(args, " ") != strings.Join(want, " ") {
		t.Fatalf("args %q, want %q", args, want)
	}
	a := &app{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	f := a.serveCommand().Flags() // cairn volume serve's
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	back, err := f.GetStringArray("db-setting")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseDBSettings(back)
	if err != nil {
		t.Fatal(err)
	}
	if got["postgresql"]["max_wal_size"] != "4GB" || got["mariadb"]["innodb_buffer_pool_size"] != "1G" || len(got) != 2 {
		t.Fatalf("parsed %v", got)
	}
}
