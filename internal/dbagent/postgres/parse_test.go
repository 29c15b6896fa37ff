package postgres

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

const sampleLabel = `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-12-05 08:47:05 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
`

func TestParseBackupLabel(t *testing.T) {
	b, err := parseBackupLabel(sampleLabel)
	if err != nil {
		t.Fatal(err)
	}
	want := backupLabel{StartLSN: 0x2000028, StartFile: "000000010000000000000002", CheckpointLSN: 0x2000060,
		Timeline: 1, Label: "pg_basebackup base backup", StartTime: "2026-12-05 08:47:05 UTC"}
	if b != want {
		t.Errorf("got %+v, want %+v", b, want)
	}
	for name, label := range map[string]string{
		"empty":               "",
		"no start":            strings.Replace(sampleLabel, "START WAL LOCATION", "X", 1),
		"no checkpoint":       strings.Replace(sampleLabel, "CHECKPOINT LOCATION", "X", 1),
		"no timeline":         strings.Replace(sampleLabel, "START TIMELINE: 1", "", 1),
		"timeline 0":          strings.Replace(sampleLabel, "START TIMELINE: 1", "START TIMELINE: 0", 1),
		"bad lsn":             strings.Replace(sampleLabel, "0/2000028", "0/x", 1),
		"bad file":            strings.Replace(sampleLabel, "(file 000000010000000000000002)", "(file ../../x)", 1),
		"checkpoint too soon": strings.Replace(sampleLabel, "CHECKPOINT LOCATION: 0/2000060", "CHECKPOINT LOCATION: 0/1000000", 1),
	} {
		if _, err := parseBackupLabel(label); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

const sampleBasebackup = `pg_basebackup: initiating base backup, waiting for checkpoint to complete
pg_basebackup: checkpoint completed
pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
pg_basebackup: write-ahead log end point: 0/2000100
pg_basebackup: syncing data to disk ...
pg_basebackup: base backup completed
`

func TestParseBasebackupOutput(t *testing.T) {
	p, err := parseBasebackupOutput(sampleBasebackup)
	if err != nil || p != (basebackupPoint{Start: 0x2000028, End: 0x2000100, Timeline: 1}) {
		t.Errorf("got %+v, %v", p, err)
	}
	for name, out := range map[string]string{
		"empty":      "",
		"no end":     strings.Replace(sampleBasebackup, "end point", "x", 1),
		"end first":  strings.Replace(sampleBasebackup, "end point: 0/2000100", "end point: 0/1", 1),
		"timeline 0": strings.Replace(sampleBasebackup, "timeline 1", "timeline 0", 1),
	} {
		if _, err := parseBasebackupOutput(out); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for _, c := range []struct{ out, release, major string }{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15.18", "15"},
		{"postgres (PostgreSQL) 16.2", "16.2", "16"},
		{"postgres (PostgreSQL) 17devel", "17", "17"},
	} {
		r, m, err := parseVersion(c.out)
		if err != nil || r != c.release || m != c.major {
			t.Errorf("parseVersion(%q) = %q %q %v", c.out, r, m, err)
		}
	}
	if _, _, err := parseVersion("mariadbd Ver 10.11"); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("foreign output: %v", err)
	}
}

func TestWalFile(t *testing.T) {
	for _, c := range []struct {
		tli  uint32
		lsn  dbagent.LSN
		seg  int64
		want string
	}{
		{1, 0x2000028, 16 << 20, "000000010000000000000002"},
		{1, 0x1_00000000, 16 << 20, "000000010000000100000000"},
		{1, 0x1_FF000000, 16 << 20, "0000000100000001000000FF"},
		{2, 0x1_C0000010, 1 << 30, "000000020000000100000003"},
		{0xA, 0x7_0400_0000, 64 << 20, "0000000A0000000700000001"},
	} {
		if got := walFile(c.tli, c.lsn, c.seg); got != c.want || !walFileName.MatchString(got) {
			t.Errorf("walFile(%d, %s, %d) = %s, want %s", c.tli, c.lsn, c.seg, got, c.want)
		}
	}
}

func TestCutWAL(t *testing.T) {
	dir := t.TempDir()
	const seg = 1 << 20
	if err := os.Mkdir(filepath.Join(dir, walDir), 0o700); err != nil {
		t.Fatal(err)
	}
	stop := dbagent.LSN(3*seg + 1000)
	path := filepath.Join(dir, walDir, walFile(1, stop, seg))
	if err := os.WriteFile(path, []byte(strings.Repeat("w", seg)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cutWAL(dir, 1, stop, seg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != seg || strings.Count(string(b[:1000]), "w") != 1000 || strings.Trim(string(b[1000:]), "\x00") != "" {
		t.Errorf("cut segment: %d bytes, %d w's before the stop", len(b), strings.Count(string(b[:1000]), "w"))
	}
	// A stop on a segment boundary needs no segment after it.
	if err := cutWAL(dir, 1, 5*seg, seg); err != nil {
		t.Errorf("stop on a boundary: %v", err)
	}
	if err := cutWAL(dir, 1, 5*seg+8, seg); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("missing segment: %v", err)
	}
	if err := os.Truncate(path, seg/2); err != nil {
		t.Fatal(err)
	}
	if err := cutWAL(dir, 1, stop, seg); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("short segment: %v", err)
	}
}

func FuzzParseBackupLabel(f *testing.F) {
	f.Add(sampleLabel)
	f.Add("START WAL LOCATION: 0/1 (file 000000010000000000000000)\nCHECKPOINT LOCATION: 0/1\nSTART TIMELINE: 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseBackupLabel(s)
		if err != nil {
			return
		}
		if b.Timeline == 0 || b.CheckpointLSN < b.StartLSN || !walFileName.MatchString(b.StartFile) {
			t.Fatalf("accepted %+v", b)
		}
	})
}

func FuzzParseBasebackupOutput(f *testing.F) {
	f.Add(sampleBasebackup)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseBasebackupOutput(s)
		if err == nil && (p.Timeline == 0 || p.End < p.Start) {
			t.Fatalf("accepted %+v", p)
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Add("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, m, err := parseVersion(s)
		if err == nil && (m == "" || !strings.HasPrefix(r, m)) {
			t.Fatalf("accepted %q: %q %q", s, r, m)
		}
	})
}
