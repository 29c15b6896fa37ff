package catalogtest

import (
	"context"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// testVolumeTransfers: insert, read back every field, list by project
// (oldest first) and all, one transfer per volume and per ID, delete,
// and ErrNotFound for what is not there.
func testVolumeTransfers(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	tr := func(i int, project, volume string) cairn.VolumeTransfer {
		return cairn.VolumeTransfer{ID: cairn.NewUUID(), ProjectID: project, VolumeID: volume,
			Name: "transfer-" + string(rune('a'+i)), Salt: "salt", KeyHash: "hash", CreatedAt: at(i)}
	}
	a, b, c := tr(2, p[0], "v1"), tr(1, p[0], "v2"), tr(3, p[1], "v3")
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, x := range []cairn.VolumeTransfer{a, b, c} {
			if err := tx.InsertVolumeTransfer(ctx, x); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.VolumeTransfer(ctx, a.ID)
		wantErr(t, "get", err, nil)
		wantEqual(t, "get", got, a)
		wantErr(t, "a second transfer of a volume", tx.InsertVolumeTransfer(ctx, tr(4, p[1], "v1")), cairn.ErrExists)
		again := tr(5, p[1], "v9")
		again.ID = a.ID
		wantErr(t, "a transfer ID taken", tx.InsertVolumeTransfer(ctx, again), cairn.ErrExists)
		_, err = tx.VolumeTransfer(ctx, "nope")
		wantErr(t, "get a missing one", err, cairn.ErrNotFound)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		mine, err := tx.VolumeTransfers(ctx, p[0])
		wantErr(t, "list", err, nil)
		wantEqual(t, "list of a project, oldest first", mine, []cairn.VolumeTransfer{b, a})
		all, err := tx.VolumeTransfers(ctx, "")
		wantEqual(t, "list of all", all, []cairn.VolumeTransfer{b, a, c})
		none, _ := tx.VolumeTransfers(ctx, "nobody")
		wantEqual(t, "list of a project without any", none, []cairn.VolumeTransfer{})
		return err
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "delete", tx.DeleteVolumeTransfer(ctx, a.ID), nil)
		wantErr(t, "delete again", tx.DeleteVolumeTransfer(ctx, a.ID), cairn.ErrNotFound)
		// The volume may have another transfer now.
		wantErr(t, "a new transfer of the volume", tx.InsertVolumeTransfer(ctx, tr(6, p[0], "v1")), nil)
		return nil
	})
}
