package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

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
		BackupID: optional(v.BackupID), SourceVolID: optional(v.SourceVolID), ProjectID: v.ProjectID,
		UserID: v.UserID, Attachments: []wire.VolumeAttachment{},
		Bootable: strconv.FormatBool(v.Bootable), Metadata: volumeMetadataJSON(v),
		Links: resourceLinks(r, service.VolumesCollection, v.ID), AvailabilityZone: wire.AvailabilityZone,
		VolumeType: s.svc.VolumeTypeName(r.Context(), v.VolumeTypeID), ReplicationStatus: wire.ReplicationDisabled,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
	if a, ok := s.svc.VolumeAttachment(v); ok {
		out.Attachments = append(out.Attachments, wire.VolumeAttachment{ID: v.ID, AttachmentID: v.ID,
			VolumeID: v.ID, Device: optional(strings.Join(a.URIs, " "))})
	}
	if !cairnMembers(r) {
		out.FailReason, out.BackupID = nil, nil
	}
	return out
}

// cairnMembers reports whether the request asks for cairn's own members
// in answers (wire.MembersHeader).
func cairnMembers(r *http.Request) bool {
	return r.Header.Get(wire.MembersHeader) == wire.MembersAll
}

// withoutProject is a volume as the answers to a create and an update
// show it: without os-vol-tenant-attr:tenant_id, which the block storage
// API adds to show and the detailed list only.
func withoutProject(v wire.Volume) wire.Volume {
	v.ProjectID = ""
	return v
}

func snapshotJSON(r *http.Request, v cairn.Snapshot) wire.Snapshot {
	out := wire.Snapshot{ID: v.ID, VolumeID: v.VolumeID, Name: v.Name, Description: v.Description,
		Size: v.Size, Status: string(v.Status), ProjectID: v.ProjectID,
		Progress: snapshotProgress(v), Metadata: metadataJSON(v.Metadata), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
	if cairnMembers(r) {
		out.FailReason = optional(v.FailReason)
	}
	return out
}

// snapshotProgress is how far the making of the snapshot went: done once
// the engine's snapshot exists, whatever the status since; not begun
// before (creating, or error when taking it failed).
func snapshotProgress(v cairn.Snapshot) string {
	if v.Progress != "" {
		return v.Progress
	}
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

// volumeMetadataJSON is a volume's metadata as its answers show it: the
// tenant's, with the admin metadata the block storage API shows
// (readonly) over it.
func volumeMetadataJSON(v cairn.Volume) map[string]string {
	ro, ok := v.AdminMetadata[cairn.ReadOnlyKey]
	if !ok {
		return metadataJSON(v.Metadata)
	}
	md := make(map[string]string, len(v.Metadata)+1)
	for k, x := range v.Metadata {
		md[k] = x
	}
	md[cairn.ReadOnlyKey] = ro
	return md
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
	out := wire.Backup{ID: b.ID, Name: b.Name, Description: b.Description, VolumeID: b.VolumeID,
		SnapshotID: optional(b.SnapshotID), Container: b.Container, Status: string(b.Status),
		FailReason: optional(b.FailReason), Size: b.Size, ObjectCount: b.ObjectCount,
		IsIncremental: b.Incremental, HasDependentBackups: dependents,
		DataTimestamp: b.DataTimestamp, ProjectID: b.ProjectID,
		Links: resourceLinks(r, service.BackupsCollection, b.ID), CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}
	if cairnMembers(r) {
		stored := b.StoredBytes
		out.StoredBytes, out.ParentID = &stored, optional(b.ParentID)
	}
	return out
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

// listQuery parses a list's query string: limit, marker, offset, sort
// (key[:dir],...) or sort_key/sort_dir, all_tenants, and the filters named
// in allowed (metadata: a Python dict's repr, parsePythonDict; bootable:
// a boolean's spellings). Unknown and repeated parameters are refused, so
// a typo never lists everything. The service checks what the values mean.
//
// As in the block storage API, limit=0 answers an empty list, a limit
// above MaxLimit is MaxLimit, and the sort key display_name is name.
//
// all_tenants takes the spellings of a boolean the clients send (1,
// true, True, yes, on; 0, false, no, off). From a caller who is not an
// admin it is ignored, as the block storage API does: the answer is the
// caller's own project (the clients send it when they look a name up).
func listQuery(r *http.Request, c service.Caller, allowed ...string) (service.ListQuery, error) {
	q := r.URL.Query()
	var lq service.ListQuery
	if err := noQuery(r, append([]string{"limit", "marker", "offset", "sort", "sort_key", "sort_dir", "all_tenants"}, allowed...)...); err != nil {
		return lq, err
	}
	if s := q.Get("limit"); s != "" {
		// 0 is the service's "default", not a limit: limit=0 is Empty.
		n, err := strconv.Atoi(s)
		if err != nil && !isDigits(s) || n < 0 {
			return lq, fmt.Errorf("limit %q: want a whole number from 0: %w", s, cairn.ErrInvalid)
		}
		if err != nil || n > MaxLimit {
			n = MaxLimit // too large even for an int
		}
		lq.Limit, lq.Empty = n, n == 0
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return lq, fmt.Errorf("offset %q: want a whole number from 0: %w", s, cairn.ErrInvalid)
		}
		lq.Offset = n
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
			if key == "display_name" {
				key = "name"
			}
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
	lq.ProjectID = q.Get("project_id")
	lq.AvailabilityZone = q.Get("availability_zone")
	if b, ok := q["bootable"]; ok {
		v, given, err := wire.Flag("bootable", json.RawMessage(strconv.Quote(b[0])))
		if err != nil || !given {
			return lq, fmt.Errorf("bootable %q: want true or false: %w", b[0], cairn.ErrInvalid)
		}
		lq.Bootable = &v
	}
	if md, ok := q["metadata"]; ok {
		var err error
		if lq.Metadata, err = parsePythonDict(md[0]); err != nil {
			return lq, err
		}
	}
	if md, ok := q["glance_metadata"]; ok {
		var err error
		if lq.GlanceMetadata, err = parsePythonDict(md[0]); err != nil {
			return lq, fmt.Errorf("glance_metadata: %w", err)
		}
	}
	lq.GroupID = q.Get("group_id")
	var err error
	lq.AllProjects, err = allTenants(r, c)
	return lq, err
}

// allTenants reads all_tenants, in the spellings of a boolean the
// clients send (1, true, True, yes, on; 0, false, no, off): true only
// for an admin, as the block storage API ignores it from others.
func allTenants(r *http.Request, c service.Caller) (bool, error) {
	switch at := r.URL.Query().Get("all_tenants"); strings.ToLower(at) {
	case "1", "true", "t", "yes", "y", "on":
		return c.Admin, nil
	case "", "0", "false", "f", "no", "n", "off":
		return false, nil
	default:
		return false, fmt.Errorf("all_tenants %q: want true or false: %w", at, cairn.ErrInvalid)
	}
}

// nextLink is the link to the page after a full one.
func nextLink(r *http.Request, n int, lq service.ListQuery, last string) []wire.Link {
	if n < lq.PageSize() || last == "" {
		return nil
	}
	q := r.URL.Query()
	q.Set("marker", last)
	q.Set("limit", strconv.Itoa(lq.PageSize()))
	// The marker is after the rows skipped.
	q.Del("offset")
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
		{"availability_zone", in.AvailabilityZone, wire.AvailabilityZone, "availability zones but " + wire.AvailabilityZone},
		{"consistencygroup_id", in.ConsistencyGroupID, "", "consistency groups"},
		{"imageRef", in.ImageRef, "", "images"},
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
	source := ""
	if in.SourceVolID != nil {
		source = *in.SourceVolID
	}
	if in.Size == nil && in.SnapshotID == "" && in.BackupID == "" && source == "" {
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
		Size: size, SnapshotID: in.SnapshotID, BackupID: in.BackupID, SourceVolID: source, Metadata: in.Metadata,
		VolumeType: volumeTypeRef(in.VolumeType)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"volume": withoutProject(s.volumeJSON(r, v))})
	return nil
}

func (s *Server) listVolumes(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		allowed := []string{"name", "status", "metadata", "project_id", "bootable", "availability_zone"}
		if atLeast(r, glanceMetadataMinor) {
			allowed = append(allowed, "glance_metadata")
		}
		if atLeast(r, groupFilterMinor) {
			allowed = append(allowed, "group_id")
		}
		lq, err := listQuery(r, c, allowed...)
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
			items[i] = s.withHost(c, s.volumeJSON(r, v))
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
	writeJSON(w, http.StatusOK, map[string]any{"volume": s.withHost(c, s.volumeJSON(r, v))})
	return nil
}

// withHost adds, for an admin, the pool that holds the volume
// (os-vol-host-attr:host), as the block storage API shows admins in show
// and the detailed list.
func (s *Server) withHost(c service.Caller, v wire.Volume) wire.Volume {
	if c.Admin {
		pool := s.svc.PoolName()
		v.Host = &pool
		v.MigrationStatus, v.NameID, v.Migration = json.RawMessage("null"), json.RawMessage("null"), json.RawMessage("null")
	}
	return v
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
	writeJSON(w, http.StatusOK, map[string]any{"volume": withoutProject(s.volumeJSON(r, v))})
	return nil
}

// deleteVolume deletes a volume, with its snapshots given cascade=true
// (a boolean's spellings, as all_tenants).
func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var how service.VolumeDelete
	for k, v := range r.URL.Query() {
		if k != "cascade" {
			return fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
		if len(v) != 1 {
			return fmt.Errorf("query parameter %q: given %d times: %w", k, len(v), cairn.ErrInvalid)
		}
		b, given, err := wire.Flag("cascade", json.RawMessage(strconv.Quote(v[0])))
		if err != nil || !given {
			return fmt.Errorf("cascade %q: want true or false: %w", v[0], cairn.ErrInvalid)
		}
		how.Cascade = b
	}
	if err := s.svc.DeleteVolumeWith(r.Context(), c, r.PathValue("id"), how); err != nil {
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

// isDigits reports whether s is a non-empty run of ASCII digits (a
// number too large for an int is still a number).
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// flagAction reads an action's boolean argument, which it requires.
func flagAction(action, member string, b json.RawMessage) (bool, error) {
	v, given, err := wire.Flag(action+"."+member, b)
	if err != nil {
		return false, fmt.Errorf("%w: %w", err, cairn.ErrInvalid)
	}
	if !given {
		return false, fmt.Errorf("%s.%s is required: true or false: %w", action, member, cairn.ErrInvalid)
	}
	return v, nil
}

// volumeActions names the actions of POST /volumes/{id}/action.
const volumeActions = "os-extend, os-attach, os-detach, os-reset_status, os-reserve, os-unreserve, " +
	"os-begin_detaching, os-roll_detaching, os-force_delete, os-set_bootable, os-update_readonly_flag or os-retype"

func (s *Server) volumeAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if count(req.Extend != nil, req.Attach != nil, req.Detach != nil, req.ResetStatus != nil,
		req.Reserve.Given, req.Unreserve.Given, req.BeginDetaching.Given, req.RollDetaching.Given,
		req.ForceDelete.Given, req.SetBootable != nil, req.UpdateReadonlyFlag != nil, req.Retype != nil) != 1 {
		return fmt.Errorf("give exactly one action: %s: %w", volumeActions, cairn.ErrInvalid)
	}
	id, ctx := r.PathValue("id"), r.Context()
	simple := func(err error) error {
		if err == nil {
			w.WriteHeader(http.StatusAccepted)
		}
		return err
	}
	switch {
	case req.Reserve.Given:
		return simple(s.svc.ReserveVolume(ctx, c, id))
	case req.Unreserve.Given:
		return simple(s.svc.UnreserveVolume(ctx, c, id))
	case req.BeginDetaching.Given:
		return simple(s.svc.BeginDetaching(ctx, c, id))
	case req.RollDetaching.Given:
		return simple(s.svc.RollDetaching(ctx, c, id))
	case req.ForceDelete.Given:
		return simple(s.svc.ForceDeleteVolume(ctx, c, id))
	case req.Retype != nil:
		if p := req.Retype.MigrationPolicy; p != nil && *p != "never" && *p != "on-demand" {
			return fmt.Errorf("os-retype.migration_policy %q: want never or on-demand: %w", *p, cairn.ErrInvalid)
		}
		return simple(s.svc.RetypeVolume(ctx, c, id, req.Retype.NewType))
	case req.SetBootable != nil:
		b, err := flagAction("os-set_bootable", "bootable", req.SetBootable.Bootable)
		if err != nil {
			return err
		}
		// The block storage API answers this one 200, without a body.
		if err := s.svc.SetBootable(ctx, c, id, b); err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
	case req.UpdateReadonlyFlag != nil:
		b, err := flagAction("os-update_readonly_flag", "readonly", req.UpdateReadonlyFlag.Readonly)
		if err != nil {
			return err
		}
		return simple(s.svc.SetReadOnly(ctx, c, id, b))
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
		rs := req.ResetStatus
		reset := service.VolumeReset{Status: cairn.Status(rs.Status)}
		if rs.AttachStatus != nil {
			reset.AttachStatus = *rs.AttachStatus
		}
		if rs.MigrationStatus != nil {
			reset.MigrationStatus = *rs.MigrationStatus
		}
		return simple(s.svc.ResetVolumeStatus(ctx, c, id, reset))
	}
	return nil
}

// snapshotOrBackupReset refuses what os-reset_status takes only for
// volumes.
func snapshotOrBackupReset(what string, rs *wire.ResetStatusAction) error {
	if rs.AttachStatus != nil || rs.MigrationStatus != nil {
		return fmt.Errorf("os-reset_status of a %s: attach_status and migration_status are a volume's: %w", what, cairn.ErrInvalid)
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
	if err := displayAliases("snapshot", &in.Name, &in.Description, in.DisplayName, in.DisplayDescription); err != nil {
		return err
	}
	var volumeID string
	switch {
	case len(in.VolumeID) == 0:
		// absent: the service refuses the empty ID
	case string(in.VolumeID) == "null":
		return fmt.Errorf("volume null: %w", cairn.ErrNotFound)
	default:
		if err := json.Unmarshal(in.VolumeID, &volumeID); err != nil {
			return fmt.Errorf("snapshot.volume_id: want a string: %w", cairn.ErrInvalid)
		}
	}
	snap, err := s.svc.CreateSnapshot(r.Context(), c, service.SnapshotCreate{VolumeID: volumeID,
		Name: deref(in.Name), Description: deref(in.Description), Force: in.Force, Metadata: in.Metadata})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"snapshot": snapshotSummaryJSON(snap)})
	return nil
}

func (s *Server) listSnapshots(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		lq, err := listQuery(r, c, "name", "status", "volume_id", "metadata", "project_id", "availability_zone")
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
				l[i] = snapshotJSON(r, v)
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
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": snapshotJSON(r, v)})
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
	// The summary, as the block storage API answers an update.
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": snapshotSummaryJSON(v)})
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
	var req wire.SnapshotActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	n := 0
	for _, given := range []bool{req.ResetStatus != nil, req.ForceDelete.Given, req.UpdateStatus != nil} {
		if given {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("give exactly one action: os-reset_status, os-force_delete or os-update_snapshot_status: %w", cairn.ErrInvalid)
	}
	id := r.PathValue("id")
	var err error
	switch {
	case req.ResetStatus != nil:
		if err = snapshotOrBackupReset("snapshot", req.ResetStatus); err == nil {
			err = s.svc.ResetSnapshotStatus(r.Context(), c, id, cairn.Status(req.ResetStatus.Status))
		}
	case req.ForceDelete.Given:
		err = s.svc.ForceDeleteSnapshot(r.Context(), c, id)
	default:
		err = s.svc.UpdateSnapshotStatus(r.Context(), c, id, service.SnapshotStatusUpdate{
			Status: cairn.Status(req.UpdateStatus.Status), Progress: req.UpdateStatus.Progress})
	}
	if err != nil {
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
		lq, err := listQuery(r, c, "name", "status", "volume_id", "snapshot_id", "project_id")
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

// verified gives a backup's last verification's time and state, for
// verified_at and verify_state (absent when never verified).
func verified(v *cairn.BackupCheck) (*time.Time, string) {
	if v == nil {
		return nil, ""
	}
	at := v.At
	return &at, v.State
}

func (s *Server) showBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	d, err := s.svc.Backup(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := backupJSON(r, d.Backup, d.HasDependents)
	if cairnMembers(r) {
		protected := d.Marks.Protected
		out.Protected, out.Verification, out.Drill = &protected, d.Marks.Verification, d.Marks.Drill
		out.VerifiedAt, out.VerifyState = verified(d.Marks.Verification)
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": out})
	return nil
}

// updateBackup is PUT /backups/{id} (from 3.9: since).
func (s *Server) updateBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.BackupUpdateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Backup
	if in.Name == nil && in.Description == nil {
		return fmt.Errorf("nothing to update: give backup.name or backup.description: %w", cairn.ErrInvalid)
	}
	b, err := s.svc.UpdateBackup(r.Context(), c, r.PathValue("id"), service.BackupUpdate{Name: in.Name, Description: in.Description})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": summaryJSON(r, service.BackupsCollection, b.ID, b.Name)})
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
	var req wire.BackupActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case req.ResetStatus != nil && req.Protect != nil, req.ResetStatus == nil && req.Protect == nil:
		return fmt.Errorf("give one action: os-reset_status or cairn-protect: %w", cairn.ErrInvalid)
	case req.Protect != nil:
		m, err := s.svc.ProtectBackup(r.Context(), c, r.PathValue("id"), req.Protect.Protected)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"backup": map[string]any{"id": m.BackupID, "protected": m.Protected}})
		return nil
	}
	if err := snapshotOrBackupReset("backup", req.ResetStatus); err != nil {
		return err
	}
	if err := s.svc.ResetBackupStatus(r.Context(), c, r.PathValue("id"), cairn.Status(req.ResetStatus.Status)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
