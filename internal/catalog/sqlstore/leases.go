package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// Service leases: the service_leases table (0018_service_leases.sql).

// ServiceLease reads lease name: cairn.ErrNotFound when nobody holds it.
func (t *tx) ServiceLease(ctx context.Context, name string) (cairn.ServiceLease, error) {
	l := cairn.ServiceLease{Name: name}
	err := t.scanRow(ctx, t.d.rebind("SELECT holder, expires_at FROM service_leases WHERE name = ?"), []any{name},
		&l.Holder, timeDest{&l.ExpiresAt})
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("service lease %s: %w", name, cairn.ErrNotFound)
	}
	if err != nil {
		return l, fmt.Errorf("service lease %s: %w", name, err)
	}
	return l, nil
}

// PutServiceLease writes lease l, whoever held it before.
func (t *tx) PutServiceLease(ctx context.Context, l cairn.ServiceLease) error {
	_, err := t.exec(ctx, t.d.rebind(`INSERT INTO service_leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`),
		l.Name, l.Holder, t.d.Time(l.ExpiresAt))
	if err != nil {
		return fmt.Errorf("put service lease %s: %w", l.Name, err)
	}
	return nil
}

// DeleteServiceLease removes lease name if holder holds it.
func (t *tx) DeleteServiceLease(ctx context.Context, name, holder string) error {
	if _, err := t.exec(ctx, t.d.rebind("DELETE FROM service_leases WHERE name = ? AND holder = ?"), name, holder); err != nil {
		return fmt.Errorf("delete service lease %s: %w", name, err)
	}
	return nil
}
