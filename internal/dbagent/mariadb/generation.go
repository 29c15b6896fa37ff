package mariadb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
)

// generationFile, in the data directory, holds the binary log's
// generation (dbagent.BinlogState.Generation) in decimal. It is absent
// until a recovery replays a binary log into the server: generation 1.
// Being on the volume, it goes back with the volume when a recover is
// undone.
const generationFile = "cairn-binlog-generation"

// readGeneration reads the binary log's generation of a data directory.
func readGeneration(dataDir string) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, generationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("binary log generation: %w", err)
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || g == 0 {
		return 0, fmt.Errorf("binary log generation %q: %w", truncate(string(b), 20), cairn.ErrCorrupt)
	}
	return uint32(g), nil
}

// writeGeneration sets a data directory's binary log generation,
// durably: written aside, synced, renamed over, the directory synced.
func (e *Engine) writeGeneration(dataDir string, g uint32) error {
	path := filepath.Join(dataDir, generationFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("binary log generation: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", g)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = e.user.Own(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("binary log generation: %w", err)
	}
	d, err := os.Open(dataDir)
	if err != nil {
		return fmt.Errorf("binary log generation: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("binary log generation: %w", err)
	}
	return nil
}
