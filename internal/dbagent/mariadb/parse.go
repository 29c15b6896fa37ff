package mariadb

import (
	"bufio"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
)

var versionOutput = regexp.MustCompile(`\bVer ([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,4})-MariaDB\b`)

// parseVersion reads `mariadbd --version`: "mariadbd  Ver
// 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
// gives release 10.11.19, major version 10.11.
func parseVersion(out string) (release, major string, err error) {
	m := versionOutput.FindStringSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("mariadbd --version: unexpected output %q: %w", truncate(out, 100), cairn.ErrCorrupt)
	}
	return m[1] + "." + m[2] + "." + m[3], m[1] + "." + m[2], nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// GTID is one domain's position in a GTID list: domain-server-sequence.
type GTID struct {
	Domain, Server uint32
	Seq            uint64
}

// parseGTIDList parses a GTID position such as @@gtid_binlog_pos:
// "0-1-16,1-2-5", at most one GTID per domain; "" is the empty list.
// The result is ordered by domain.
func parseGTIDList(s string) ([]GTID, error) {
	var out []GTID
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	seen := map[uint32]bool{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(part), "-")
		if len(f) != 3 {
			return nil, fmt.Errorf("GTID %q: %w", part, cairn.ErrCorrupt)
		}
		d, err1 := strconv.ParseUint(f[0], 10, 32)
		sv, err2 := strconv.ParseUint(f[1], 10, 32)
		seq, err3 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("GTID %q: %w", part, cairn.ErrCorrupt)
		}
		if seen[uint32(d)] {
			return nil, fmt.Errorf("GTID list %q names domain %d twice: %w", s, d, cairn.ErrCorrupt)
		}
		seen[uint32(d)] = true
		out = append(out, GTID{Domain: uint32(d), Server: uint32(sv), Seq: seq})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}

// formatGTIDList is the inverse of parseGTIDList.
func formatGTIDList(list []GTID) string {
	parts := make([]string, len(list))
	for i, g := range list {
		parts[i] = fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq)
	}
	return strings.Join(parts, ",")
}

var binlogFile = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,200}\.[0-9]{6,}$`)

// parseMasterStatus reads SHOW MASTER STATUS's row, given as its column
// names and values: File and Position.
func parseMasterStatus(columns, values []string) (string, uint64, error) {
	if len(columns) != len(values) {
		return "", 0, fmt.Errorf("SHOW MASTER STATUS: %d columns, %d values: %w", len(columns), len(values), cairn.ErrCorrupt)
	}
	var file, pos string
	for i, c := range columns {
		switch c {
		case "File":
			file = values[i]
		case "Position":
			pos = values[i]
		}
	}
	return checkBinlogPos(file, pos)
}

func checkBinlogPos(file, pos string) (string, uint64, error) {
	if !binlogFile.MatchString(file) {
		return "", 0, fmt.Errorf("binary log file %q: %w", truncate(file, 100), cairn.ErrCorrupt)
	}
	p, err := strconv.ParseUint(pos, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("binary log position %q: %w", truncate(pos, 100), cairn.ErrCorrupt)
	}
	return file, p, nil
}

// checkpoints is mariadb-backup's xtrabackup_checkpoints file.
type checkpoints struct {
	Type                    string // full-backuped, incremental, …
	FromLSN, ToLSN, LastLSN uint64
}

// parseKeyValues reads "key = value" lines.
func parseKeyValues(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// parseCheckpoints reads xtrabackup_checkpoints:
//
//	backup_type = full-backuped
//	from_lsn = 0
//	to_lsn = 44864
//	last_lsn = 55693
func parseCheckpoints(s string) (checkpoints, error) {
	kv := parseKeyValues(s)
	var c checkpoints
	c.Type = kv["backup_type"]
	var err error
	for _, f := range []struct {
		key string
		dst *uint64
	}{{"from_lsn", &c.FromLSN}, {"to_lsn", &c.ToLSN}, {"last_lsn", &c.LastLSN}} {
		if *f.dst, err = strconv.ParseUint(kv[f.key], 10, 64); err != nil {
			return c, fmt.Errorf("xtrabackup_checkpoints: %s %q: %w", f.key, truncate(kv[f.key], 40), cairn.ErrCorrupt)
		}
	}
	if c.Type == "" || c.FromLSN > c.ToLSN || c.ToLSN > c.LastLSN {
		return c, fmt.Errorf("xtrabackup_checkpoints: type %q, LSNs %d, %d, %d: %w", truncate(c.Type, 40), c.FromLSN, c.ToLSN, c.LastLSN, cairn.ErrCorrupt)
	}
	return c, nil
}

var binlogPosInfo = regexp.MustCompile(`^filename '([^']*)', position '([0-9]+)'(?:, GTID of the last change '([0-9,-]*)')?$`)

// parseBackupInfo reads the binary log position from xtrabackup_info:
//
//	binlog_pos = filename 'mysql-bin.000001', position '3540', GTID of the last change '0-1-16'
func parseBackupInfo(s string) (file string, pos uint64, gtid string, err error) {
	v, ok := parseKeyValues(s)["binlog_pos"]
	if !ok {
		return "", 0, "", fmt.Errorf("xtrabackup_info: no binlog_pos: %w", cairn.ErrCorrupt)
	}
	m := binlogPosInfo.FindStringSubmatch(v)
	if m == nil {
		return "", 0, "", fmt.Errorf("xtrabackup_info: binlog_pos %q: %w", truncate(v, 100), cairn.ErrCorrupt)
	}
	if file, pos, err = checkBinlogPos(m[1], m[2]); err != nil {
		return "", 0, "", err
	}
	if _, err := parseGTIDList(m[3]); err != nil {
		return "", 0, "", err
	}
	return file, pos, m[3], nil
}

var (
	dumpMaster = regexp.MustCompile(`(?m)^-- CHANGE MASTER TO MASTER_LOG_FILE='([^']*)', MASTER_LOG_POS=([0-9]+);$`)
	dumpGTID   = regexp.MustCompile(`(?m)^-- SET GLOBAL gtid_slave_pos='([0-9,-]*)';$`)
)

// parseDumpPoint reads the binary log coordinates and the GTID position
// mariadb-dump --master-data=2 --gtid writes as comments, the former near
// the dump's head, the latter near its tail:
//
//	-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=3540;
//	-- SET GLOBAL gtid_slave_pos='0-1-16';
func parseDumpPoint(head, tail string) (file string, pos uint64, gtid string, err error) {
	m := dumpMaster.FindStringSubmatch(head)
	g := dumpGTID.FindStringSubmatch(tail)
	if m == nil || g == nil {
		return "", 0, "", fmt.Errorf("mariadb-dump wrote no binary log coordinates or GTID position: %w", cairn.ErrCorrupt)
	}
	if file, pos, err = checkBinlogPos(m[1], m[2]); err != nil {
		return "", 0, "", err
	}
	if _, err := parseGTIDList(g[1]); err != nil {
		return "", 0, "", err
	}
	return file, pos, g[1], nil
}
