package postgres

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// backupLabel is what a restore reads from the label pg_backup_stop
// returns (the backup_label file).
type backupLabel struct {
	StartLSN      dbagent.LSN // START WAL LOCATION
	StartFile     string      // its WAL file
	CheckpointLSN dbagent.LSN // CHECKPOINT LOCATION
	Timeline      uint32      // START TIMELINE
	Label         string      // LABEL
	StartTime     string      // START TIME
}

// parseBackupLabel parses a backup_label file:
//
//	START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//	CHECKPOINT LOCATION: 0/2000060
//	BACKUP METHOD: streamed
//	BACKUP FROM: primary
//	START TIME: 2026-12-05 08:47:05 UTC
//	LABEL: pg_basebackup base backup
//	START TIMELINE: 1
func parseBackupLabel(s string) (backupLabel, error) {
	var b backupLabel
	var haveStart, haveCheckpoint, haveTimeline bool
	for _, line := range strings.Split(s, "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "START WAL LOCATION":
			lsn, rest, _ := strings.Cut(value, " ")
			b.StartLSN, err = dbagent.ParseLSN(lsn)
			file, ok := strings.CutPrefix(rest, "(file ")
			file, ok2 := strings.CutSuffix(file, ")")
			if !ok || !ok2 || !walFileName.MatchString(file) {
				return b, fmt.Errorf("backup label: START WAL LOCATION %q: %w", value, cairn.ErrCorrupt)
			}
			b.StartFile, haveStart = file, err == nil
		case "CHECKPOINT LOCATION":
			b.CheckpointLSN, err = dbagent.ParseLSN(value)
			haveCheckpoint = err == nil
		case "START TIMELINE":
			var tli uint64
			tli, err = strconv.ParseUint(value, 10, 32)
			b.Timeline, haveTimeline = uint32(tli), err == nil && tli > 0
		case "LABEL":
			b.Label = value
		case "START TIME":
			b.StartTime = value
		}
		if err != nil {
			return b, fmt.Errorf("backup label: %s %q: %v: %w", key, value, err, cairn.ErrCorrupt)
		}
	}
	if !haveStart || !haveCheckpoint || !haveTimeline {
		return b, fmt.Errorf("backup label: START WAL LOCATION, CHECKPOINT LOCATION or START TIMELINE missing: %w", cairn.ErrCorrupt)
	}
	if b.CheckpointLSN < b.StartLSN {
		return b, fmt.Errorf("backup label: checkpoint %s before start %s: %w", b.CheckpointLSN, b.StartLSN, cairn.ErrCorrupt)
	}
	return b, nil
}

// walFileName matches a WAL segment's file name: timeline, then the
// segment number in two halves, 8 hex digits each.
var walFileName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// walFile returns the name of the WAL segment holding lsn.
func walFile(timeline uint32, lsn dbagent.LSN, segSize int64) string {
	seg := uint64(lsn) / uint64(segSize)
	perID := uint64(0x100000000) / uint64(segSize)
	return fmt.Sprintf("%08X%08X%08X", timeline, seg/perID, seg%perID)
}

// basebackupPoint is what pg_basebackup -v reports of its backup.
type basebackupPoint struct {
	Start, End dbagent.LSN
	Timeline   uint32
}

var (
	bbStart = regexp.MustCompile(`write-ahead log start point: ([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}) on timeline ([0-9]{1,10})`)
	bbEnd   = regexp.MustCompile(`write-ahead log end point: ([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})`)
)

// parseBasebackupOutput reads the WAL start and end points from
// pg_basebackup -v's standard error:
//
//	pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
//	pg_basebackup: write-ahead log end point: 0/2000100
func parseBasebackupOutput(stderr string) (basebackupPoint, error) {
	var p basebackupPoint
	s := bbStart.FindStringSubmatch(stderr)
	e := bbEnd.FindStringSubmatch(stderr)
	if s == nil || e == nil {
		return p, fmt.Errorf("pg_basebackup reported no WAL start or end point: %w", cairn.ErrCorrupt)
	}
	var err error
	if p.Start, err = dbagent.ParseLSN(s[1]); err != nil {
		return p, err
	}
	if p.End, err = dbagent.ParseLSN(e[1]); err != nil {
		return p, err
	}
	tli, err := strconv.ParseUint(s[2], 10, 32)
	if err != nil || tli == 0 {
		return p, fmt.Errorf("pg_basebackup: timeline %q: %w", s[2], cairn.ErrCorrupt)
	}
	p.Timeline = uint32(tli)
	if p.End < p.Start {
		return p, fmt.Errorf("pg_basebackup: end point %s before start point %s: %w", p.End, p.Start, cairn.ErrCorrupt)
	}
	return p, nil
}

var versionOutput = regexp.MustCompile(`^postgres \(PostgreSQL\) ([0-9]{1,4})(\.[0-9]{1,4})?`)

// parseVersion reads `postgres --version`: "postgres (PostgreSQL) 15.18
// (Debian 15.18-0+deb12u1)" gives release 15.18, major version 15.
func parseVersion(out string) (release, major string, err error) {
	m := versionOutput.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return "", "", fmt.Errorf("postgres --version: unexpected output %q: %w", truncate(out, 100), cairn.ErrCorrupt)
	}
	return m[1] + m[2], m[1], nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
