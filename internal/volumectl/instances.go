package volumectl

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
)

// Instances is what the data plane does with database instances: a
// dbhost.Host, served on the control socket (WithInstances) and reached
// through Client. Methods are safe for concurrent use; calls for one
// instance are serialised by the host.
type Instances interface {
	// Datastores lists the database servers installed on the host.
	Datastores(ctx context.Context) ([]dbagent.Datastore, error)
	// Provision makes an instance and starts its server, or resumes
	// making it (see dbhost.Host.Provision).
	Provision(ctx context.Context, spec dbhost.Spec) (dbhost.State, error)
	// HostInstances lists the instances the host runs.
	HostInstances(ctx context.Context) ([]dbhost.State, error)
	// HostInstance returns one; cairn.ErrNotFound when the host has none
	// of that ID.
	HostInstance(ctx context.Context, id string) (dbhost.State, error)
	// RemoveInstance stops, unmounts and detaches an instance; an unknown
	// ID is no error.
	RemoveInstance(ctx context.Context, id string) error
	// SnapshotInstance takes a quiesced snapshot of an instance's volume.
	SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error)
}

// HostInstances adapts a dbhost.Host to Instances.
type HostInstances struct{ H *dbhost.Host }

var _ Instances = HostInstances{}

func (h HostInstances) Datastores(context.Context) ([]dbagent.Datastore, error) {
	return h.H.Datastores(), nil
}

func (h HostInstances) Provision(ctx context.Context, spec dbhost.Spec) (dbhost.State, error) {
	return h.H.Provision(ctx, spec)
}

func (h HostInstances) HostInstances(context.Context) ([]dbhost.State, error) {
	return h.H.Instances(), nil
}

func (h HostInstances) HostInstance(_ context.Context, id string) (dbhost.State, error) {
	return h.H.Instance(id)
}

func (h HostInstances) RemoveInstance(ctx context.Context, id string) error {
	return h.H.Remove(ctx, id)
}

func (h HostInstances) SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error) {
	return h.H.Snapshot(ctx, id, o)
}

// WithInstances serves in's endpoints beside h's: GET /datastores,
// GET /instances, GET, PUT and DELETE /instances/{id} and POST
// /instances/{id}/snapshot.
func WithInstances(h http.Handler, in Instances) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /datastores", func(w http.ResponseWriter, r *http.Request) {
		list, err := in.Datastores(r.Context())
		answer(w, list, err)
	})
	mux.HandleFunc("GET /instances", func(w http.ResponseWriter, r *http.Request) {
		list, err := in.HostInstances(r.Context())
		answer(w, list, err)
	})
	mux.HandleFunc("GET /instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := in.HostInstance(r.Context(), r.PathValue("id"))
		answer(w, st, err)
	})
	mux.HandleFunc("PUT /instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		var spec dbhost.Spec
		// A spec carries the overlay of a snapshot backup (PostgreSQL's
		// WAL of the backup), larger than other requests.
		r.Body = http.MaxBytesReader(w, r.Body, maxSpecBytes)
		if err := decodeLimit(r, &spec, maxSpecBytes); err != nil {
			writeErr(w, err)
			return
		}
		if spec.ID != r.PathValue("id") {
			writeErr(w, fmt.Errorf("instance spec names %q, the path %q: %w", spec.ID, r.PathValue("id"), cairn.ErrInvalid))
			return
		}
		st, err := in.Provision(r.Context(), spec)
		answer(w, st, err)
	})
	mux.HandleFunc("DELETE /instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := in.RemoveInstance(r.Context(), r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /instances/{id}/snapshot", func(w http.ResponseWriter, r *http.Request) {
		var o dbhost.SnapshotOptions
		if err := decode(r, &o); err != nil {
			writeErr(w, err)
			return
		}
		b, err := in.SnapshotInstance(r.Context(), r.PathValue("id"), o)
		answer(w, b, err)
	})
	mux.Handle("/", h)
	return mux
}

// maxSpecBytes bounds a provisioning request.
const maxSpecBytes = 1 << 30

func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

var _ Instances = (*Client)(nil)

func (c *Client) Datastores(ctx context.Context) (list []dbagent.Datastore, err error) {
	err = c.do(ctx, "GET", "/datastores", nil, &list)
	return list, err
}

func (c *Client) Provision(ctx context.Context, spec dbhost.Spec) (st dbhost.State, err error) {
	err = c.do(ctx, "PUT", "/instances/"+url.PathEscape(spec.ID), spec, &st)
	return st, err
}

func (c *Client) HostInstances(ctx context.Context) (list []dbhost.State, err error) {
	err = c.do(ctx, "GET", "/instances", nil, &list)
	return list, err
}

func (c *Client) HostInstance(ctx context.Context, id string) (st dbhost.State, err error) {
	err = c.do(ctx, "GET", "/instances/"+url.PathEscape(id), nil, &st)
	return st, err
}

func (c *Client) RemoveInstance(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/instances/"+url.PathEscape(id), nil, nil)
}

func (c *Client) SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (b dbhost.SnapshotBackup, err error) {
	err = c.do(ctx, "POST", "/instances/"+url.PathEscape(id)+"/snapshot", o, &b)
	return b, err
}
