package main

// How the CLI finds a running cairn serve that is not on its default data
// directory: every cairn serve registers in a per-user directory while it
// runs, and the API commands look there when nothing else names an API.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// registryEntry is one running cairn serve: REGISTRY/PID.json.
type registryEntry struct {
	PID     int    `json:"pid"`
	URL     string `json:"url"`
	DataDir string `json:"data_dir"`
}

// registryDir is where the running services of this user register:
// $XDG_RUNTIME_DIR/cairn (per user, emptied when the user's last session
// ends), else cairn/services under the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache).
func (a *app) registryDir() (string, error) {
	if d := a.getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "cairn"), nil
	}
	if d := a.getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cairn", "services"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("service registry: %w", err)
	}
	return filepath.Join(home, ".cache", "cairn", "services"), nil
}

// register records this process as the service of dataDir at url. The
// entry is written after the data directory's service file, and the
// returned function removes it before that file goes, so a live entry
// always has a service file naming the same process.
func (a *app) register(url, dataDir string) (unregister func(), err error) {
	dir, err := a.registryDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("service registry: %w", err)
	}
	data, _ := json.Marshal(registryEntry{PID: os.Getpid(), URL: url, DataDir: dataDir})
	path := filepath.Join(dir, strconv.Itoa(os.Getpid())+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return nil, fmt.Errorf("service registry: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("service registry: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}

// liveServices returns the registered services that still run, by PID.
// An entry whose process is gone, or whose data directory's service file
// no longer names it (its PID was reused), is stale: it is ignored and
// removed.
func (a *app) liveServices() []registryEntry {
	dir, err := a.registryDir()
	if err != nil {
		return nil
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	var live []registryEntry
	for _, p := range paths {
		pid, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".json"))
		if err != nil {
			continue // not an entry
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var e registryEntry
		if json.Unmarshal(data, &e) != nil || e.PID != pid || e.DataDir == "" {
			continue
		}
		if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			_ = os.Remove(p) // the process is gone
			continue
		}
		if info := localService(e.DataDir); info == nil || info.PID != pid || info.URL != e.URL {
			_ = os.Remove(p) // another process has the PID now
			continue
		}
		live = append(live, e)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].PID < live[j].PID })
	return live
}

// findRegistered returns the one running service registered, nil when
// none is; several are an error that lists them.
func (a *app) findRegistered() (*registryEntry, error) {
	live := a.liveServices()
	switch len(live) {
	case 0:
		return nil, nil
	case 1:
		return &live[0], nil
	}
	var list []string
	for _, e := range live {
		list = append(list, fmt.Sprintf("  pid %d at %s (data directory %s)", e.PID, e.URL, e.DataDir))
	}
	return nil, usageError{fmt.Errorf("%d cairn serve processes are running:\n%s\nchoose one: pass --url (with --token) or --data-dir (or set CAIRN_URL or CAIRN_DATA_DIR)",
		len(live), strings.Join(list, "\n"))}
}

// dataDirChosen reports whether the data directory was named (--data-dir
// or CAIRN_DATA_DIR) rather than defaulted: a named one is the one meant,
// and the registry is not consulted.
func (a *app) dataDirChosen() bool {
	return a.dataDirFlag != "" || a.getenv("CAIRN_DATA_DIR") != ""
}
