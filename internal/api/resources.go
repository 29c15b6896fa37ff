package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// resourceLinks is a resource's self and bookmark links, as the block
// storage API gives every volume and backup: absolute URLs of it under
// the request's project (where the caller found it). cairn serves one
// version, so the version-independent bookmark is the same URL as self.
func resourceLinks(r *http.Request, coll service.Collection, id string) []wire.Link {
	href := baseURL(r) + (&url.URL{Path: "/v3/" + r.PathValue("project_id") + "/" + string(coll) + "/" + id}).EscapedPath()
	return []wire.Link{{Rel: "self", Href: href}, {Rel: "bookmark", Href: href}}
}

// volumeJSON is a volume as the API shows it, with its attachment (its
// NBD export) while it is attached.
func (s *Server) volumeJSON(r *http.Request, v cairn.Volume) wire.Volume {
	out := wire.Volume{ID: v.ID, Name: v.Name, Description: v.Description, Size: v.Size,
		Status: string(v.Status), FailReason: optional(v.FailReason), SnapshotID: optional(v.SnapshotID),
		BackupID: optional(v.BackupID), ProjectID: v.ProjectID, Attached: v.Attached,
		Attachments: []wire.VolumeAttachment{}, Bootable: "false", Metadata: metadataJSON(v.Metadata),
		Links: resourceLinks(r, service.VolumesCollection, v.ID), AvailabilityZone: wire.AvailabilityZone,
		VolumeType: wire.VolumeType, ReplicationStatus: wire.ReplicationDisabled,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
	if a, ok := s.svc.VolumeAttachment(v); ok {
		out.Attachments = append(out.Attachments, wire.VolumeAttachment{ID: v.ID, AttachmentID: v.ID,
			VolumeID: v.ID, Device: optional(strings.Join(a.URIs, " "))})
	}
	return out
}

func snapshotJSON(v cairn.Snapshot) wire.Snapshot {
	return wire.Snapshot{ID: v.ID, VolumeID: v.VolumeID, Name: v.Name, Description: v.Description,
		Size: v.Size, Status: string(v.Status), FailReason: optional(v.FailReason), ProjectID: v.ProjectID,
		Progress: snapshotProgress(v), Metadata: metadataJSON(v.Metadata), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
}

// snapshotProgress is how far the making of the snapshot went: done once
// the engine's snapshot exists, whatever the status since; not begun
// before (creating, or error when taking it failed).
func snapshotProgress(v cairn.Snapshot) string {
	if v.EngineID == "" {
		return "0%"
	}
	return "100%"
}

// snapshotSummaryJSON is a snapshot in the block storage API's summary
// shape: the answer to a create and the list without details.
func snapshotSummaryJSON(v cairn.Snapshot) wire.SnapshotSummary {
	return wire.SnapshotSummary{ID: v.ID, VolumeID: v.VolumeID, Name: v.Name, Description: v.Description,
		Size: v.Size, Status: string(v.Status), Metadata: metadataJSON(v.Metadata), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
}

// metadataJSON is metadata as the answers show it: {} rather than null
// for none, since the clients read it without checking (`cinder show`
// fails on a volume without it).
func metadataJSON(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func backupJSON(r *http.Request, b cairn.Backup, dependents bool) wire.Backup {
	return wire.Backup{ID: b.ID, Name: b.Name, Description: b.Description, VolumeID: b.VolumeID,
		SnapshotID: optional(b.SnapshotID), Container: b.Container, Status: string(b.Status),
		FailReason: optional(b.FailReason), Size: b.Size, ObjectCount: b.ObjectCount,
		StoredBytes: b.StoredBytes, IsIncremental: b.Incremental, HasDependentBackups: dependents,
		ParentID: optional(b.ParentID), DataTimestamp: b.DataTimestamp, ProjectID: b.ProjectID,
		Links: resourceLinks(r, service.BackupsCollection, b.ID), CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}
}

// summaryJSON is a volume or backup in a list without details, and a
// backup in the answer to a create or an import.
func summaryJSON(r *http.Request, coll service.Collection, id, name string) wire.Summary {
	return wire.Summary{ID: id, Name: name, Links: resourceLinks(r, coll, id)}
}

func attachmentJSON(a service.Attachment) wire.Attachment {
	return wire.Attachment{VolumeID: a.VolumeID, ExportName: a.ExportName, URIs: a.URIs}
}

// Page sizes of lists (the service's).
const (
	DefaultLimit = service.DefaultLimit
	MaxLimit     = service.MaxLimit
)

// listQuery parses a list's query string: limit, marker, sort
// (key[:dir],...) or sort_key/sort_dir, all_tenants, and the filters named
// in allowed (metadata: a Python dict's repr, parsePythonDict). Unknown
// and repeated parameters are refused, so a typo never lists everything.
// The service checks what the values mean.
//
// all_tenants takes the spellings of a boolean the clients send (1,
// true, True, yes, on; 0, false, no, off). From a caller who is not an
// admin it is ignored, as the block storage API does: the answer is the
// caller's own project (the clients send it when they look a name up).
func listQuery(r *http.Request, c service.Caller, allowed ...string) (service.ListQuery, error) {
	q := r.URL.Query()
	var lq service.ListQuery
	ok := map[string]bool{"limit": true, "marker": true, "sort": true, "sort_key": true, "sort_dir": true, "all_tenants": true}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, v := range q {
		if !ok[k] {
			return lq, fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
		if len(v) != 1 {
			return lq, fmt.Errorf("query parameter %q: given %d times: %w", k, len(v), cairn.ErrInvalid)
		}
	}
	if s := q.Get("limit"); s != "" {
		// The service checks the range; 0 is its "default", not a limit.
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return lq, fmt.Errorf("limit %q: want 1 to %d: %w", s, MaxLimit, cairn.ErrInvalid)
		}
		lq.Limit = n
	}
	lq.Marker = q.Get("marker")
	sortSpec := q.Get("sort")
	if sk := q.Get("sort_key"); sk != "" {
		if sortSpec != "" {
			return lq, fmt.Errorf("give sort or sort_key, not both: %w", cairn.ErrInvalid)
		}
		sortSpec = sk
		if d := q.Get("sort_dir"); d != "" {
			sortSpec += ":" + d
		}
	}
	if sortSpec != "" {
		for _, part := range strings.Split(sortSpec, ",") {
			key, dir, _ := strings.Cut(part, ":")
			switch dir {
			case "", "desc":
				lq.Sort = append(lq.Sort, service.SortKey{Key: key, Desc: true})
			case "asc":
				lq.Sort = append(lq.Sort, service.SortKey{Key: key})
			default:
				return lq, fmt.Errorf("sort direction %q: want asc or desc: %w", dir, cairn.ErrInvalid)
			}
		}
	}
	lq.Name = q.Get("name")
	lq.Status = cairn.Status(q.Get("status"))
	lq.VolumeID = q.Get("volume_id")
	lq.SnapshotID = q.Get("snapshot_id")
	if md, ok := q["metadata"]; ok {
		var err error
		if lq.Metadata, err = parsePythonDict(md[0]); err != nil {
			return lq, err
		}
	}
	switch at := q.Get("all_tenants"); strings.ToLower(at) {
	case "1", "true", "t", "yes", "y", "on":
		lq.AllProjects = c.Admin
	case "", "0", "false", "f", "no", "n", "off":
	default:
		return lq, fmt.Errorf("all_tenants %q: want true or false: %w", at, cairn.ErrInvalid)
	}
	return lq, nil
}

// nextLink is the link to the page after a full one.
func nextLink(r *http.Request, n int, lq service.ListQuery, last string) []wire.Link {
	if n < lq.PageSize() || last == "" {
		return nil
	}
	q := r.URL.Query()
	q.Set("marker", last)
	q.Set("limit", strconv.Itoa(lq.PageSize()))
	// Absolute, as the clients follow it as it is.
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	return []wire.Link{{Rel: "next", Href: baseURL(r) + u.String()}}
}

// listSummaries answers a list of volumes or backups without details:
// IDs, names and links.
func (s *Server) listSummaries(w http.ResponseWriter, r *http.Request, c service.Caller, coll service.Collection, lq service.ListQuery) error {
	list, err := s.svc.ListSummaries(r.Context(), c, coll, lq)
	if err != nil {
		return err
	}
	items := make([]wire.Summary, len(list))
	for i, v := range list {
		items[i] = summaryJSON(r, coll, v.ID, v.Name)
	}
	out := map[string]any{string(coll): items}
	if len(list) > 0 {
		if l := nextLink(r, len(list), lq, list[len(list)-1].ID); l != nil {
			out[string(coll)+"_links"] = l
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) limits(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	l, err := s.svc.Limits(r.Context(), c, c.ProjectID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"limits": wire.NewLimitsAnswer(wire.Limits{Quota: l.Quota, Usage: l.Usage})})
	return nil
}

func (s *Server) showTask(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	t, err := s.svc.Task(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if t.ProjectID != c.ProjectID && !c.Admin {
		return fmt.Errorf("task %s: %w", t.ID, cairn.ErrNotFound)
	}
	writeJSON(w, http.StatusOK, map[string]any{"task": t})
	return nil
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	q := r.URL.Query()
	for k := range q {
		if k != "resource_id" {
			return fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
	}
	list, err := s.svc.Tasks(r.Context(), service.Caller{ProjectID: c.ProjectID}, q.Get("resource_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": list})
	return nil
}

// Volumes.

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Volume
	for _, f := range []struct {
		name string
		v    *string
		one  string // the one there is, if any
		what string
	}{
		{"volume_type", in.VolumeType, wire.VolumeType, "volume types but " + wire.VolumeType},
		{"availability_zone", in.AvailabilityZone, wire.AvailabilityZone, "availability zones but " + wire.AvailabilityZone},
		{"consistencygroup_id", in.ConsistencyGroupID, "", "consistency groups"},
		{"imageRef", in.ImageRef, "", "images"},
		{"source_volid", in.SourceVolID, "", "volume-to-volume clones (clone a snapshot: snapshot_id)"},
	} {
		// The cinder and openstack commands send them all, null, with
		// every create: null (or "") is accepted, as the block storage API
		// does, and so is the name of the one type and zone every volume
		// has. Another value is refused rather than ignored: cairn could
		// not honour it.
		if f.v != nil && *f.v != "" && *f.v != f.one {
			return fmt.Errorf("volume.%s %q: cairn has no %s: %w", f.name, *f.v, f.what, cairn.ErrUnsupported)
		}
	}
	if in.Size == nil && in.SnapshotID == "" && in.BackupID == "" {
		return fmt.Errorf("volume.size is required: %w", cairn.ErrInvalid)
	}
	size := int64(0)
	if in.Size != nil {
		size = *in.Size
		if size <= 0 {
			return fmt.Errorf("volume.size %d: want a positive number of GiB: %w", size, cairn.ErrInvalid)
		}
	}
	v, err := s.svc.CreateVolume(r.Context(), c, service.VolumeCreate{Name: in.Name, Description: in.Description,
		Size: size, SnapshotID: in.SnapshotID, BackupID: in.BackupID, Metadata: in.Metadata})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"volume": s.volumeJSON(r, v)})
	return nil
}

func (s *Server) listVolumes(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		lq, err := listQuery(r, c, "name", "status", "metadata")
		if err != nil {
			return err
		}
		if !detail {
			return s.listSummaries(w, r, c, service.VolumesCollection, lq)
		}
		list, err := s.svc.ListVolumes(r.Context(), c, lq)
		if err != nil {
			return err
		}
		items := make([]wire.Volume, len(list))
		for i, v := range list {
			items[i] = s.volumeJSON(r, v)
		}
		out := map[string]any{"volumes": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), lq, list[len(list)-1].ID); l != nil {
				out["volumes_links"] = l
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) showVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	v, err := s.svc.Volume(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": s.volumeJSON(r, v)})
	return nil
}

// displayAliases puts the values given under the block storage API's
// older names of a name and a description (display_name,
// display_description) in name and description; giving one under both
// of its names is refused. what is the body's member ("volume").
func displayAliases(what string, name, description **string, displayName, displayDescription *string) error {
	for _, alias := range []struct {
		name, old string
		v         **string
		oldv      *string
	}{
		{"name", "display_name", name, displayName},
		{"description", "display_description", description, displayDescription},
	} {
		if alias.oldv == nil {
			continue
		}
		if *alias.v != nil {
			return fmt.Errorf("give %s.%s or %s.%s, not both: %w", what, alias.name, what, alias.old, cairn.ErrInvalid)
		}
		*alias.v = alias.oldv
	}
	return nil
}

func (s *Server) updateVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeUpdateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Volume
	if err := displayAliases("volume", &in.Name, &in.Description, in.DisplayName, in.DisplayDescription); err != nil {
		return err
	}
	if in.Name == nil && in.Description == nil && in.Metadata == nil {
		return fmt.Errorf("nothing to update: give volume.name, volume.description or volume.metadata: %w", cairn.ErrInvalid)
	}
	v, err := s.svc.UpdateVolume(r.Context(), c, r.PathValue("id"),
		service.VolumeUpdate{Name: in.Name, Description: in.Description, Metadata: in.Metadata})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": s.volumeJSON(r, v)})
	return nil
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteVolume(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func count(ptrs ...bool) int {
	n := 0
	for _, p := range ptrs {
		if p {
			n++
		}
	}
	return n
}

func (s *Server) volumeAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if count(req.Extend != nil, req.Attach != nil, req.Detach != nil, req.ResetStatus != nil) != 1 {
		return fmt.Errorf("give exactly one action: os-extend, os-attach, os-detach or os-reset_status: %w", cairn.ErrInvalid)
	}
	id, ctx := r.PathValue("id"), r.Context()
	switch {
	case req.Extend != nil:
		if err := s.svc.ExtendVolume(ctx, c, id, req.Extend.NewSize); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
	case req.Attach != nil:
		a, err := s.svc.AttachVolume(ctx, c, id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"attachment": attachmentJSON(a)})
	case req.Detach != nil:
		if err := s.svc.DetachVolume(ctx, c, id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		if err := s.svc.ResetVolumeStatus(ctx, c, id, cairn.Status(req.ResetStatus.Status)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
	}
	return nil
}

// Snapshots.

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.SnapshotCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Snapshot
	snap, err := s.svc.CreateSnapshot(r.Context(), c, service.SnapshotCreate{VolumeID: in.VolumeID,
		Name: in.Name, Description: in.Description, Force: in.Force, Metadata: in.Metadata})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"snapshot": snapshotSummaryJSON(snap)})
	return nil
}

func (s *Server) listSnapshots(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		lq, err := listQuery(r, c, "name", "status", "volume_id", "metadata")
		if err != nil {
			return err
		}
		list, err := s.svc.ListSnapshots(r.Context(), c, lq)
		if err != nil {
			return err
		}
		// Without details, the block storage API's summary of each
		// snapshot, which has more than an ID and a name.
		var items any
		if detail {
			l := make([]wire.Snapshot, len(list))
			for i, v := range list {
				l[i] = snapshotJSON(v)
			}
			items = l
		} else {
			l := make([]wire.SnapshotSummary, len(list))
			for i, v := range list {
				l[i] = snapshotSummaryJSON(v)
			}
			items = l
		}
		out := map[string]any{"snapshots": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), lq, list[len(list)-1].ID); l != nil {
				out["snapshots_links"] = l
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) showSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	v, err := s.svc.Snapshot(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": snapshotJSON(v)})
	return nil
}

func (s *Server) updateSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.SnapshotUpdateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Snapshot
	if err := displayAliases("snapshot", &in.Name, &in.Description, in.DisplayName, in.DisplayDescription); err != nil {
		return err
	}
	if in.Name == nil && in.Description == nil {
		return fmt.Errorf("nothing to update: give snapshot.name or snapshot.description: %w", cairn.ErrInvalid)
	}
	v, err := s.svc.UpdateSnapshot(r.Context(), c, r.PathValue("id"), service.SnapshotUpdate{Name: in.Name, Description: in.Description})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": snapshotJSON(v)})
	return nil
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteSnapshot(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) snapshotAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.ResetStatusRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ResetStatus == nil {
		return fmt.Errorf("give an action: os-reset_status: %w", cairn.ErrInvalid)
	}
	if err := s.svc.ResetSnapshotStatus(r.Context(), c, r.PathValue("id"), cairn.Status(req.ResetStatus.Status)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Backups.

func (s *Server) createBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.BackupCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Backup
	b, err := s.svc.CreateBackup(r.Context(), c, service.BackupCreate{VolumeID: in.VolumeID,
		SnapshotID: in.SnapshotID, Incremental: in.Incremental, Container: in.Container,
		Name: in.Name, Description: in.Description, Force: in.Force})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backup": summaryJSON(r, service.BackupsCollection, b.ID, b.Name)})
	return nil
}

func (s *Server) listBackups(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		lq, err := listQuery(r, c, "name", "status", "volume_id", "snapshot_id")
		if err != nil {
			return err
		}
		if !detail {
			return s.listSummaries(w, r, c, service.BackupsCollection, lq)
		}
		list, err := s.svc.ListBackups(r.Context(), c, lq)
		if err != nil {
			return err
		}
		items := make([]wire.Backup, len(list))
		for i, b := range list {
			items[i] = backupJSON(r, b.Backup, b.HasDependents)
		}
		out := map[string]any{"backups": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), lq, list[len(list)-1].ID); l != nil {
				out["backups_links"] = l
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) showBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	d, err := s.svc.Backup(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": backupJSON(r, d.Backup, d.HasDependents)})
	return nil
}

func (s *Server) deleteBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteBackup(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) restoreBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.RestoreRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	res, err := s.svc.RestoreBackup(r.Context(), c, r.PathValue("id"),
		service.RestoreRequest{VolumeID: req.Restore.VolumeID, Name: req.Restore.Name})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"restore": wire.RestoreResult{
		BackupID: res.BackupID, VolumeID: res.VolumeID, VolumeName: res.VolumeName}})
	return nil
}

func (s *Server) exportRecord(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	svc, u, err := s.svc.ExportRecord(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup-record": wire.BackupRecord{BackupService: svc, BackupURL: u}})
	return nil
}

func (s *Server) importRecord(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.ImportRecordRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.BackupRecord == nil {
		return fmt.Errorf("backup-record is required: %w", cairn.ErrInvalid)
	}
	b, err := s.svc.ImportRecord(r.Context(), c, req.BackupRecord.BackupService, req.BackupRecord.BackupURL)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"backup": summaryJSON(r, service.BackupsCollection, b.ID, b.Name)})
	return nil
}

func (s *Server) backupAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.ResetStatusRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ResetStatus == nil {
		return fmt.Errorf("give an action: os-reset_status: %w", cairn.ErrInvalid)
	}
	if err := s.svc.ResetBackupStatus(r.Context(), c, r.PathValue("id"), cairn.Status(req.ResetStatus.Status)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
