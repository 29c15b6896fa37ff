package mariadb

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// charsetName is what MariaDB takes unquoted as a character set or
// collation name; dbagent.ValidCharsetName is wider.
var charsetName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// CreateDatabases implements dbagent.Instance.
func (i *Instance) CreateDatabases(ctx context.Context, dbs []dbagent.Database) error {
	if err := dbagent.ValidateDatabases(dbs, reservedDatabases); err != nil {
		return err
	}
	for _, d := range dbs {
		for _, n := range []string{d.CharacterSet, d.Collate} {
			if n != "" && !charsetName.MatchString(n) {
				return fmt.Errorf("database %s: character set or collation %q: %w", d.Name, n, cairn.ErrInvalid)
			}
		}
	}
	db := i.openDB("")
	defer db.Close()
	for _, d := range dbs {
		stmt := "CREATE DATABASE " + ident(d.Name)
		if d.CharacterSet != "" {
			stmt += " CHARACTER SET " + d.CharacterSet
		}
		if d.Collate != "" {
			stmt += " COLLATE " + d.Collate
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return serverError("creating database "+d.Name, err)
		}
	}
	return nil
}

// passwordHash matches what PASSWORD() returns: mysql_native_password's
// hash.
var passwordHash = regexp.MustCompile(`^\*[0-9A-F]{40}$`)

// CreateUsers implements dbagent.Instance: an account at any host per
// user, with all privileges on each of its databases. The password never
// appears in a statement's text: the server hashes it from a parameter
// and the account is created with the hash.
func (i *Instance) CreateUsers(ctx context.Context, users []dbagent.User) error {
	if err := dbagent.ValidateUsers(users, reservedUsers, reservedDatabases); err != nil {
		return err
	}
	db := i.openDB("")
	defer db.Close()
	for _, u := range users {
		for _, d := range u.Databases {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", d).Scan(&n); err != nil {
				return fmt.Errorf("creating user %s: %w", u.Name, err)
			}
			if n == 0 {
				return fmt.Errorf("creating user %s: no database %s: %w", u.Name, d, cairn.ErrNotFound)
			}
		}
		var hash string
		if err := db.QueryRowContext(ctx, "SELECT PASSWORD(?)", u.Password).Scan(&hash); err != nil {
			return fmt.Errorf("creating user %s: %w", u.Name, err)
		}
		if !passwordHash.MatchString(hash) {
			return fmt.Errorf("creating user %s: the server's password hash has an unexpected form: %w", u.Name, cairn.ErrUnsupported)
		}
		if _, err := db.ExecContext(ctx, "CREATE USER "+account(u.Name)+" IDENTIFIED BY PASSWORD '"+hash+"'"); err != nil {
			return serverError("creating user "+u.Name, err)
		}
		for _, d := range u.Databases {
			if _, err := db.ExecContext(ctx, "GRANT ALL PRIVILEGES ON "+ident(d)+".* TO "+account(u.Name)); err != nil {
				return serverError(fmt.Sprintf("granting %s to %s", d, u.Name), err)
			}
		}
	}
	return nil
}

// userDatabases lists the databases that hold the instance's data: all
// but the server's own.
func userDatabases(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA
		WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY SCHEMA_NAME`)
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("listing databases: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Checksums implements dbagent.Instance: the row count and CHECKSUM TABLE
// ... EXTENDED, which reads every row and does not depend on their order.
func (i *Instance) Checksums(ctx context.Context) ([]dbagent.TableChecksum, error) {
	db := i.openDB("")
	defer db.Close()
	dbs, err := userDatabases(ctx, db)
	if err != nil {
		return nil, err
	}
	var out []dbagent.TableChecksum
	for _, d := range dbs {
		rows, err := db.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES
			WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME`, d)
		if err != nil {
			return nil, fmt.Errorf("listing tables of %s: %w", d, err)
		}
		var tables []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("listing tables of %s: %w", d, err)
			}
			tables = append(tables, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("listing tables of %s: %w", d, err)
		}
		for _, t := range tables {
			c := dbagent.TableChecksum{Database: d, Table: t}
			name := ident(d) + "." + ident(t)
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+name).Scan(&c.Rows); err != nil {
				return nil, fmt.Errorf("counting %s.%s: %w", d, t, err)
			}
			var table string
			var sum sql.NullString
			if err := db.QueryRowContext(ctx, "CHECKSUM TABLE "+name+" EXTENDED").Scan(&table, &sum); err != nil {
				return nil, fmt.Errorf("checksum of %s.%s: %w", d, t, err)
			}
			if !sum.Valid {
				return nil, fmt.Errorf("checksum of %s.%s: none: %w", d, t, cairn.ErrNotFound)
			}
			c.Sum = sum.String
			out = append(out, c)
		}
	}
	return out, nil
}

// Check implements dbagent.Instance: mariadb-check of every table of
// every database (CHECK TABLE), then the request's query. A table the
// tool reports with an error fails the check, whatever its exit status.
func (i *Instance) Check(ctx context.Context, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	rep := dbagent.CheckReport{Tool: "mariadb-check"}
	cmd := i.e.tool(ctx, "mariadb-check", "--socket="+i.socket(), "--user="+i.e.admin, "--all-databases", "--check")
	out := &dbagent.TailBuffer{Max: 1 << 20}
	passed, tail, err := dbagent.RunCheckTool(cmd, out)
	if err != nil {
		return rep, fmt.Errorf("check: %w", err)
	}
	var bad []string
	for l := range strings.SplitSeq(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "error") {
			bad = append(bad, strings.TrimSpace(l))
		}
	}
	rep.Passed = passed && len(bad) == 0
	switch {
	case rep.Passed:
		rep.Detail = "mariadb-check --all-databases found every table OK"
	case len(bad) > 0:
		rep.Detail = "mariadb-check found damage: " + dbagent.LastLines(strings.Join(bad, "\n"), 8)
	default:
		rep.Detail = "mariadb-check failed: " + tail
	}
	return dbagent.CheckQuery(ctx, rep, req, i.checkQuery)
}

// checkQuery runs the query in a read-only transaction and returns its
// first row's first column as text.
func (i *Instance) checkQuery(ctx context.Context, req dbagent.CheckRequest) (string, bool, error) {
	db := i.openDB(req.Database)
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return "", false, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, req.Query)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return "", false, rows.Err()
	}
	cols, err := rows.Columns()
	if err != nil {
		return "", false, err
	}
	vals := make([]any, len(cols))
	var first sql.NullString
	vals[0] = &first
	for k := 1; k < len(vals); k++ {
		vals[k] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		return "", false, err
	}
	rows.Close()
	return first.String, true, rows.Err()
}
