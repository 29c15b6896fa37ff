package mariadb

import (
	"errors"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
)

func TestParseVersion(t *testing.T) {
	r, m, err := parseVersion("mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n")
	if err != nil || r != "10.11.19" || m != "10.11" {
		t.Errorf("got %q %q %v", r, m, err)
	}
	for _, out := range []string{"", "postgres (PostgreSQL) 15.18", "mysqld  Ver 8.0.36 for Linux", "Ver 10.11-MariaDB"} {
		if _, _, err := parseVersion(out); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseVersion(%q) = %v", out, err)
		}
	}
}

func TestParseGTIDList(t *testing.T) {
	list, err := parseGTIDList("1-2-5,0-1-16")
	if err != nil || len(list) != 2 || list[0] != (GTID{0, 1, 16}) || list[1] != (GTID{1, 2, 5}) {
		t.Fatalf("got %v, %v", list, err)
	}
	if got := formatGTIDList(list); got != "0-1-16,1-2-5" {
		t.Errorf("formatted %q", got)
	}
	if list, err := parseGTIDList(""); err != nil || list != nil {
		t.Errorf("empty: %v %v", list, err)
	}
	for _, s := range []string{"0-1", "0-1-2-3", "a-1-2", "0-1-2,0-3-4", "0-1-", "-1-2", "0-1-2,", "4294967296-1-1", "0--1-1"} {
		if _, err := parseGTIDList(s); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseGTIDList(%q) = %v", s, err)
		}
	}
}

func TestParseMasterStatus(t *testing.T) {
	cols := []string{"File", "Position", "Binlog_Do_DB", "Binlog_Ignore_DB"}
	f, p, err := parseMasterStatus(cols, []string{"mysql-bin.000001", "328", "", ""})
	if err != nil || f != "mysql-bin.000001" || p != 328 {
		t.Errorf("got %q %d %v", f, p, err)
	}
	for _, vals := range [][]string{
		{"mysql-bin.000001", "x", "", ""},
		{"../etc/passwd", "1", "", ""},
		{"", "1", "", ""},
		{"mysql-bin.000001", "1"},
	} {
		if _, _, err := parseMasterStatus(cols, vals); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseMasterStatus(%q) = %v", vals, err)
		}
	}
}

const (
	sampleCheckpoints = "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 44864\nlast_lsn = 55693\nrecover_binlog_info = 0\n"
	sampleInfo        = `uuid = 6321bb4f-f088-11f1-82ef-02fc00000001
name = 
tool_name = mariadb-backup
server_version = 10.11.19-MariaDB-0+deb12u1-log
binlog_pos = filename 'mysql-bin.000001', position '3540', GTID of the last change '0-1-16'
innodb_from_lsn = 0
innodb_to_lsn = 44864
`
	sampleDumpHead = "-- MariaDB dump 10.19\n-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=3540;\n\nCREATE DATABASE"
	sampleDumpTail = "-- Preferably use GTID to start replication from GTID position:\n\n-- SET GLOBAL gtid_slave_pos='0-1-16';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
)

func TestParseCheckpoints(t *testing.T) {
	c, err := parseCheckpoints(sampleCheckpoints)
	if err != nil || c != (checkpoints{Type: "full-backuped", ToLSN: 44864, LastLSN: 55693}) {
		t.Errorf("got %+v, %v", c, err)
	}
	for _, s := range []string{
		"",
		strings.Replace(sampleCheckpoints, "to_lsn = 44864", "to_lsn = x", 1),
		strings.Replace(sampleCheckpoints, "from_lsn = 0", "from_lsn = 50000", 1),
		strings.Replace(sampleCheckpoints, "backup_type = full-backuped\n", "", 1),
	} {
		if _, err := parseCheckpoints(s); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseCheckpoints(%q) = %v", s, err)
		}
	}
}

func TestParseBackupInfo(t *testing.T) {
	f, p, g, err := parseBackupInfo(sampleInfo)
	if err != nil || f != "mysql-bin.000001" || p != 3540 || g != "0-1-16" {
		t.Errorf("got %q %d %q %v", f, p, g, err)
	}
	noGTID := strings.Replace(sampleInfo, ", GTID of the last change '0-1-16'", "", 1)
	if _, _, g, err := parseBackupInfo(noGTID); err != nil || g != "" {
		t.Errorf("without GTID: %q %v", g, err)
	}
	for _, s := range []string{"", strings.Replace(sampleInfo, "'3540'", "'x'", 1), strings.Replace(sampleInfo, "'0-1-16'", "'0-1'", 1)} {
		if _, _, _, err := parseBackupInfo(s); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseBackupInfo(%q) = %v", s, err)
		}
	}
}

func TestParseDumpPoint(t *testing.T) {
	f, p, g, err := parseDumpPoint(sampleDumpHead, sampleDumpTail)
	if err != nil || f != "mysql-bin.000001" || p != 3540 || g != "0-1-16" {
		t.Errorf("got %q %d %q %v", f, p, g, err)
	}
	for _, c := range [][2]string{{"", sampleDumpTail}, {sampleDumpHead, ""}, {strings.Replace(sampleDumpHead, "3540", "-1", 1), sampleDumpTail}} {
		if _, _, _, err := parseDumpPoint(c[0], c[1]); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseDumpPoint(%q, %q) = %v", c[0], c[1], err)
		}
	}
}

func TestHeadTail(t *testing.T) {
	var sink strings.Builder
	h := &headTail{w: &sink, max: 4}
	for _, s := range []string{"ab", "cdef", "ghijklmnop", "q"} {
		h.Write([]byte(s))
	}
	tail := string(h.tail[max(0, len(h.tail)-h.max):])
	if string(h.head) != "abcd" || tail != "nopq" || sink.String() != "abcdefghijklmnopq" {
		t.Errorf("head %q tail %q sink %q", h.head, tail, sink.String())
	}
}

func FuzzParseGTIDList(f *testing.F) {
	for _, s := range []string{"0-1-16", "1-2-5,0-1-16", "", "0-1-2,0-3-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, err := parseGTIDList(s)
		if err != nil {
			return
		}
		again, err := parseGTIDList(formatGTIDList(list))
		if err != nil || len(again) != len(list) {
			t.Fatalf("%q -> %v -> %v, %v", s, list, again, err)
		}
		for i := range list {
			if again[i] != list[i] {
				t.Fatalf("%q: %v != %v", s, again, list)
			}
		}
	})
}

func FuzzParseMasterStatus(f *testing.F) {
	f.Add("mysql-bin.000001", "328")
	f.Fuzz(func(t *testing.T, file, pos string) {
		got, _, err := parseMasterStatus([]string{"File", "Position"}, []string{file, pos})
		if err == nil && (got != file || strings.ContainsAny(got, "/'\\ ")) {
			t.Fatalf("accepted %q", file)
		}
	})
}

func FuzzParseCheckpoints(f *testing.F) {
	f.Add(sampleCheckpoints)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCheckpoints(s)
		if err == nil && (c.FromLSN > c.ToLSN || c.ToLSN > c.LastLSN || c.Type == "") {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func FuzzParseBackupInfo(f *testing.F) {
	f.Add(sampleInfo)
	f.Fuzz(func(t *testing.T, s string) {
		file, _, gtid, err := parseBackupInfo(s)
		if err != nil {
			return
		}
		if !binlogFile.MatchString(file) {
			t.Fatalf("accepted file %q", file)
		}
		if _, err := parseGTIDList(gtid); err != nil {
			t.Fatalf("accepted GTID %q", gtid)
		}
	})
}

func FuzzParseDumpPoint(f *testing.F) {
	f.Add(sampleDumpHead, sampleDumpTail)
	f.Fuzz(func(t *testing.T, head, tail string) {
		file, _, gtid, err := parseDumpPoint(head, tail)
		if err != nil {
			return
		}
		if !binlogFile.MatchString(file) {
			t.Fatalf("accepted file %q", file)
		}
		if _, err := parseGTIDList(gtid); err != nil {
			t.Fatalf("accepted GTID %q", gtid)
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Add("mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, m, err := parseVersion(s)
		if err == nil && !strings.HasPrefix(r, m+".") {
			t.Fatalf("accepted %q: %q %q", s, r, m)
		}
	})
}
