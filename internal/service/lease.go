package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// ServeLease is the name of the lease `cairn serve` holds on its catalog.
// One service process runs a catalog's tasks: a second one would take
// the first one's running tasks for tasks a crash cut short and run them
// again beside it.
const ServeLease = "serve"

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	// Name is the lease's name (ServeLease).
	Name string
	// Holder names this process, uniquely and for people: the lease's
	// holder, shown to a process refused it.
	Holder string
	// TTL is how long the lease lasts unless renewed (default 30 s). Run
	// renews it every third of that.
	TTL time.Duration
	// Gone reports that the process a holder names has ended: it ran on
	// this host, and is not running. Its lease is then taken at once,
	// not after it lapses. Nil: never known.
	Gone   func(holder string) bool
	Now    func() time.Time
	After  func(d time.Duration) <-chan time.Time
	Logger *slog.Logger
}

// Lease is one process's hold on a named lease of the catalog. Its
// methods may be called from one goroutine at a time.
type Lease struct {
	cat catalog.Store
	cfg LeaseConfig
}

// NewLease returns the lease cfg names on cat, not yet taken.
func NewLease(cat catalog.Store, cfg LeaseConfig) *Lease {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lease{cat: cat, cfg: cfg}
}

// Acquire takes the lease: when nobody holds it, when its holder's
// lease lapsed, or when Gone says its holder ended. While another
// process holds it, Acquire fails with cairn.ErrConflict, naming the
// holder and when its lease lapses, and changes nothing.
func (l *Lease) Acquire(ctx context.Context) error {
	var prev cairn.ServiceLease
	var had bool
	err := l.cat.Update(ctx, func(tx catalog.Tx) error {
		now := l.cfg.Now().UTC()
		var err error
		prev, err = tx.ServiceLease(ctx, l.cfg.Name)
		had = err == nil
		switch {
		case errors.Is(err, cairn.ErrNotFound):
		case err != nil:
			return err
		case prev.Holder == l.cfg.Holder, now.After(prev.ExpiresAt):
		case l.cfg.Gone != nil && l.cfg.Gone(prev.Holder):
		default:
			return fmt.Errorf("this catalog is in use by another service, %s, whose lease lasts until %s unless it stops or renews it: run one service per catalog; stop that one, or start this one once its lease lapsed: %w",
				prev.Holder, prev.ExpiresAt.Format(time.RFC3339), cairn.ErrConflict)
		}
		return tx.PutServiceLease(ctx, cairn.ServiceLease{Name: l.cfg.Name, Holder: l.cfg.Holder, ExpiresAt: now.Add(l.cfg.TTL)})
	})
	if err != nil {
		return fmt.Errorf("lease %s: %w", l.cfg.Name, err)
	}
	if had && prev.Holder != l.cfg.Holder {
		l.cfg.Logger.Warn("took over the catalog's lease from a service that is gone", "lease", l.cfg.Name, "from", prev.Holder, "lapsing", prev.ExpiresAt)
	}
	return nil
}

// Renew extends the lease by its TTL. When another process holds it
// now (this one stalled past its expiry and the other took it over),
// Renew fails with cairn.ErrConflict and changes nothing.
func (l *Lease) Renew(ctx context.Context) error {
	err := l.cat.Update(ctx, func(tx catalog.Tx) error {
		cur, err := tx.ServiceLease(ctx, l.cfg.Name)
		if err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
		if err == nil && cur.Holder != l.cfg.Holder {
			return fmt.Errorf("lost to %s: %w", cur.Holder, cairn.ErrConflict)
		}
		return tx.PutServiceLease(ctx, cairn.ServiceLease{Name: l.cfg.Name, Holder: l.cfg.Holder, ExpiresAt: l.cfg.Now().UTC().Add(l.cfg.TTL)})
	})
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.cfg.Name, err)
	}
	return nil
}

// Release gives the lease up, if this process holds it.
func (l *Lease) Release(ctx context.Context) error {
	err := l.cat.Update(ctx, func(tx catalog.Tx) error {
		return tx.DeleteServiceLease(ctx, l.cfg.Name, l.cfg.Holder)
	})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", l.cfg.Name, err)
	}
	return nil
}

// Run renews the lease every third of its TTL until ctx ends (then it
// returns nil). A renewal that cannot reach the catalog is logged and
// tried again at the next tick; one that finds the lease lost returns
// its error, and the caller must stop the service.
func (l *Lease) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.cfg.After(l.cfg.TTL / 3):
		}
		err := l.Renew(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, cairn.ErrConflict):
			return err
		case err != nil:
			l.cfg.Logger.Error("renewing the catalog's lease", "lease", l.cfg.Name, "err", err)
		}
	}
}
