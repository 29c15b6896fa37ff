package volumectl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

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
	// making it (see dbhost.Host.Provision); data is the stream of a
	// physical or logical restore, nil otherwise.
	Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error)
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
	// BackupInstance writes a physical or logical backup of an instance
	// to w and returns its record.
	BackupInstance(ctx context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error)
	// CheckInstance runs the datastore's consistency check and req's
	// query on an instance's server (see dbhost.Host.Check).
	CheckInstance(ctx context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error)

	// WALIdentity, WALSlot and TimelineHistory read an instance's WAL
	// state; StreamWAL streams its WAL, ConfirmWAL reports what the
	// archive stored (see dbhost.Host). cairn.ErrUnsupported for a
	// datastore without WAL.
	WALIdentity(ctx context.Context, id string) (dbagent.WALIdentity, error)
	WALSlot(ctx context.Context, id string) (dbagent.WALSlot, error)
	TimelineHistory(ctx context.Context, id string, timeline uint32) ([]byte, error)
	StreamWAL(ctx context.Context, id string, timeline uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error)
	ConfirmWAL(id string, lsn dbagent.LSN)

	// BinlogState reads where an instance's server stands in its binary
	// log; StreamBinlog streams its binary log files from the start of
	// file on, until ctx ends, fn fails or the stream breaks (see
	// dbhost.Host). cairn.ErrUnsupported for a datastore without a
	// binary log; cairn.ErrGone when the server no longer has file.
	BinlogState(ctx context.Context, id string) (dbagent.BinlogState, error)
	StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error
}

// HostInstances adapts a dbhost.Host to Instances.
type HostInstances struct{ H *dbhost.Host }

var _ Instances = HostInstances{}

func (h HostInstances) Datastores(context.Context) ([]dbagent.Datastore, error) {
	return h.H.Datastores(), nil
}

func (h HostInstances) Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error) {
	return h.H.Provision(ctx, spec, data)
}

func (h HostInstances) BackupInstance(ctx context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error) {
	return h.H.BackupStream(ctx, id, o, w)
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

func (h HostInstances) CheckInstance(ctx context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	return h.H.Check(ctx, id, req)
}

// WithInstances serves in's endpoints beside h's: GET /datastores,
// GET /instances, GET, PUT and DELETE /instances/{id}, POST
// /instances/{id}/snapshot, /backup and /check, and the WAL's and the
// binary log's.
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
		var data io.Reader
		if h := r.Header.Get(specBytesHeader); h != "" {
			// A restore's stream is the body, after the spec's n bytes.
			n, err := strconv.ParseInt(h, 10, 64)
			if err != nil || n <= 0 || n > maxSpecBytes {
				writeErr(w, fmt.Errorf("%s header %q: want 1 to %d: %w", specBytesHeader, h, int64(maxSpecBytes), cairn.ErrInvalid))
				return
			}
			js := make([]byte, n)
			if _, err := io.ReadFull(r.Body, js); err != nil {
				writeErr(w, fmt.Errorf("instance spec: %v: %w", err, cairn.ErrInvalid))
				return
			}
			if err := json.Unmarshal(js, &spec); err != nil {
				writeErr(w, fmt.Errorf("instance spec: %v: %w", err, cairn.ErrInvalid))
				return
			}
			data = r.Body
		} else if h := r.Header.Get(specHeader); h != "" {
			// A restore's stream is the body; the spec rides in a header.
			js, err := base64.StdEncoding.DecodeString(h)
			if err == nil {
				err = json.Unmarshal(js, &spec)
			}
			if err != nil {
				writeErr(w, fmt.Errorf("%s header: %v: %w", specHeader, err, cairn.ErrInvalid))
				return
			}
			data = r.Body
		} else {
			// A spec carries the overlay of a snapshot backup
			// (PostgreSQL's WAL of the backup), larger than other
			// requests.
			r.Body = http.MaxBytesReader(w, r.Body, maxSpecBytes)
			if err := decodeLimit(r, &spec, maxSpecBytes); err != nil {
				writeErr(w, err)
				return
			}
		}
		if spec.ID != r.PathValue("id") {
			writeErr(w, fmt.Errorf("instance spec names %q, the path %q: %w", spec.ID, r.PathValue("id"), cairn.ErrInvalid))
			return
		}
		st, err := in.Provision(r.Context(), spec, data)
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
	mux.HandleFunc("POST /instances/{id}/check", func(w http.ResponseWriter, r *http.Request) {
		var req dbagent.CheckRequest
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rep, err := in.CheckInstance(r.Context(), r.PathValue("id"), req)
		answer(w, rep, err)
	})
	mux.HandleFunc("POST /instances/{id}/backup", func(w http.ResponseWriter, r *http.Request) {
		var o dbhost.StreamOptions
		if err := decode(r, &o); err != nil {
			writeErr(w, err)
			return
		}
		// The stream is the answer's body; how it ended comes after it,
		// in a trailer: the record, or the error.
		w.Header().Set("Trailer", recordTrailer+", "+errorTrailer)
		w.Header().Set("Content-Type", "application/octet-stream")
		rec, err := in.BackupInstance(r.Context(), r.PathValue("id"), o, w)
		var js []byte
		if err != nil {
			js, _ = json.Marshal(errorBodyOf(err))
			w.Header().Set(errorTrailer, base64.StdEncoding.EncodeToString(js))
			return
		}
		js, _ = json.Marshal(rec)
		w.Header().Set(recordTrailer, base64.StdEncoding.EncodeToString(js))
	})
	walHandlers(mux, in)
	binlogHandlers(mux, in)
	mux.Handle("/", h)
	return mux
}

// Headers of the instance endpoints: a restore's spec beside its stream,
// and the trailers that end a backup's.
const (
	specHeader      = "Cairn-Spec"
	specBytesHeader = "Cairn-Spec-Bytes"
	recordTrailer   = "Cairn-Record"
	errorTrailer    = "Cairn-Error"
)

// maxSpecBytes bounds a provisioning request's spec; maxSpecHeader is
// the largest spec sent in a header (base64 makes it a third larger,
// and a server reads at most 1 MiB of headers).
const (
	maxSpecBytes  = 1 << 30
	maxSpecHeader = 256 << 10
)

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

func (c *Client) Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (st dbhost.State, err error) {
	// Provisioning waits for a server to start and may read a whole
	// backup: no overall timeout but ctx's.
	path := "/instances/" + url.PathEscape(spec.ID)
	js, err := json.Marshal(spec)
	if err != nil {
		return st, err
	}
	// A restore's stream is the body. Its spec rides in a header, which a
	// data plane of an earlier release reads too; one too large for a
	// header (a snapshot's overlay holds the WAL written while it was
	// taken) goes first in the body.
	framed := data != nil && len(js) > maxSpecHeader
	body := io.Reader(bytes.NewReader(js))
	switch {
	case framed:
		body = io.MultiReader(bytes.NewReader(js), data)
	case data != nil:
		body = data
	}
	req, err := http.NewRequestWithContext(ctx, "PUT", "http://cairn"+path, body)
	if err != nil {
		return st, err
	}
	switch {
	case framed:
		req.Header.Set(specBytesHeader, strconv.Itoa(len(js)))
		req.Header.Set("Content-Type", "application/octet-stream")
	case data != nil:
		req.Header.Set(specHeader, base64.StdEncoding.EncodeToString(js))
		req.Header.Set("Content-Type", "application/octet-stream")
	default:
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.streams.Do(req)
	if err != nil {
		return st, transportError(ctx, "PUT", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return st, errorOf(resp)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// BackupInstance implements Instances: the stream is copied to w as it
// comes; a backup that failed on the way fails the call, whatever was
// copied.
func (c *Client) BackupInstance(ctx context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error) {
	var rec dbagent.Record
	js, err := json.Marshal(o)
	if err != nil {
		return rec, err
	}
	resp, err := c.sendWith(c.streams, ctx, "POST", "/instances/"+url.PathEscape(id)+"/backup", bytes.NewReader(js), "application/json")
	if err != nil {
		return rec, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return rec, fmt.Errorf("backup stream: %w", err)
	}
	if e := resp.Trailer.Get(errorTrailer); e != "" {
		var body errorBody
		if raw, err := base64.StdEncoding.DecodeString(e); err == nil && json.Unmarshal(raw, &body) == nil {
			if s := cairn.SentinelNamed(body.Kind); s != nil {
				return rec, fmt.Errorf("%s: %w", body.Error, s)
			}
			return rec, errors.New(body.Error)
		}
		return rec, fmt.Errorf("backup stream: unreadable error trailer: %w", cairn.ErrCorrupt)
	}
	raw, err := base64.StdEncoding.DecodeString(resp.Trailer.Get(recordTrailer))
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil || resp.Trailer.Get(recordTrailer) == "" {
		return rec, fmt.Errorf("backup stream ended without its record (the data plane stopped?): %w", cairn.ErrUnavailable)
	}
	return rec, nil
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

func (c *Client) CheckInstance(ctx context.Context, id string, req dbagent.CheckRequest) (rep dbagent.CheckReport, err error) {
	err = c.do(ctx, "POST", "/instances/"+url.PathEscape(id)+"/check", req, &rep)
	return rep, err
}
