package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
)

// TestRestoreFromAnotherDeployment: a second deployment, with a catalog
// and data directory of its own, pointed at the first one's store and
// key, restores a PostgreSQL and a MariaDB instance of the first to a
// point in time from the store alone: the backups are found there, and
// the rows are exactly those committed by the instant. An instance the
// store does not know is a 404.
func TestRestoreFromAnotherDeployment(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	dataA := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, dataA)
	a := startService(t, dataA)
	pg := makeMistake(t, a, "first-pg")
	my := makeMariaMistake(t, a, "first-mariadb")
	a.stop()

	dataB := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, dataB)
	b := startService(t, dataB, "--backup-store", filepath.Join(dataA, "backups"), "--backup-key-file", filepath.Join(dataA, "backup.key"))
	var missing map[string]any
	if code := b.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "nowhere", "datastore": map[string]any{"type": "postgresql", "version": "15"}, "restorePoint": map[string]any{"instance": "6f1c5d1e-0000-4000-8000-000000000000",
			"point_in_time": pg.target.UTC().Format(time.RFC3339Nano)}}}, &missing); code != 404 {
		t.Fatalf("an instance found nowhere: %d %v", code, missing)
	}
	restoreMistakeAt(t, b, pg, "postgresql")
	restoreMistakeAt(t, b, my, "mariadb")
}

// restoreMistakeAt restores the instance of mistake m to its target into
// a new instance of p, and checks it holds exactly the rows committed by
// then.
func restoreMistakeAt(t *testing.T, p *svcProc, m mistake, datastore string) {
	t.Helper()
	var created struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "at-" + m.id[:8], "datastore": map[string]any{"type": datastore}, "restorePoint": map[string]any{"instance": m.id,
			"point_in_time": m.target.UTC().Format(time.RFC3339Nano)}}}, &created); code != 202 {
		t.Fatalf("%s: a restore to a point in time: %d %v", datastore, code, created)
	}
	insts, _ := p.dbSettled()
	got := byID(t, insts, created.Instance["id"].(string))
	if got["status"] != "ACTIVE" || got["backup_id"] != m.backup["id"] {
		t.Fatalf("%s: restored instance %v (want ACTIVE, from backup %s)", datastore, got, m.backup["id"])
	}
	var ids []int
	if datastore == "postgresql" {
		c := pgConn(t, got)
		ids = stampIDs(t, c)
		c.Close(t.Context())
	} else {
		ids = mariaIDs(t, mariaDB(t, got, false))
	}
	if fmt.Sprint(ids) != fmt.Sprint(m.want()) {
		t.Fatalf("%s: rows %v, want %v", datastore, ids, m.want())
	}
}

// TestPointInTimeOnS3: the point-in-time scenario of both datastores
// with the service's store in S3: the archive's pieces and the backups
// live there, and restores to the instant hold exactly the rows
// committed by then.
func TestPointInTimeOnS3(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	var kit *storeKit
	for _, k := range storeKits(t) {
		if k.name == "s3" {
			kit = &k
		}
	}
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	loc, _ := kit.fresh(t, data)
	p := startServiceEnv(t, data, kit.env, "--backup-store", loc)
	pg := makeMistake(t, p, "s3-pg")
	my := makeMariaMistake(t, p, "s3-mariadb")
	restoreMistakeAt(t, p, pg, "postgresql")
	restoreMistakeAt(t, p, my, "mariadb")
}
