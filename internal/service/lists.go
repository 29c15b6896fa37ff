package service

import (
	"context"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// Page sizes of lists.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ListQuery is what a caller may ask of a list of volumes, snapshots or
// backups: a page (Limit, Marker), an order (Sort) and filters. The
// service checks it (ListQuery.filter) and turns it into the catalog's
// filter, so no layer above the service needs the catalog's types.
type ListQuery struct {
	// Limit is the most items to return, 1 to MaxLimit; 0 means
	// DefaultLimit.
	Limit int
	// Marker is the ID of the last item of the previous page.
	Marker string
	// Sort is the order (see ValidSortKey); none means created_at
	// descending. Ties are broken by ID.
	Sort []SortKey
	// Filters; "" selects all. VolumeID is for snapshots and backups,
	// SnapshotID for backups.
	Name       string
	Status     cairn.Status
	VolumeID   string
	SnapshotID string
	// Metadata selects the volumes or snapshots that have every one of
	// its items (the same key with the same value); none selects all.
	Metadata map[string]string
	// ProjectID selects one project's items: among every project's for
	// an admin's AllProjects; otherwise the caller's own, or none when it
	// names another project (the filter narrows the list, never widens
	// it).
	ProjectID string
	// Bootable, when not nil, selects volumes by their bootable flag.
	Bootable *bool
	// AvailabilityZone selects volumes or snapshots of that zone: all
	// of them for AvailabilityZone, none for another.
	AvailabilityZone string
	// GlanceMetadata selects volumes whose image metadata has every one
	// of its items: with any item, none, as cairn's volumes have no
	// image metadata (there is no image service).
	GlanceMetadata map[string]string
	// GroupID selects the volumes of a group: none, as cairn has no
	// groups.
	GroupID string
	// Offset skips that many of the selected items (after Marker).
	Offset int
	// Empty asks for no items (the block storage API's limit=0): the
	// query is checked, and the page is empty.
	Empty bool
	// AllProjects lists every project's items instead of the caller's
	// (admins only).
	AllProjects bool
}

// SortKey is one key of a list's order.
type SortKey struct {
	Key  string
	Desc bool
}

// ValidSortKey reports whether a list may be sorted by key: id, name,
// status, size, created_at, updated_at, and data_timestamp (backups).
func ValidSortKey(key string) bool { return catalog.ValidSortKey(key) }

// PageSize is the number of items a full page of q holds.
func (q ListQuery) PageSize() int {
	if q.Limit == 0 {
		return DefaultLimit
	}
	return q.Limit
}

// Collection names what a list holds.
type Collection string

// Collections.
const (
	VolumesCollection   Collection = "volumes"
	SnapshotsCollection Collection = "snapshots"
	BackupsCollection   Collection = "backups"
	// InstancesCollection and DatabaseBackupsCollection list database
	// instances and their backups; they take no summaries.
	InstancesCollection       Collection = "instances"
	DatabaseBackupsCollection Collection = "database backups"
)

// filter checks q for a list of coll by c and returns the catalog's
// filter: the caller's project (every project for an admin's AllProjects),
// the page and the order.
func (q ListQuery) filter(c Caller, coll Collection) (catalog.Filter, error) {
	switch coll {
	case VolumesCollection, SnapshotsCollection, BackupsCollection, InstancesCollection, DatabaseBackupsCollection:
	default:
		return catalog.Filter{}, errorf(cairn.ErrInvalid, "list of %q: want volumes, snapshots, backups, instances or database backups", coll)
	}
	f := catalog.Filter{ProjectID: c.ProjectID, Limit: q.PageSize(), Marker: q.Marker,
		Name: q.Name, Status: q.Status, VolumeID: q.VolumeID, SnapshotID: q.SnapshotID,
		Bootable: q.Bootable, Offset: q.Offset}
	if q.Limit < 0 || q.Limit > MaxLimit {
		return f, errorf(cairn.ErrInvalid, "limit %d: want 1 to %d", q.Limit, MaxLimit)
	}
	if q.Offset < 0 {
		return f, errorf(cairn.ErrInvalid, "offset %d: want 0 or more", q.Offset)
	}
	if q.Bootable != nil && coll != VolumesCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no bootable filter", coll)
	}
	if q.AvailabilityZone != "" && coll != VolumesCollection && coll != SnapshotsCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no availability_zone filter", coll)
	}
	if q.ProjectID != "" && coll != VolumesCollection && coll != SnapshotsCollection && coll != BackupsCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no project_id filter", coll)
	}
	if q.VolumeID != "" && coll != SnapshotsCollection && coll != BackupsCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no volume_id filter", coll)
	}
	if q.SnapshotID != "" && coll != BackupsCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no snapshot_id filter", coll)
	}
	if (len(q.GlanceMetadata) > 0 || q.GroupID != "") && coll != VolumesCollection {
		return f, errorf(cairn.ErrInvalid, "%s have no glance_metadata or group_id filter", coll)
	}
	if len(q.Metadata) > 0 {
		if coll != VolumesCollection && coll != SnapshotsCollection {
			return f, errorf(cairn.ErrInvalid, "%s have no metadata filter", coll)
		}
		if _, err := validMetadata(q.Metadata); err != nil {
			return f, err
		}
	}
	for _, k := range q.Sort {
		if !ValidSortKey(k.Key) {
			return f, errorf(cairn.ErrInvalid, "sort key %q: unknown", k.Key)
		}
		f.Sort = append(f.Sort, catalog.SortKey{Key: k.Key, Desc: k.Desc})
	}
	if q.AllProjects {
		if !c.Admin {
			return f, errorf(cairn.ErrForbidden, "listing every project's %s is for admins", coll)
		}
		f.ProjectID = q.ProjectID
	}
	return f, nil
}

// AvailabilityZone is the one availability zone every volume and
// snapshot is in (wire.AvailabilityZone, which the answers show).
const AvailabilityZone = "nova"

// selectsNothing reports whether q, checked by filter, selects no item
// whatever the catalog holds: an empty page asked for, another zone,
// image metadata, a group, or another project's items without
// AllProjects.
func (q ListQuery) selectsNothing(c Caller) bool {
	return q.Empty || q.AvailabilityZone != "" && q.AvailabilityZone != AvailabilityZone ||
		len(q.GlanceMetadata) > 0 || q.GroupID != "" ||
		q.ProjectID != "" && !q.AllProjects && q.ProjectID != c.ProjectID
}

// ListVolumes returns a page of the volumes q selects.
func (s *Service) ListVolumes(ctx context.Context, c Caller, q ListQuery) ([]cairn.Volume, error) {
	f, err := q.filter(c, VolumesCollection)
	if err != nil || q.selectsNothing(c) {
		return []cairn.Volume{}, err
	}
	if len(q.Metadata) == 0 {
		return s.Volumes(ctx, c, f)
	}
	var list []cairn.Volume
	err = s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = matchingPage(scope(c, f), matchingBatch,
			func(f catalog.Filter) ([]cairn.Volume, error) { return tx.Volumes(ctx, f) },
			func(v cairn.Volume) (string, bool) { return v.ID, matchesMetadata(v.Metadata, q.Metadata) })
		return err
	})
	return list, err
}

// ListSnapshots returns a page of the snapshots q selects.
func (s *Service) ListSnapshots(ctx context.Context, c Caller, q ListQuery) ([]cairn.Snapshot, error) {
	f, err := q.filter(c, SnapshotsCollection)
	if err != nil || q.selectsNothing(c) {
		return []cairn.Snapshot{}, err
	}
	if len(q.Metadata) == 0 {
		return s.Snapshots(ctx, c, f)
	}
	var list []cairn.Snapshot
	err = s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = matchingPage(scope(c, f), matchingBatch,
			func(f catalog.Filter) ([]cairn.Snapshot, error) { return tx.Snapshots(ctx, f) },
			func(v cairn.Snapshot) (string, bool) { return v.ID, matchesMetadata(v.Metadata, q.Metadata) })
		return err
	})
	return list, err
}

// matchingPage returns the page of f's list that holds only the rows
// match accepts: the first f.Limit of them after f.Marker, in f's order,
// exactly the page a filter of the catalog's own would give, so the
// last row's ID is the next page's marker as for any list. The catalog
// has no filter on metadata, so this reads f's list in batches of
// batch rows (f.Limit, if more), each starting after the last row of the
// one before (keyset paging, as the catalog pages), keeping the matching
// rows, until the page is full or the list ends. It holds at most a page
// and a batch; called in one transaction, its batches read one state of
// the catalog.
//
// f.Offset skips that many matching rows before the page.
//
// match returns a row's ID and whether it belongs on the page.
func matchingPage[T any](f catalog.Filter, batch int, list func(catalog.Filter) ([]T, error), match func(T) (string, bool)) ([]T, error) {
	skip := f.Offset
	f.Offset = 0
	limit := f.Limit
	if limit > 0 {
		f.Limit = max(limit, batch)
	}
	var page []T
	for {
		rows, err := list(f)
		if err != nil {
			return nil, err
		}
		var last string
		for _, row := range rows {
			id, ok := match(row)
			last = id
			if !ok {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			page = append(page, row)
			if len(page) == limit {
				return page, nil
			}
		}
		if f.Limit <= 0 || len(rows) < f.Limit {
			return page, nil
		}
		f.Marker = last
	}
}

// matchingBatch is the rows matchingPage reads at a time: as many as a
// list of the default limit holds, so that a page of few rows over many
// that do not match takes few reads of the catalog.
const matchingBatch = DefaultLimit

// ListBackups returns a page of the backups q selects.
func (s *Service) ListBackups(ctx context.Context, c Caller, q ListQuery) ([]BackupDetail, error) {
	f, err := q.filter(c, BackupsCollection)
	if err != nil || q.selectsNothing(c) {
		return []BackupDetail{}, err
	}
	return s.Backups(ctx, c, f)
}

// Summary is a list entry without details: an ID and a name.
type Summary struct {
	ID, Name string
}

// ListSummaries returns a page of the IDs and names of the items of coll
// q selects: what a list without details shows.
func (s *Service) ListSummaries(ctx context.Context, c Caller, coll Collection, q ListQuery) ([]Summary, error) {
	f, err := q.filter(c, coll)
	if err != nil || q.selectsNothing(c) {
		return []Summary{}, err
	}
	if len(q.Metadata) > 0 {
		// Summaries carry no metadata to match: select full rows.
		return s.matchingSummaries(ctx, c, coll, q)
	}
	list, err := s.Summaries(ctx, c, catalog.Kind(coll), f)
	if err != nil {
		return nil, err
	}
	out := make([]Summary, len(list))
	for i, v := range list {
		out[i] = Summary{ID: v.ID, Name: v.Name}
	}
	return out, nil
}

// matchingSummaries is ListSummaries with a metadata filter (q.filter
// has checked that coll has one).
func (s *Service) matchingSummaries(ctx context.Context, c Caller, coll Collection, q ListQuery) ([]Summary, error) {
	var out []Summary
	if coll == SnapshotsCollection {
		list, err := s.ListSnapshots(ctx, c, q)
		if err != nil {
			return nil, err
		}
		for _, v := range list {
			out = append(out, Summary{ID: v.ID, Name: v.Name})
		}
		return out, nil
	}
	list, err := s.ListVolumes(ctx, c, q)
	if err != nil {
		return nil, err
	}
	for _, v := range list {
		out = append(out, Summary{ID: v.ID, Name: v.Name})
	}
	return out, nil
}

// VolumeAttachment returns where an attached volume is exported (as
// AttachVolume answered when it attached it), and false for a volume
// that is not attached. It reads nothing: the catalog's row says whether
// the volume is attached, and the service's NBD endpoints where, so the
// answer is the same after a restart (Start exports attached volumes
// again).
func (s *Service) VolumeAttachment(v cairn.Volume) (Attachment, bool) {
	if !v.Attached {
		return Attachment{}, false
	}
	return s.attachment(v.ID), true
}
