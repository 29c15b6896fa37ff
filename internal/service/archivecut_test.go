package service

import (
	"encoding/json"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
)

// TestArchiveCut: the cut is the oldest backup's start on its timeline
// or generation; a piece goes only when it lies wholly before it; no
// backup with a point (none, logical only, a record without one, a
// record that cannot be read) cuts nothing.
func TestArchiveCut(t *testing.T) {
	rec := func(r dbagent.Record) []byte { b, _ := json.Marshal(r); return b }
	pg := func(tli uint32, start dbagent.LSN) cairn.DatabaseBackup {
		return cairn.DatabaseBackup{Strategy: cairn.StrategySnapshot, Record: rec(dbagent.Record{PostgreSQL: &dbagent.PostgresPoint{Timeline: tli, StartLSN: start, WALSegmentSize: 1024}})}
	}
	mdb := func(gen uint32, file string) cairn.DatabaseBackup {
		return cairn.DatabaseBackup{Strategy: cairn.StrategyPhysical, Record: rec(dbagent.Record{MariaDB: &dbagent.MariaDBPoint{BinlogFile: file, BinlogPos: 400, BinlogGeneration: gen}})}
	}
	logical := cairn.DatabaseBackup{Strategy: cairn.StrategyLogical, Record: rec(dbagent.Record{PostgreSQL: &dbagent.PostgresPoint{Timeline: 1, StartLSN: 1}})}
	wal := func(tli uint32, start, end uint64) repo.LogRef {
		return repo.LogRef{Log: walLog(tli), Start: start, End: end}
	}
	bl := func(gen uint32, file string) repo.LogRef {
		return repo.LogRef{Log: binlogLog(gen, file), Start: 0, End: 1000}
	}
	for _, c := range []struct {
		name     string
		backups  []cairn.DatabaseBackup
		cut      bool
		needless []repo.LogRef
		needed   []repo.LogRef
	}{
		{"no backup", nil, false, nil, nil},
		{"logical only", []cairn.DatabaseBackup{logical}, false, nil, nil},
		{"a record without a point", []cairn.DatabaseBackup{{Strategy: cairn.StrategySnapshot, Record: rec(dbagent.Record{})}}, false, nil, nil},
		{"an unreadable record", []cairn.DatabaseBackup{pg(2, 5000), {Strategy: cairn.StrategySnapshot, Record: []byte("{")}}, false, nil, nil},
		{"PostgreSQL: the oldest of two timelines, from its start's segment", []cairn.DatabaseBackup{pg(3, 100), pg(2, 5000), logical}, true,
			[]repo.LogRef{wal(1, 0, 9000), wal(2, 3000, 4096)},
			[]repo.LogRef{wal(2, 4000, 4097), wal(2, 4096, 5000), wal(2, 5000, 6000), wal(3, 0, 100), {Log: "history-00000002", Start: 0, End: 10}}},
		{"PostgreSQL: a record without the segment size", []cairn.DatabaseBackup{{Strategy: cairn.StrategySnapshot,
			Record: rec(dbagent.Record{PostgreSQL: &dbagent.PostgresPoint{Timeline: 1, StartLSN: 3<<30 + 5}})}}, true,
			[]repo.LogRef{wal(1, 2<<30, 3<<30)},
			[]repo.LogRef{wal(1, 3<<30, 3<<30+4)}},
		{"MariaDB: the oldest file of the oldest generation", []cairn.DatabaseBackup{mdb(2, "mysql-bin.000002"), mdb(1, "mysql-bin.000007")}, true,
			[]repo.LogRef{bl(1, "mysql-bin.000006"), bl(1, "mysql-bin.000001")},
			[]repo.LogRef{bl(1, "mysql-bin.000007"), bl(1, "mysql-bin.000010"), bl(2, "mysql-bin.000001"), wal(1, 0, 1)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cut, ok := archiveCutOf(c.backups)
			if ok != c.cut {
				t.Fatalf("cut %+v, %v; want a cut: %v", cut, ok, c.cut)
			}
			for _, p := range c.needless {
				if !cut.needless(p) {
					t.Errorf("%s %x-%x is kept by the cut %+v", p.Log, p.Start, p.End, cut)
				}
			}
			for _, p := range c.needed {
				if cut.needless(p) {
					t.Errorf("%s %x-%x goes by the cut %+v", p.Log, p.Start, p.End, cut)
				}
			}
		})
	}
}
