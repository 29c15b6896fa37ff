package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/service"
)

// Wire types: the JSON the API speaks. Requests use pointer fields where
// the API must tell "absent" from "zero".

// VolumeJSON is a volume as the API shows it.
type VolumeJSON struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Size        int64     `json:"size"`
	Status      string    `json:"status"`
	FailReason  *string   `json:"fail_reason"`
	SnapshotID  *string   `json:"snapshot_id"`
	BackupID    *string   `json:"backup_id"`
	ProjectID   string    `json:"os-vol-tenant-attr:tenant_id"`
	Attached    bool      `json:"attached"`
	Bootable    string    `json:"bootable"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// SnapshotJSON is a snapshot as the API shows it.
type SnapshotJSON struct {
	ID          string    `json:"id"`
	VolumeID    string    `json:"volume_id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Size        int64     `json:"size"`
	Status      string    `json:"status"`
	FailReason  *string   `json:"fail_reason"`
	ProjectID   string    `json:"os-extended-snapshot-attributes:project_id"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// BackupJSON is a backup as the API shows it.
type BackupJSON struct {
	ID                  string    `json:"id"`
	Name                string    `json:"name"`
	Description         string    `json:"description"`
	VolumeID            string    `json:"volume_id"`
	SnapshotID          *string   `json:"snapshot_id"`
	Container           string    `json:"container"`
	Status              string    `json:"status"`
	FailReason          *string   `json:"fail_reason"`
	Size                int64     `json:"size"`
	ObjectCount         int64     `json:"object_count"`
	StoredBytes         int64     `json:"stored_bytes"`
	IsIncremental       bool      `json:"is_incremental"`
	HasDependentBackups bool      `json:"has_dependent_backups"`
	ParentID            *string   `json:"parent_id"`
	DataTimestamp       time.Time `json:"data_timestamp"`
	ProjectID           string    `json:"os-backup-project-attr:project_id"`
	CreatedAt           time.Time `json:"created_at"`
	UpdatedAt           time.Time `json:"updated_at"`
}

// Summary is a list entry without details.
type Summary struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Link is a paging link.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func volumeJSON(v cairn.Volume) VolumeJSON {
	return VolumeJSON{ID: v.ID, Name: v.Name, Description: v.Description, Size: v.Size,
		Status: string(v.Status), FailReason: optional(v.FailReason), SnapshotID: optional(v.SnapshotID),
		BackupID: optional(v.BackupID), ProjectID: v.ProjectID, Attached: v.Attached, Bootable: "false",
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
}

func snapshotJSON(v cairn.Snapshot) SnapshotJSON {
	return SnapshotJSON{ID: v.ID, VolumeID: v.VolumeID, Name: v.Name, Description: v.Description,
		Size: v.Size, Status: string(v.Status), FailReason: optional(v.FailReason), ProjectID: v.ProjectID,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
}

func backupJSON(b cairn.Backup, dependents bool) BackupJSON {
	return BackupJSON{ID: b.ID, Name: b.Name, Description: b.Description, VolumeID: b.VolumeID,
		SnapshotID: optional(b.SnapshotID), Container: b.Container, Status: string(b.Status),
		FailReason: optional(b.FailReason), Size: b.Size, ObjectCount: b.ObjectCount,
		StoredBytes: b.StoredBytes, IsIncremental: b.Incremental, HasDependentBackups: dependents,
		ParentID: optional(b.ParentID), DataTimestamp: b.DataTimestamp, ProjectID: b.ProjectID,
		CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}
}

// Page sizes of lists.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// listFilter parses a list's query: limit, marker, sort (key[:dir],...)
// or sort_key/sort_dir, and the filters named in allowed. Unknown
// parameters are refused, so a typo never lists everything.
func listFilter(r *http.Request, c service.Caller, allowed ...string) (catalog.Filter, error) {
	q := r.URL.Query()
	f := catalog.Filter{Limit: DefaultLimit}
	ok := map[string]bool{"limit": true, "marker": true, "sort": true, "sort_key": true, "sort_dir": true, "all_tenants": true}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, v := range q {
		if !ok[k] {
			return f, fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
		if len(v) != 1 {
			return f, fmt.Errorf("query parameter %q: given %d times: %w", k, len(v), cairn.ErrInvalid)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return f, fmt.Errorf("limit %q: want 1 to %d: %w", s, MaxLimit, cairn.ErrInvalid)
		}
		f.Limit = n
	}
	f.Marker = q.Get("marker")
	sortSpec := q.Get("sort")
	if sk := q.Get("sort_key"); sk != "" {
		if sortSpec != "" {
			return f, fmt.Errorf("give sort or sort_key, not both: %w", cairn.ErrInvalid)
		}
		sortSpec = sk
		if d := q.Get("sort_dir"); d != "" {
			sortSpec += ":" + d
		}
	}
	if sortSpec != "" {
		for _, part := range strings.Split(sortSpec, ",") {
			key, dir, _ := strings.Cut(part, ":")
			if !catalog.ValidSortKey(key) {
				return f, fmt.Errorf("sort key %q: unknown: %w", key, cairn.ErrInvalid)
			}
			switch dir {
			case "", "desc":
				f.Sort = append(f.Sort, catalog.SortKey{Key: key, Desc: true})
			case "asc":
				f.Sort = append(f.Sort, catalog.SortKey{Key: key})
			default:
				return f, fmt.Errorf("sort direction %q: want asc or desc: %w", dir, cairn.ErrInvalid)
			}
		}
	}
	f.Name = q.Get("name")
	f.Status = cairn.Status(q.Get("status"))
	f.VolumeID = q.Get("volume_id")
	f.SnapshotID = q.Get("snapshot_id")
	f.ProjectID = c.ProjectID
	if at := q.Get("all_tenants"); at != "" {
		if !c.Admin {
			return f, fmt.Errorf("all_tenants is for admins: %w", cairn.ErrForbidden)
		}
		switch at {
		case "1", "true":
			f.ProjectID = ""
		case "0", "false":
		default:
			return f, fmt.Errorf("all_tenants %q: want 1, true, 0 or false: %w", at, cairn.ErrInvalid)
		}
	}
	return f, nil
}

// nextLink is the link to the page after a full one.
func nextLink(r *http.Request, n int, f catalog.Filter, last string) []Link {
	if n < f.Limit || last == "" {
		return nil
	}
	q := r.URL.Query()
	q.Set("marker", last)
	q.Set("limit", strconv.Itoa(f.Limit))
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	return []Link{{Rel: "next", Href: u.String()}}
}

// listSummaries answers a list without details: IDs and names.
func (s *Server) listSummaries(w http.ResponseWriter, r *http.Request, c service.Caller, kind catalog.Kind, f catalog.Filter) error {
	list, err := s.svc.Summaries(r.Context(), c, kind, f)
	if err != nil {
		return err
	}
	items := make([]Summary, len(list))
	for i, v := range list {
		items[i] = Summary{ID: v.ID, Name: v.Name}
	}
	out := map[string]any{string(kind): items}
	if len(list) > 0 {
		if l := nextLink(r, len(list), f, list[len(list)-1].ID); l != nil {
			out[string(kind)+"_links"] = l
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
	writeJSON(w, http.StatusOK, map[string]any{"limits": l})
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

// VolumeCreateRequest is POST /volumes.
type VolumeCreateRequest struct {
	Volume struct {
		Size        *int64 `json:"size"`
		Name        string `json:"name"`
		Description string `json:"description"`
		SnapshotID  string `json:"snapshot_id"`
		BackupID    string `json:"backup_id"`
	} `json:"volume"`
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req VolumeCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Volume
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
		Size: size, SnapshotID: in.SnapshotID, BackupID: in.BackupID})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"volume": volumeJSON(v)})
	return nil
}

func (s *Server) listVolumes(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		f, err := listFilter(r, c, "name", "status")
		if err != nil {
			return err
		}
		if !detail {
			return s.listSummaries(w, r, c, catalog.KindVolumes, f)
		}
		list, err := s.svc.Volumes(r.Context(), c, f)
		if err != nil {
			return err
		}
		items := make([]VolumeJSON, len(list))
		for i, v := range list {
			items[i] = volumeJSON(v)
		}
		out := map[string]any{"volumes": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), f, list[len(list)-1].ID); l != nil {
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
	writeJSON(w, http.StatusOK, map[string]any{"volume": volumeJSON(v)})
	return nil
}

// VolumeUpdateRequest is PUT /volumes/{id}.
type VolumeUpdateRequest struct {
	Volume struct {
		Name        *string `json:"name"`
		Description *string `json:"description"`
	} `json:"volume"`
}

func (s *Server) updateVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req VolumeUpdateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Volume.Name == nil && req.Volume.Description == nil {
		return fmt.Errorf("nothing to update: give volume.name or volume.description: %w", cairn.ErrInvalid)
	}
	v, err := s.svc.UpdateVolume(r.Context(), c, r.PathValue("id"),
		service.VolumeUpdate{Name: req.Volume.Name, Description: req.Volume.Description})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": volumeJSON(v)})
	return nil
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteVolume(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// VolumeActionRequest is POST /volumes/{id}/action: exactly one action.
type VolumeActionRequest struct {
	Extend *struct {
		NewSize int64 `json:"new_size"`
	} `json:"os-extend"`
	Attach      *struct{} `json:"os-attach"`
	Detach      *struct{} `json:"os-detach"`
	ResetStatus *struct {
		Status string `json:"status"`
	} `json:"os-reset_status"`
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
	var req VolumeActionRequest
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
		writeJSON(w, http.StatusOK, map[string]any{"attachment": a})
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

// SnapshotCreateRequest is POST /snapshots.
type SnapshotCreateRequest struct {
	Snapshot struct {
		VolumeID    string `json:"volume_id"`
		Name        string `json:"name"`
		Description string `json:"description"`
		Force       bool   `json:"force"`
	} `json:"snapshot"`
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req SnapshotCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.Snapshot
	snap, err := s.svc.CreateSnapshot(r.Context(), c, service.SnapshotCreate{VolumeID: in.VolumeID,
		Name: in.Name, Description: in.Description, Force: in.Force})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"snapshot": snapshotJSON(snap)})
	return nil
}

func (s *Server) listSnapshots(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		f, err := listFilter(r, c, "name", "status", "volume_id")
		if err != nil {
			return err
		}
		if !detail {
			return s.listSummaries(w, r, c, catalog.KindSnapshots, f)
		}
		list, err := s.svc.Snapshots(r.Context(), c, f)
		if err != nil {
			return err
		}
		items := make([]SnapshotJSON, len(list))
		for i, v := range list {
			items[i] = snapshotJSON(v)
		}
		out := map[string]any{"snapshots": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), f, list[len(list)-1].ID); l != nil {
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

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteSnapshot(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// ResetStatusRequest is POST .../action with os-reset_status.
type ResetStatusRequest struct {
	ResetStatus *struct {
		Status string `json:"status"`
	} `json:"os-reset_status"`
}

func (s *Server) snapshotAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req ResetStatusRequest
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

// BackupCreateRequest is POST /backups.
type BackupCreateRequest struct {
	Backup struct {
		VolumeID    string `json:"volume_id"`
		SnapshotID  string `json:"snapshot_id"`
		Incremental bool   `json:"incremental"`
		Container   string `json:"container"`
		Name        string `json:"name"`
		Description string `json:"description"`
		Force       bool   `json:"force"`
	} `json:"backup"`
}

func (s *Server) createBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req BackupCreateRequest
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
	writeJSON(w, http.StatusAccepted, map[string]any{"backup": backupJSON(b, false)})
	return nil
}

func (s *Server) listBackups(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		f, err := listFilter(r, c, "name", "status", "volume_id", "snapshot_id")
		if err != nil {
			return err
		}
		if !detail {
			return s.listSummaries(w, r, c, catalog.KindBackups, f)
		}
		list, err := s.svc.Backups(r.Context(), c, f)
		if err != nil {
			return err
		}
		items := make([]BackupJSON, len(list))
		for i, b := range list {
			items[i] = backupJSON(b.Backup, b.HasDependents)
		}
		out := map[string]any{"backups": items}
		if len(list) > 0 {
			if l := nextLink(r, len(list), f, list[len(list)-1].ID); l != nil {
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
	writeJSON(w, http.StatusOK, map[string]any{"backup": backupJSON(d.Backup, d.HasDependents)})
	return nil
}

func (s *Server) deleteBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteBackup(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// RestoreRequest is POST /backups/{id}/restore.
type RestoreRequest struct {
	Restore struct {
		VolumeID string `json:"volume_id"`
		Name     string `json:"name"`
	} `json:"restore"`
}

func (s *Server) restoreBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req RestoreRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	res, err := s.svc.RestoreBackup(r.Context(), c, r.PathValue("id"),
		service.RestoreRequest{VolumeID: req.Restore.VolumeID, Name: req.Restore.Name})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"restore": res})
	return nil
}

// BackupRecordJSON is export_record's answer and import_record's body.
type BackupRecordJSON struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

func (s *Server) exportRecord(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	svc, u, err := s.svc.ExportRecord(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup-record": BackupRecordJSON{svc, u}})
	return nil
}

// ImportRecordRequest is POST /backups/import_record.
type ImportRecordRequest struct {
	BackupRecord *BackupRecordJSON `json:"backup-record"`
}

func (s *Server) importRecord(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req ImportRecordRequest
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
	writeJSON(w, http.StatusCreated, map[string]any{"backup": backupJSON(b, false)})
	return nil
}

func (s *Server) backupAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req ResetStatusRequest
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
