package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// serverError maps the server's errors for a name to the root sentinels.
func serverError(what string, err error) error {
	switch sqlState(err) {
	case "42P04", "42710": // duplicate_database, duplicate_object
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrExists)
	case "3D000", "42704": // invalid_catalog_name, undefined_object
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrNotFound)
	case "22023", "42602", "22021", "0A000": // invalid_parameter_value, invalid_name, bad encoding, feature_not_supported
		return fmt.Errorf("%s: %v: %w", what, err, cairn.ErrInvalid)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// CreateDatabases implements dbagent.Instance. Each database is created
// from template0 (so any encoding and locale may be chosen) and closed to
// PUBLIC: only the users granted it may connect.
func (i *Instance) CreateDatabases(ctx context.Context, dbs []dbagent.Database) error {
	if err := dbagent.ValidateDatabases(dbs, reservedDatabases); err != nil {
		return err
	}
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, d := range dbs {
		stmt := "CREATE DATABASE " + ident(d.Name) + " TEMPLATE template0"
		if d.CharacterSet != "" {
			stmt += " ENCODING " + literal(d.CharacterSet)
		}
		if d.Collate != "" {
			stmt += " LC_COLLATE " + literal(d.Collate) + " LC_CTYPE " + literal(d.Collate)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return serverError("creating database "+d.Name, err)
		}
		if _, err := conn.Exec(ctx, "REVOKE ALL ON DATABASE "+ident(d.Name)+" FROM PUBLIC"); err != nil {
			return serverError("creating database "+d.Name, err)
		}
	}
	return nil
}

// CreateUsers implements dbagent.Instance: a login role per user, with
// all privileges on each of its databases and on their public schema.
func (i *Instance) CreateUsers(ctx context.Context, users []dbagent.User) error {
	if err := dbagent.ValidateUsers(users, reservedUsers, reservedDatabases); err != nil {
		return err
	}
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, u := range users {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+ident(u.Name)+" LOGIN PASSWORD "+literal(u.Password)); err != nil {
			return serverError("creating user "+u.Name, err)
		}
		for _, d := range u.Databases {
			if _, err := conn.Exec(ctx, "GRANT ALL PRIVILEGES ON DATABASE "+ident(d)+" TO "+ident(u.Name)); err != nil {
				return serverError(fmt.Sprintf("granting %s to %s", d, u.Name), err)
			}
			if err := i.grantSchema(ctx, d, u.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// grantSchema lets user create objects in database's public schema,
// which PostgreSQL 15 no longer grants to everyone.
func (i *Instance) grantSchema(ctx context.Context, database, user string) error {
	conn, err := i.connect(ctx, database, "cairn-agent")
	if err != nil {
		return serverError("granting "+database+" to "+user, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "GRANT ALL ON SCHEMA public TO "+ident(user)); err != nil {
		return serverError(fmt.Sprintf("granting %s's schema public to %s", database, user), err)
	}
	return nil
}

// userDatabases lists the databases that hold the instance's data: all
// but the templates and the maintenance database postgres.
func userDatabases(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database
		WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	return names, nil
}

// Checksums implements dbagent.Instance. A table's sum is the MD5 of its
// rows' MD5s (of each row's text form) in sorted order.
func (i *Instance) Checksums(ctx context.Context) ([]dbagent.TableChecksum, error) {
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return nil, err
	}
	dbs, err := userDatabases(ctx, conn)
	_ = conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	var out []dbagent.TableChecksum
	for _, db := range dbs {
		sums, err := i.databaseChecksums(ctx, db)
		if err != nil {
			return nil, err
		}
		out = append(out, sums...)
	}
	return out, nil
}

func (i *Instance) databaseChecksums(ctx context.Context, db string) ([]dbagent.TableChecksum, error) {
	conn, err := i.connect(ctx, db, "cairn-agent")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("listing tables of %s: %w", db, err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var t [2]string
		err := r.Scan(&t[0], &t[1])
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing tables of %s: %w", db, err)
	}
	var out []dbagent.TableChecksum
	for _, t := range tables {
		c := dbagent.TableChecksum{Database: db, Table: t[0] + "." + t[1]}
		q := `SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h COLLATE "C")), '')
			FROM (SELECT md5(t::text) AS h FROM ` + ident(t[0]) + "." + ident(t[1]) + ` AS t) AS rows`
		if err := conn.QueryRow(ctx, q).Scan(&c.Rows, &c.Sum); err != nil {
			return nil, fmt.Errorf("checksum of %s.%s: %w", db, c.Table, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Check implements dbagent.Instance: pg_amcheck of every database's
// heaps, TOAST and B-tree indexes (with --heapallindexed: every heap
// tuple is found in its indexes), then the request's query.
func (i *Instance) Check(ctx context.Context, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	rep := dbagent.CheckReport{Tool: "pg_amcheck"}
	cmd := i.e.tool(ctx, "pg_amcheck", "--no-password", "--all", "--install-missing", "--heapallindexed",
		"--host", i.cfg.RunDir, "--port", strconv.Itoa(i.cfg.Port), "--username", superuser, "--maintenance-db", "postgres")
	passed, out, err := dbagent.RunCheckTool(cmd, nil)
	if err != nil {
		return rep, fmt.Errorf("check: %w", err)
	}
	rep.Passed = passed
	if passed {
		rep.Detail = "pg_amcheck --all --heapallindexed found no corruption"
	} else {
		rep.Detail = "pg_amcheck found corruption: " + out
	}
	if req.Database == "" {
		req.Database = "postgres"
	}
	return dbagent.CheckQuery(ctx, rep, req, i.checkQuery)
}

// checkQuery runs the query in a read-only transaction and returns its
// first row's first column as text.
func (i *Instance) checkQuery(ctx context.Context, req dbagent.CheckRequest) (string, bool, error) {
	conn, err := i.connect(ctx, req.Database, "cairn-check")
	if err != nil {
		return "", false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return "", false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, req.Query)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return "", false, rows.Err()
	}
	vals, err := rows.Values()
	if err != nil {
		return "", false, err
	}
	result := ""
	if len(vals) > 0 && vals[0] != nil {
		result = fmt.Sprint(vals[0])
	}
	rows.Close()
	return result, true, rows.Err()
}
