package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// The database API: database instances, their backups, the datastores
// installed, the one flavor and backup strategies, in the shapes of
// OpenStack Trove's API under /v1.0/{project_id}/, so that Trove's
// clients (python-troveclient, `openstack database ...`) work against it.
// Authentication, project scoping, request IDs and error bodies are the
// block storage API's: Trove's error bodies have the same form
// ({"itemNotFound": {"code": 404, "message": ...}}).

// Databases is what the database API needs of the service. Every call
// acts for c within c.ProjectID (the URL's project, which auth has
// checked c may act in): another project's instance, backup or strategy
// is ErrNotFound, exactly like a missing one, and only an admin may list
// with q.AllProjects (ErrForbidden otherwise). Errors wrap the root
// package's sentinels, which decide the answer's status (cairn.HTTPStatus):
// ErrInvalid and ErrUnsupported for requests that cannot be served as
// given, ErrNotFound, ErrConflict for a state that forbids the call,
// ErrQuota.
//
// The API calls it from many requests at once: an implementation is safe
// for concurrent use, and a call that checks a state and changes it does
// both atomically, so of two requests racing for one resource one gets
// ErrConflict. The calls that start long operations (CreateInstance,
// DeleteInstance, CreateDatabaseBackup, DeleteDatabaseBackup) return once
// the operation is durably accepted, with the resource in its first state
// (BUILD, SHUTDOWN, NEW), not once it is done.
type Databases interface {
	// Datastores returns the datastores installed on the host, each
	// with its versions.
	Datastores(ctx context.Context) ([]cairn.Datastore, error)

	// CreateInstance accepts a new instance, in BUILD.
	CreateInstance(ctx context.Context, c service.Caller, in cairn.InstanceCreate) (cairn.Instance, error)
	// ListInstances returns one page of instances: at most q.PageSize()
	// after q.Marker, created_at descending, ties broken by ID.
	ListInstances(ctx context.Context, c service.Caller, q service.ListQuery) ([]cairn.Instance, error)
	Instance(ctx context.Context, c service.Caller, id string) (cairn.Instance, error)
	// DeleteInstance accepts the deletion of an instance and its volume;
	// its backups stay.
	DeleteInstance(ctx context.Context, c service.Caller, id string) error
	// RecoverInstance accepts the recover in place of an active instance
	// to a point in time, in RECOVER; UndoRecover accepts putting it back
	// as its last recover found it.
	RecoverInstance(ctx context.Context, c service.Caller, id string, in cairn.InstanceRecoverRequest) (cairn.Instance, error)
	UndoRecover(ctx context.Context, c service.Caller, id string) (cairn.Instance, error)
	// UpdateInstanceMetadata makes e to an instance's metadata in one
	// transaction and returns all of it after (nil for none).
	UpdateInstanceMetadata(ctx context.Context, c service.Caller, id string, e service.MetadataEdit) (map[string]string, error)

	// CreateDatabaseBackup accepts a backup of an instance, in NEW.
	CreateDatabaseBackup(ctx context.Context, c service.Caller, in cairn.DatabaseBackupCreate) (cairn.DatabaseBackup, error)
	// ListDatabaseBackups returns one page of the backups f selects, in
	// ListInstances' order.
	ListDatabaseBackups(ctx context.Context, c service.Caller, q service.ListQuery, f cairn.DatabaseBackupFilter) ([]cairn.DatabaseBackup, error)
	DatabaseBackup(ctx context.Context, c service.Caller, id string) (cairn.DatabaseBackup, error)
	DeleteDatabaseBackup(ctx context.Context, c service.Caller, id string) error
	// BackupMarks returns a backup's protection and its last
	// verification's and drill's outcomes.
	BackupMarks(ctx context.Context, c service.Caller, id string) (cairn.BackupMarks, error)

	// BackupStrategies returns the project's backup strategies: all of
	// them, or the one of instanceID's when it is not "".
	BackupStrategies(ctx context.Context, c service.Caller, instanceID string) ([]cairn.BackupStrategy, error)
	// SetBackupStrategy creates or replaces the strategy of (c.ProjectID,
	// st.InstanceID) and returns it as stored, Backend filled in.
	SetBackupStrategy(ctx context.Context, c service.Caller, st cairn.BackupStrategy) (cairn.BackupStrategy, error)
	// DeleteBackupStrategy removes the strategy of (c.ProjectID,
	// instanceID); ErrNotFound when there is none.
	DeleteBackupStrategy(ctx context.Context, c service.Caller, instanceID string) error
}

// withDatabases answers 404 for the database API when the server has no
// Databases.
func (s *Server) withDatabases(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		if s.db == nil {
			return fmt.Errorf("%s %s: this service does not serve database instances: %w", r.Method, r.URL.Path, cairn.ErrNotFound)
		}
		return h(w, r, c)
	}
}

// databaseVersions is the version document of the database API.
func (s *Server) databaseVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"versions": []wire.Version{{
		ID: "v1.0", Status: "CURRENT", Links: []wire.Link{{Rel: "self", Href: "/v1.0/"}},
	}}})
}

// links are a resource's self and bookmark links, as Trove gives them
// (relative, like the block storage API's paging links). collection is a
// path, escaped where it needs to be.
func links(project, collection, id string) []wire.Link {
	id = url.PathEscape(id)
	return []wire.Link{
		{Rel: "self", Href: "/v1.0/" + url.PathEscape(project) + "/" + collection + "/" + id},
		{Rel: "bookmark", Href: "/" + collection + "/" + id},
	}
}

// gib is n bytes in GiB, Trove's unit of sizes.
func gib(n int64) float64 { return float64(n) / (1 << 30) }

func instanceJSON(v cairn.Instance) wire.Instance {
	out := wire.Instance{ID: v.ID, Name: v.Name, Status: string(v.Status),
		OperatingStatus: string(v.OperatingStatus), FailReason: optional(v.FailReason),
		Datastore: wire.InstanceDatastore{Type: v.Datastore.Type, Version: v.Datastore.Version},
		Flavor:    wire.InstanceFlavor{ID: wire.HostFlavorID, Links: links(v.ProjectID, "flavors", wire.HostFlavorID)},
		Volume:    wire.InstanceVolume{Size: v.VolumeSize},
		BackupID:  optional(v.BackupID), ProjectID: v.ProjectID,
		Links: links(v.ProjectID, "instances", v.ID), Created: v.CreatedAt, Updated: v.UpdatedAt}
	if v.VolumeUsed > 0 {
		used := gib(v.VolumeUsed)
		out.Volume.Used = &used
	}
	if v.Address != "" {
		out.IP = []string{v.Address}
		out.Addresses = []wire.InstanceAddress{{Address: v.Address, Type: "private", Port: v.Port}}
	}
	if v.FailReason != "" {
		out.Fault = &wire.InstanceFault{Message: v.FailReason, Created: v.UpdatedAt}
	}
	out.RecoverableWindow, out.Archive, out.Recovery = v.RecoverableWindow, v.Archive, v.Recovery
	out.RestorePoints, out.Metadata = v.RestorePoints, metadataJSON(v.Metadata)
	return out
}

// recoveryJSON is an instance's recovery as a recover or an undo
// answers it.
func recoveryJSON(v cairn.Instance) wire.Recovery {
	rc := v.Recovery
	return wire.Recovery{ID: rc.ID, InstanceID: v.ID, Name: v.Name, Status: string(rc.Status), InstanceStatus: string(v.Status),
		Datastore:           wire.InstanceDatastore{Type: v.Datastore.Type, Version: v.Datastore.Version},
		RecoveredFromBackup: rc.BackupID, PointInTime: rc.PointInTime, SafetySnapshot: rc.SafetySnapshot}
}

func databaseBackupJSON(b cairn.DatabaseBackup) wire.DatabaseBackup {
	out := wire.DatabaseBackup{ID: b.ID, Name: b.Name, Description: b.Description,
		InstanceID: b.InstanceID, Status: string(b.Status), FailReason: optional(b.FailReason),
		ParentID: optional(b.ParentID), LocationRef: optional(b.Location),
		Strategy: string(b.Strategy), Container: b.Container,
		Datastore: wire.BackupDatastore{Type: b.Datastore.Type, Version: b.Datastore.Version, VersionID: b.Datastore.VersionID},
		ProjectID: b.ProjectID, Created: b.CreatedAt, Updated: b.UpdatedAt}
	if b.Status == cairn.DatabaseBackupCompleted {
		size := gib(b.Size)
		out.Size = &size
	}
	if !b.DataTimestamp.IsZero() {
		t := b.DataTimestamp
		out.DataTimestamp = &t
	}
	return out
}

func backupStrategyJSON(st cairn.BackupStrategy) wire.BackupStrategy {
	return wire.BackupStrategy{ProjectID: st.ProjectID, InstanceID: st.InstanceID, Backend: st.Backend,
		SwiftContainer: st.Container, Strategy: string(st.Strategy)}
}

func datastoreJSON(project string, d cairn.Datastore) wire.Datastore {
	out := wire.Datastore{ID: d.ID, Name: d.Name, DefaultVersion: d.DefaultVersionID,
		Links: links(project, "datastores", d.ID), Versions: make([]wire.DatastoreVersion, len(d.Versions))}
	for i, v := range d.Versions {
		out.Versions[i] = datastoreVersionJSON(project, d, v)
	}
	return out
}

func datastoreVersionJSON(project string, d cairn.Datastore, v cairn.DatastoreVersion) wire.DatastoreVersion {
	return wire.DatastoreVersion{ID: v.ID, Name: v.Name, Datastore: d.ID, Version: v.Version, Active: true,
		Links: links(project, "datastores/"+url.PathEscape(d.ID)+"/versions", v.ID)}
}

func hostFlavor(project string) wire.Flavor {
	return wire.Flavor{ID: wire.HostFlavorID, Name: wire.HostFlavorID,
		Description: "a database process on the service's host, sharing its CPUs and memory",
		Links:       links(project, "flavors", wire.HostFlavorID)}
}

// databaseQuery parses a database list's query string: limit and marker
// when paged, and the parameters named in allowed, whose values the
// caller reads from the returned values. Unknown and repeated parameters
// are refused, as the block storage API's lists do.
func databaseQuery(r *http.Request, paged bool, allowed ...string) (service.ListQuery, url.Values, error) {
	q := r.URL.Query()
	var lq service.ListQuery
	ok := map[string]bool{}
	if paged {
		ok["limit"], ok["marker"] = true, true
	}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, v := range q {
		if !ok[k] {
			return lq, q, fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
		if len(v) != 1 {
			return lq, q, fmt.Errorf("query parameter %q: given %d times: %w", k, len(v), cairn.ErrInvalid)
		}
	}
	if s := q.Get("limit"); s != "" {
		// The service checks the upper bound.
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return lq, q, fmt.Errorf("limit %q: want 1 to %d: %w", s, MaxLimit, cairn.ErrInvalid)
		}
		lq.Limit = n
	}
	lq.Marker = q.Get("marker")
	return lq, q, nil
}

// queryBool parses a boolean query parameter as Trove's clients send it
// (Python's True and False) or as people type it; "" is false.
func queryBool(q url.Values, name string) (bool, error) {
	switch v := q.Get(name); v {
	case "", "0", "false", "False":
		return false, nil
	case "1", "true", "True":
		return true, nil
	default:
		return false, fmt.Errorf("%s %q: want true or false: %w", name, v, cairn.ErrInvalid)
	}
}

// projectParam is the caller acting in the project the project_id query
// parameter names (Trove's way for an admin to reach another project),
// checked like a URL's project; c itself when there is none.
func (s *Server) projectParam(ctx context.Context, c service.Caller, q url.Values) (service.Caller, error) {
	p := q.Get("project_id")
	if p == "" {
		return c, nil
	}
	return s.actIn(ctx, c, p)
}

// pagedJSON writes a page of a list with Trove's paging link: a full page
// carries "links" with a "next" link whose marker is its last item.
func pagedJSON(w http.ResponseWriter, r *http.Request, key string, items any, n int, lq service.ListQuery, last string) {
	out := map[string]any{key: items}
	if n > 0 {
		if l := nextLink(r, n, lq, last); l != nil {
			out["links"] = l
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Flavors.

func (s *Server) listFlavors(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if _, _, err := databaseQuery(r, false); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavors": []wire.Flavor{hostFlavor(c.ProjectID)}})
	return nil
}

func (s *Server) showFlavor(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if id := r.PathValue("id"); id != wire.HostFlavorID {
		return fmt.Errorf("flavor %s: cairn has one flavor, %s: %w", id, wire.HostFlavorID, cairn.ErrNotFound)
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor": hostFlavor(c.ProjectID)})
	return nil
}

// Datastores.

// datastore finds the datastore named by its ID or name.
func (s *Server) datastore(ctx context.Context, ref string) (cairn.Datastore, error) {
	list, err := s.db.Datastores(ctx)
	if err != nil {
		return cairn.Datastore{}, err
	}
	for _, d := range list {
		if d.ID == ref || d.Name == ref {
			return d, nil
		}
	}
	return cairn.Datastore{}, fmt.Errorf("datastore %s: %w", ref, cairn.ErrNotFound)
}

func (s *Server) listDatastores(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if _, _, err := databaseQuery(r, false); err != nil {
		return err
	}
	list, err := s.db.Datastores(r.Context())
	if err != nil {
		return err
	}
	items := make([]wire.Datastore, len(list))
	for i, d := range list {
		items[i] = datastoreJSON(c.ProjectID, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"datastores": items})
	return nil
}

func (s *Server) showDatastore(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	d, err := s.datastore(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"datastore": datastoreJSON(c.ProjectID, d)})
	return nil
}

func (s *Server) listDatastoreVersions(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if _, _, err := databaseQuery(r, false); err != nil {
		return err
	}
	d, err := s.datastore(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": datastoreJSON(c.ProjectID, d).Versions})
	return nil
}

func (s *Server) showDatastoreVersion(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	d, err := s.datastore(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	ref := r.PathValue("version")
	for _, v := range d.Versions {
		if v.ID == ref || v.Name == ref {
			writeJSON(w, http.StatusOK, map[string]any{"version": datastoreVersionJSON(c.ProjectID, d, v)})
			return nil
		}
	}
	return fmt.Errorf("datastore %s: version %s: %w", d.Name, ref, cairn.ErrNotFound)
}

// Instances.

// checkFlavorRef accepts the one flavor, by ID or by a link ending in it.
func checkFlavorRef(f *wire.FlavorRef) error {
	if f == nil {
		return nil
	}
	ref := string(*f)
	if ref == wire.HostFlavorID || strings.HasSuffix(ref, "/flavors/"+wire.HostFlavorID) {
		return nil
	}
	return fmt.Errorf("instance.flavorRef %q: cairn has one flavor, %q (a database process on the service's host): %w",
		ref, wire.HostFlavorID, cairn.ErrInvalid)
}

// instanceCreate checks a create request's shape and turns it into the
// service's input; the service checks what the values mean (datastores,
// names, the backup).
func instanceCreate(in wire.InstanceCreate) (cairn.InstanceCreate, error) {
	var out cairn.InstanceCreate
	if in.Name == "" {
		return out, fmt.Errorf("instance.name is required: %w", cairn.ErrInvalid)
	}
	if err := checkFlavorRef(in.FlavorRef); err != nil {
		return out, err
	}
	if in.Datastore == nil || in.Datastore.Type == "" {
		return out, fmt.Errorf("instance.datastore.type is required: a datastore's name or ID (GET /v1.0/{project_id}/datastores lists them): %w", cairn.ErrInvalid)
	}
	if rp := in.RestorePoint; rp != nil {
		switch {
		case rp.PointInTime == nil && rp.BackupRef == "":
			return out, fmt.Errorf("instance.restorePoint needs a backupRef, or a point_in_time: %w", cairn.ErrInvalid)
		case rp.PointInTime == nil && rp.Instance != "":
			return out, fmt.Errorf("instance.restorePoint.instance goes with a point_in_time: %w", cairn.ErrInvalid)
		case rp.PointInTime != nil && rp.BackupRef == "" && rp.Instance == "":
			return out, fmt.Errorf("instance.restorePoint.point_in_time needs the backupRef or the instance to restore: %w", cairn.ErrInvalid)
		}
		out.BackupID = rp.BackupRef
		if rp.PointInTime != nil {
			out.PointInTime, out.SourceInstance = *rp.PointInTime, rp.Instance
		}
	}
	if in.Volume != nil && in.Volume.Type != nil && *in.Volume.Type != "" {
		return out, fmt.Errorf("instance.volume.type %q: cairn has no volume types: %w", *in.Volume.Type, cairn.ErrUnsupported)
	}
	switch {
	case in.Volume != nil && in.Volume.Size != nil:
		if *in.Volume.Size <= 0 {
			return out, fmt.Errorf("instance.volume.size %d: want a positive number of GiB: %w", *in.Volume.Size, cairn.ErrInvalid)
		}
		out.VolumeSize = *in.Volume.Size
	case out.BackupID == "" && out.PointInTime.IsZero():
		return out, fmt.Errorf("instance.volume.size is required (GiB): %w", cairn.ErrInvalid)
	}
	if a := in.Access; a != nil && (a.IsPublic || len(a.AllowedCIDRs) > 0) {
		return out, fmt.Errorf("instance.access: is_public and allowed_cidrs are not supported: a database listens on the service host's configured address only: %w", cairn.ErrUnsupported)
	}
	for i, d := range in.Databases {
		if d.Name == "" {
			return out, fmt.Errorf("instance.databases[%d].name is required: %w", i, cairn.ErrInvalid)
		}
		out.Databases = append(out.Databases, cairn.DatabaseSpec{Name: d.Name, CharacterSet: d.CharacterSet, Collate: d.Collate})
	}
	for i, u := range in.Users {
		if u.Name == "" || u.Password == "" {
			return out, fmt.Errorf("instance.users[%d]: name and password are required: %w", i, cairn.ErrInvalid)
		}
		user := cairn.DatabaseUser{Name: u.Name, Password: u.Password, Host: u.Host}
		for j, d := range u.Databases {
			if d.Name == "" {
				return out, fmt.Errorf("instance.users[%d].databases[%d].name is required: %w", i, j, cairn.ErrInvalid)
			}
			user.Databases = append(user.Databases, d.Name)
		}
		out.Users = append(out.Users, user)
	}
	out.Name, out.Metadata = in.Name, in.Metadata
	out.Datastore, out.DatastoreVersion = in.Datastore.Type, in.Datastore.Version
	return out, nil
}

func (s *Server) createInstance(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.InstanceCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in, err := instanceCreate(req.Instance)
	if err != nil {
		return err
	}
	v, err := s.db.CreateInstance(r.Context(), c, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"instance": instanceJSON(v)})
	return nil
}

// listInstances answers both GET /instances and /instances/detail: an
// instance is always shown whole.
func (s *Server) listInstances(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	lq, q, err := databaseQuery(r, true, "include_clustered")
	if err != nil {
		return err
	}
	// cairn has no clusters: every instance is listed either way.
	if _, err := queryBool(q, "include_clustered"); err != nil {
		return err
	}
	list, err := s.db.ListInstances(r.Context(), c, lq)
	if err != nil {
		return err
	}
	items := make([]wire.Instance, len(list))
	last := ""
	for i, v := range list {
		items[i], last = instanceJSON(v), v.ID
	}
	pagedJSON(w, r, "instances", items, len(list), lq, last)
	return nil
}

func (s *Server) showInstance(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	v, err := s.db.Instance(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"instance": instanceJSON(v)})
	return nil
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.db.DeleteInstance(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) recoverInstance(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.RecoverRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Recovery.PointInTime == nil {
		return fmt.Errorf("recovery.point_in_time is required: %w", cairn.ErrInvalid)
	}
	v, err := s.db.RecoverInstance(r.Context(), c, r.PathValue("id"),
		cairn.InstanceRecoverRequest{PointInTime: *req.Recovery.PointInTime, BackupID: req.Recovery.Backup})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"recovery": recoveryJSON(v)})
	return nil
}

// instanceAction serves Trove's POST /instances/{id}/action: one action
// a request; cairn has undo_recover.
func (s *Server) instanceAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.InstanceAction
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req) != 1 {
		return fmt.Errorf("an instance action body names exactly one action, not %d: %w", len(req), cairn.ErrInvalid)
	}
	for name, body := range req {
		if name != "undo_recover" {
			return fmt.Errorf("instance action %q: cairn serves undo_recover: %w", name, cairn.ErrInvalid)
		}
		var empty struct{}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&empty); err != nil {
			return fmt.Errorf("undo_recover takes an empty object: %w", cairn.ErrInvalid)
		}
	}
	v, err := s.db.UndoRecover(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"recovery": recoveryJSON(v)})
	return nil
}

func (s *Server) listInstanceBackups(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	lq, _, err := databaseQuery(r, true)
	if err != nil {
		return err
	}
	v, err := s.db.Instance(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	return s.writeDatabaseBackups(w, r, c, lq, cairn.DatabaseBackupFilter{InstanceID: v.ID})
}

// Backups.

// containerOf is the container a request names as container or
// swift_container (Trove's name); both must agree.
func containerOf(where, container, swift string) (string, error) {
	if container != "" && swift != "" && container != swift {
		return "", fmt.Errorf("%s.container %q and %s.swift_container %q: the same setting, given twice with different values: %w",
			where, container, where, swift, cairn.ErrInvalid)
	}
	if container == "" {
		return swift, nil
	}
	return container, nil
}

// strategyOf parses a strategy, "" for the default.
func strategyOf(where, s string) (cairn.DatabaseStrategy, error) {
	st := cairn.DatabaseStrategy(s)
	if s != "" && !st.Valid() {
		return "", fmt.Errorf("%s.strategy %q: want snapshot, physical or logical: %w", where, s, cairn.ErrInvalid)
	}
	return st, nil
}

func databaseBackupCreate(in wire.DatabaseBackupCreate) (cairn.DatabaseBackupCreate, error) {
	var out cairn.DatabaseBackupCreate
	if in.Name == "" {
		return out, fmt.Errorf("backup.name is required: %w", cairn.ErrInvalid)
	}
	if in.Instance == "" {
		return out, fmt.Errorf("backup.instance is required: the ID of the instance to back up: %w", cairn.ErrInvalid)
	}
	if in.Incremental != nil {
		switch *in.Incremental {
		case 0:
		case 1:
			out.Incremental = true
		default:
			return out, fmt.Errorf("backup.incremental %d: want 0 or 1: %w", *in.Incremental, cairn.ErrInvalid)
		}
	}
	var err error
	if out.Strategy, err = strategyOf("backup", in.Strategy); err != nil {
		return out, err
	}
	if out.Container, err = containerOf("backup", in.Container, in.SwiftContainer); err != nil {
		return out, err
	}
	out.InstanceID, out.Name, out.Description, out.ParentID = in.Instance, in.Name, in.Description, in.ParentID
	return out, nil
}

func (s *Server) createDatabaseBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.DatabaseBackupCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in, err := databaseBackupCreate(req.Backup)
	if err != nil {
		return err
	}
	b, err := s.db.CreateDatabaseBackup(r.Context(), c, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backup": databaseBackupJSON(b)})
	return nil
}

func (s *Server) listDatabaseBackups(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	lq, q, err := databaseQuery(r, true, "instance_id", "datastore", "all_projects", "project_id")
	if err != nil {
		return err
	}
	if lq.AllProjects, err = queryBool(q, "all_projects"); err != nil {
		return err
	}
	if c, err = s.projectParam(r.Context(), c, q); err != nil {
		return err
	}
	return s.writeDatabaseBackups(w, r, c, lq, cairn.DatabaseBackupFilter{InstanceID: q.Get("instance_id"), Datastore: q.Get("datastore")})
}

func (s *Server) writeDatabaseBackups(w http.ResponseWriter, r *http.Request, c service.Caller, lq service.ListQuery, f cairn.DatabaseBackupFilter) error {
	list, err := s.db.ListDatabaseBackups(r.Context(), c, lq, f)
	if err != nil {
		return err
	}
	items := make([]wire.DatabaseBackup, len(list))
	last := ""
	for i, b := range list {
		items[i], last = databaseBackupJSON(b), b.ID
	}
	pagedJSON(w, r, "backups", items, len(list), lq, last)
	return nil
}

func (s *Server) showDatabaseBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	b, err := s.db.DatabaseBackup(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	m, err := s.db.BackupMarks(r.Context(), c, b.ID)
	if err != nil {
		return err
	}
	out := databaseBackupJSON(b)
	out.Protected, out.Verification, out.Drill = &m.Protected, m.Verification, m.Drill
	out.VerifiedAt, out.VerifyState = verified(m.Verification)
	writeJSON(w, http.StatusOK, map[string]any{"backup": out})
	return nil
}

func (s *Server) deleteDatabaseBackup(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.db.DeleteDatabaseBackup(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Backup strategies.

func (s *Server) listBackupStrategies(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	_, q, err := databaseQuery(r, false, "instance_id", "project_id")
	if err != nil {
		return err
	}
	if c, err = s.projectParam(r.Context(), c, q); err != nil {
		return err
	}
	list, err := s.db.BackupStrategies(r.Context(), c, q.Get("instance_id"))
	if err != nil {
		return err
	}
	items := make([]wire.BackupStrategy, len(list))
	for i, st := range list {
		items[i] = backupStrategyJSON(st)
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup_strategies": items})
	return nil
}

func (s *Server) createBackupStrategy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.BackupStrategyCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.BackupStrategy
	st, err := strategyOf("backup_strategy", in.Strategy)
	if err != nil {
		return err
	}
	container, err := containerOf("backup_strategy", in.Container, in.SwiftContainer)
	if err != nil {
		return err
	}
	if st == "" && container == "" {
		return fmt.Errorf("backup_strategy: give swift_container (or container), strategy or both: %w", cairn.ErrInvalid)
	}
	out, err := s.db.SetBackupStrategy(r.Context(), c, cairn.BackupStrategy{ProjectID: c.ProjectID,
		InstanceID: in.InstanceID, Strategy: st, Container: container})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backup_strategy": backupStrategyJSON(out)})
	return nil
}

func (s *Server) deleteBackupStrategy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	_, q, err := databaseQuery(r, false, "instance_id", "project_id")
	if err != nil {
		return err
	}
	if c, err = s.projectParam(r.Context(), c, q); err != nil {
		return err
	}
	if err := s.db.DeleteBackupStrategy(r.Context(), c, q.Get("instance_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
