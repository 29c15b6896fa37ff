package catalogtest

import (
	"context"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// testServiceLeases: a lease nobody took is ErrNotFound; a put reads
// back, and a second put replaces it whoever held it; a delete by
// another holder leaves it, by its holder removes it; leases of other
// names are apart.
func testServiceLeases(t *testing.T, s catalog.Store) {
	a := cairn.ServiceLease{Name: "serve", Holder: "host=a pid=1", ExpiresAt: at(30)}
	b := cairn.ServiceLease{Name: "serve", Holder: "host=b pid=2", ExpiresAt: at(90)}
	other := cairn.ServiceLease{Name: "other", Holder: "host=a pid=1", ExpiresAt: at(5)}
	read := func(ctx context.Context, tx catalog.Tx, name string) (cairn.ServiceLease, error) {
		return tx.ServiceLease(ctx, name)
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := read(ctx, tx, "serve")
		wantErr(t, "a lease nobody took", err, cairn.ErrNotFound)
		wantErr(t, "put", tx.PutServiceLease(ctx, a), nil)
		wantErr(t, "put another name", tx.PutServiceLease(ctx, other), nil)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := read(ctx, tx, "serve")
		wantErr(t, "read", err, nil)
		wantEqual(t, "read", got, a)
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "put over another holder", tx.PutServiceLease(ctx, b), nil)
		got, _ := read(ctx, tx, "serve")
		wantEqual(t, "replaced", got, b)
		wantErr(t, "delete by a holder that lost it", tx.DeleteServiceLease(ctx, "serve", a.Holder), nil)
		got, err := read(ctx, tx, "serve")
		wantErr(t, "after another's delete", err, nil)
		wantEqual(t, "after another's delete", got, b)
		wantErr(t, "delete by its holder", tx.DeleteServiceLease(ctx, "serve", b.Holder), nil)
		_, err = read(ctx, tx, "serve")
		wantErr(t, "deleted", err, cairn.ErrNotFound)
		got, err = read(ctx, tx, "other")
		wantErr(t, "the other name", err, nil)
		wantEqual(t, "the other name", got, other)
		return nil
	})
}
