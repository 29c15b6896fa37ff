// Package pgtest gives tests a throwaway database on the PostgreSQL test
// server (scripts/postgres.sh).
package pgtest

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/testenv"
)

// ServerURL is the test server's URL from CAIRN_TEST_POSTGRES_URL. The
// test skips without one, except under CI=true, where it fails: CI must
// prove the PostgreSQL catalog.
func ServerURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("CAIRN_TEST_POSTGRES_URL")
	if u == "" {
		testenv.SkipOrFail(t, "CAIRN_TEST_POSTGRES_URL is not set (scripts/postgres.sh start; . /var/tmp/cairn-postgres/env)")
	}
	return u
}

// FreshDatabase creates an empty database on the test server, dropped
// when the test ends, and returns its URL.
func FreshDatabase(t *testing.T) string {
	t.Helper()
	base := ServerURL(t)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("CAIRN_TEST_POSTGRES_URL %q is not a postgres:// URL", base)
	}
	name := "cairn_test_" + cairn.NewID().String()
	admin := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := admin(t.Context(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("creating the test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping the test database: %v", err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
