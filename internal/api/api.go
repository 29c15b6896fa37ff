// Package api is the service's HTTP API: the block storage API's shapes
// (volumes, snapshots, backups) under /v3/{project_id}/, and the database
// API in OpenStack Trove's shapes (instances, their backups, datastores)
// under /v1.0/{project_id}/ (trove.go), JSON in and out (the types of
// package wire), every request authenticated by a project's token. Errors
// get their status codes from the root package's one table
// (cairn.HTTPStatus) and here only the block storage API's names
// (errorName), which Trove's API shares.
//
// Every request gets an ID ("req-" and a UUID) in the
// X-Openstack-Request-Id header and on every log line about it. A 5xx is
// answered with a generic message naming the request ID, and its cause
// goes to the log: internal error text names paths and store locations,
// which are no tenant's business. A 4xx keeps its specific message: it is
// about the caller's own input.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// OpenAPI is the API's description, served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Metrics records requests.
type Metrics interface {
	Request(route string, code int, d time.Duration)
	Handler() http.Handler
}

// Server serves the API.
type Server struct {
	svc *service.Service
	db  Databases // nil: the database API answers 404
	log *slog.Logger
	met Metrics
	mux *http.ServeMux
}

// Option configures a Server.
type Option func(*Server)

// WithDatabases serves the database API (Trove's shapes, under
// /v1.0/{project_id}/) over db. Without it, its routes answer 404.
func WithDatabases(db Databases) Option {
	return func(s *Server) { s.db = db }
}

// New returns the API of svc.
func New(svc *service.Service, met Metrics, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{svc: svc, log: log, met: met, mux: http.NewServeMux()}
	for _, o := range opts {
		o(s)
	}
	s.routes()
	return s
}

// request is what the server knows of a request while it serves it. It
// belongs to the request's goroutine.
type request struct {
	id  string
	log *slog.Logger // with the request's ID
	// causeLogged is set once the cause of a 5xx answer was logged.
	causeLogged bool
}

type requestKey struct{}

// requestOf returns the request state ServeHTTP put into r's context.
func requestOf(r *http.Request) *request {
	if rq, ok := r.Context().Value(requestKey{}).(*request); ok {
		return rq
	}
	// Only reached by a handler called without ServeHTTP (not done).
	return &request{id: "-", log: slog.New(slog.DiscardHandler)}
}

// globalRequestID is the form of a request ID a caller may send in
// X-Openstack-Request-Id (the OpenStack services' global request ID):
// logged with the request when well-formed, ignored otherwise.
var globalRequestID = regexp.MustCompile(`^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rq := &request{id: "req-" + cairn.NewUUID()}
	rq.log = s.log.With("request_id", rq.id)
	if g := r.Header.Get(wire.RequestIDHeader); globalRequestID.MatchString(g) {
		rq.log = rq.log.With("global_request_id", g)
	}
	w.Header().Set(wire.RequestIDHeader, rq.id)
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	r = r.WithContext(service.WithRequestID(context.WithValue(r.Context(), requestKey{}, rq), rq.id))
	s.mux.ServeHTTP(rec, r)
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		pattern = "unmatched"
	}
	if s.met != nil {
		s.met.Request(pattern, rec.code, time.Since(start))
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "code", rec.code, "duration", time.Since(start)}
	if rec.code >= 500 && !rq.causeLogged {
		rq.log.Error("request failed", attrs...)
	} else {
		rq.log.Debug("request", attrs...)
	}
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// handler is an authenticated handler of a project's resources.
type handler func(w http.ResponseWriter, r *http.Request, c service.Caller) error

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if s.met != nil {
		m.Handle("GET /metrics", s.met.Handler())
	}
	m.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	})
	m.HandleFunc("GET /{$}", s.versions)
	m.HandleFunc("GET /v3/{$}", s.version)

	m.HandleFunc("GET /v3/auth/token", s.auth(s.whoami))

	p := func(method, path string, h handler) {
		m.HandleFunc(method+" /v3/{project_id}"+path, s.auth(withMicroversion(h)))
	}
	p("GET", "/limits", s.limits)
	p("GET", "/os-availability-zone", s.listAvailabilityZones)
	p("GET", "/os-quota-sets/{target}", s.showQuotaSet)
	p("PUT", "/os-quota-sets/{target}", s.updateQuotaSet)
	p("DELETE", "/os-quota-sets/{target}", s.deleteQuotaSet)
	p("GET", "/os-quota-sets/{target}/defaults", s.showDefaultQuotaSet)
	p("GET", "/os-quota-class-sets/{class}", s.showQuotaClass)
	p("PUT", "/os-quota-class-sets/{class}", s.updateQuotaClass)
	p("GET", "/extensions", s.listExtensions)
	p("GET", "/tasks/{id}", s.showTask)
	p("GET", "/tasks", s.listTasks)

	// The service's own processes and capacity, for admins (hosts.go).
	p("GET", "/os-services", s.listServices)
	p("PUT", "/os-services/{action}", s.serviceAction)
	p("GET", "/os-hosts", s.listHosts)
	p("GET", "/os-hosts/{host}", s.showHost)
	p("GET", "/scheduler-stats/get_pools", s.listPools)
	p("GET", "/capabilities/{host}", s.showCapabilities)

	p("POST", "/volumes", s.createVolume)
	p("GET", "/volumes", s.listVolumes(false))
	p("GET", "/volumes/detail", s.listVolumes(true))
	p("GET", "/volumes/{id}", s.showVolume)
	p("PUT", "/volumes/{id}", s.updateVolume)
	p("DELETE", "/volumes/{id}", s.deleteVolume)
	p("POST", "/volumes/{id}/action", s.volumeAction)
	vm := s.volumeMetadata()
	p("GET", "/volumes/{id}/metadata", showMetadata(vm))
	p("POST", "/volumes/{id}/metadata", setMetadata(vm, false))
	p("PUT", "/volumes/{id}/metadata", setMetadata(vm, true))
	p("GET", "/volumes/{id}/metadata/{key}", showMetadataItem(vm))
	p("PUT", "/volumes/{id}/metadata/{key}", setMetadataItem(vm))
	p("DELETE", "/volumes/{id}/metadata/{key}", deleteMetadataItem(vm))

	p("POST", "/snapshots", s.createSnapshot)
	p("GET", "/snapshots", s.listSnapshots(false))
	p("GET", "/snapshots/detail", s.listSnapshots(true))
	p("GET", "/snapshots/{id}", s.showSnapshot)
	p("PUT", "/snapshots/{id}", s.updateSnapshot)
	p("DELETE", "/snapshots/{id}", s.deleteSnapshot)
	p("POST", "/snapshots/{id}/action", s.snapshotAction)
	sm := s.snapshotMetadata()
	p("GET", "/snapshots/{id}/metadata", showMetadata(sm))
	p("POST", "/snapshots/{id}/metadata", setMetadata(sm, false))
	p("PUT", "/snapshots/{id}/metadata", setMetadata(sm, true))
	p("GET", "/snapshots/{id}/metadata/{key}", showMetadataItem(sm))
	p("PUT", "/snapshots/{id}/metadata/{key}", setMetadataItem(sm))
	p("DELETE", "/snapshots/{id}/metadata/{key}", deleteMetadataItem(sm))

	p("POST", "/backups", s.createBackup)
	p("GET", "/backups", s.listBackups(false))
	p("GET", "/backups/detail", s.listBackups(true))
	p("GET", "/backups/{id}", s.showBackup)
	p("PUT", "/backups/{id}", since(backupUpdateMinor, "backup update", s.updateBackup))
	p("DELETE", "/backups/{id}", s.deleteBackup)
	p("POST", "/backups/{id}/restore", s.restoreBackup)
	p("GET", "/backups/{id}/export_record", s.exportRecord)
	p("POST", "/backups/import_record", s.importRecord)
	p("POST", "/backups/{id}/action", s.backupAction)

	// Volume types (volumetypes.go).
	p("POST", "/os-volume-transfer", s.createTransfer)
	p("GET", "/os-volume-transfer", s.listTransfers(false))
	p("GET", "/os-volume-transfer/detail", s.listTransfers(true))
	p("GET", "/os-volume-transfer/{id}", s.showTransfer)
	p("DELETE", "/os-volume-transfer/{id}", s.deleteTransfer)
	p("POST", "/os-volume-transfer/{id}/accept", s.acceptTransfer)

	// cairn's backup policies (policies.go).
	p("POST", "/backup-policies", s.createPolicy)
	p("GET", "/backup-policies", s.listPolicies)
	p("GET", "/backup-policies/{id}", s.showPolicy)
	p("PUT", "/backup-policies/{id}", s.updatePolicy)
	p("DELETE", "/backup-policies/{id}", s.deletePolicy)
	p("GET", "/backup-policies/{id}/slots", s.listPolicySlots)
	p("POST", "/backup-policies/{id}/retention", s.runRetention)

	p("GET", "/messages", since(messagesMinor, "messages", s.listMessages))
	p("GET", "/messages/{id}", since(messagesMinor, "messages", s.showMessage))
	p("DELETE", "/messages/{id}", since(messagesMinor, "messages", s.deleteMessage))
	p("GET", "/clusters", since(clustersMinor, "clusters", s.listClusters))
	p("GET", "/clusters/detail", since(clustersMinor, "clusters", s.listClusters))
	mv := since(manageableMinor, "manageable volumes", listManageable("manageable-volumes"))
	p("GET", "/manageable_volumes", mv)
	p("GET", "/manageable_volumes/detail", mv)
	ms := since(manageableMinor, "manageable snapshots", listManageable("manageable-snapshots"))
	p("GET", "/manageable_snapshots", ms)
	p("GET", "/manageable_snapshots/detail", ms)

	p("GET", "/types", s.listVolumeTypes)
	p("POST", "/types", s.createVolumeType)
	p("GET", "/types/default", s.showDefaultVolumeType)
	p("GET", "/types/{id}", s.showVolumeType)
	p("PUT", "/types/{id}", s.updateVolumeType)
	p("DELETE", "/types/{id}", s.deleteVolumeType)
	p("GET", "/types/{id}/extra_specs", s.listExtraSpecs)
	p("POST", "/types/{id}/extra_specs", s.setExtraSpecs)
	p("GET", "/types/{id}/extra_specs/{key}", s.showExtraSpec)
	p("PUT", "/types/{id}/extra_specs/{key}", s.setExtraSpec)
	p("DELETE", "/types/{id}/extra_specs/{key}", s.deleteExtraSpec)
	p("GET", "/types/{id}/os-volume-type-access", s.listVolumeTypeAccess)
	p("POST", "/types/{id}/action", s.volumeTypeAction)
	p("GET", "/types/{id}/encryption", s.showEncryptionType)
	p("POST", "/types/{id}/encryption", s.createEncryptionType)
	p("GET", "/types/{id}/encryption/{key}", s.showEncryptionSpec)

	// The database API, in OpenStack Trove's shapes (trove.go).
	m.HandleFunc("GET /v1.0/{$}", s.databaseVersions)
	d := func(method, path string, h handler) {
		m.HandleFunc(method+" /v1.0/{project_id}"+path, s.auth(s.withDatabases(h)))
	}
	d("GET", "/flavors", s.listFlavors)
	d("GET", "/flavors/{id}", s.showFlavor)
	d("GET", "/datastores", s.listDatastores)
	d("GET", "/datastores/{id}", s.showDatastore)
	d("GET", "/datastores/{id}/versions", s.listDatastoreVersions)
	d("GET", "/datastores/{id}/versions/{version}", s.showDatastoreVersion)

	d("POST", "/instances", s.createInstance)
	d("GET", "/instances", s.listInstances)
	d("GET", "/instances/detail", s.listInstances)
	d("GET", "/instances/{id}", s.showInstance)
	d("DELETE", "/instances/{id}", s.deleteInstance)
	d("POST", "/instances/{id}/recover", s.recoverInstance)
	d("POST", "/instances/{id}/action", s.instanceAction)
	d("GET", "/instances/{id}/backups", s.listInstanceBackups)
	d("GET", "/instances/{id}/metadata", s.listInstanceMetadata)
	d("GET", "/instances/{id}/metadata/{key}", s.showInstanceMetadata)
	d("POST", "/instances/{id}/metadata/{key}", s.createInstanceMetadata)
	d("PUT", "/instances/{id}/metadata/{key}", s.updateInstanceMetadata)
	d("PATCH", "/instances/{id}/metadata/{key}", s.editInstanceMetadata)
	d("DELETE", "/instances/{id}/metadata/{key}", s.deleteInstanceMetadata)

	d("POST", "/backups", s.createDatabaseBackup)
	d("GET", "/backups", s.listDatabaseBackups)
	d("GET", "/backups/{id}", s.showDatabaseBackup)
	d("DELETE", "/backups/{id}", s.deleteDatabaseBackup)

	d("GET", "/backup_strategies", s.listBackupStrategies)
	d("POST", "/backup_strategies", s.createBackupStrategy)
	d("DELETE", "/backup_strategies", s.deleteBackupStrategy)

	m.HandleFunc("/", s.unmatched)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	writeJSON(w, http.StatusOK, map[string]any{"token": wire.TokenInfo{ProjectID: c.ProjectID, Admin: c.Admin}})
	return nil
}

// unmatched answers a request no route takes: 405 with Allow when the
// path exists under other methods, 404 otherwise, and 401 before either
// without a valid token, as keystonemiddleware does: what paths exist is
// nobody's business without one.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	if _, err := s.caller(r); err != nil {
		writeError(w, r, err)
		return
	}
	var allow []string
	for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := s.mux.Handler(r2); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeFault(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: allowed methods: %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	writeError(w, r, fmt.Errorf("%s %s: no such resource: %w", r.Method, r.URL.Path, cairn.ErrNotFound))
}

// caller authenticates the request's token.
func (s *Server) caller(r *http.Request) (service.Caller, error) {
	tok := r.Header.Get("X-Auth-Token")
	if tok == "" {
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
			tok = strings.TrimPrefix(a, "Bearer ")
		}
	}
	if tok == "" {
		return service.Caller{}, fmt.Errorf("no token: send X-Auth-Token or Authorization: Bearer: %w", cairn.ErrUnauthenticated)
	}
	return s.svc.Authenticate(r.Context(), tok)
}

// auth authenticates the request's token and checks that it may act on
// the URL's project: its own, or any for an admin.
func (s *Server) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.caller(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if c.ReadOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, r, fmt.Errorf("%s %s: the reader role may only read: %w", r.Method, r.URL.Path, cairn.ErrForbidden))
			return
		}
		project := r.PathValue("project_id")
		if project == "" {
			// Not a project's URL (GET /v3/auth/token).
			if err := h(w, r, c); err != nil {
				writeError(w, r, err)
			}
			return
		}
		c, err = s.actIn(r.Context(), c, project)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := h(w, r, c); err != nil {
			writeError(w, r, err)
		}
	}
}

// actIn returns the caller c acting in project: its own, or any existing
// one for an admin, who keeps admin rights there. Another project looks
// exactly like a missing one (ErrNotFound).
func (s *Server) actIn(ctx context.Context, c service.Caller, project string) (service.Caller, error) {
	if project == c.ProjectID {
		return c, nil
	}
	if !c.Admin {
		return c, fmt.Errorf("project %s: %w", project, cairn.ErrNotFound)
	}
	ok, err := s.svc.ProjectExists(ctx, project)
	if err != nil {
		return c, err
	}
	if !ok {
		return c, fmt.Errorf("project %s: %w", project, cairn.ErrNotFound)
	}
	c.ProjectID = project
	return c, nil
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// decode reads exactly one JSON object into v, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("empty request body; want a JSON object: %w", cairn.ErrInvalid)
		}
		return fmt.Errorf("request body: %s: %w", strings.TrimPrefix(err.Error(), "json: "), cairn.ErrInvalid)
	}
	if dec.More() {
		return fmt.Errorf("request body: data after the JSON object: %w", cairn.ErrInvalid)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("request body: data after the JSON object: %w", cairn.ErrInvalid)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// errorName is the block storage API's name of an error answer's status,
// the member its body is named after.
func errorName(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "badRequest"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "itemNotFound"
	case http.StatusMethodNotAllowed:
		return "badMethod"
	case http.StatusConflict:
		return "conflictingRequest"
	case http.StatusRequestEntityTooLarge:
		return "overLimit"
	case http.StatusServiceUnavailable:
		return "serviceUnavailable"
	}
	return "computeFault"
}

// writeError answers with err's status (cairn.HTTPStatus) and the block
// storage API's error body. A 4xx carries err's message. A 5xx carries a
// generic one naming the request's ID, and err goes to the log, at error
// level with that ID.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := cairn.HTTPStatus(err)
	msg := err.Error()
	if code >= 500 {
		rq := requestOf(r)
		rq.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "error", err)
		rq.causeLogged = true
		what := "internal error"
		if code == http.StatusServiceUnavailable {
			what = "service temporarily unavailable; try again later"
		}
		msg = fmt.Sprintf("%s; request %s; the service log has the cause", what, rq.id)
	}
	writeFault(w, code, msg)
}

// writeFault writes the block storage API's error body:
// {"<name>": {"code": N, "message": "..."}}.
func writeFault(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]wire.Fault{errorName(code): {Code: code, Message: msg}})
}
