package volumectl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
)

// errorBody is an error answer of the control socket: the message, and
// the message of the sentinel it wraps (cairn.Sentinel), by which the
// client wraps the same sentinel again. The status code comes from the
// one table, cairn.HTTPStatus.
type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}

func errorBodyOf(err error) errorBody {
	b := errorBody{Error: err.Error()}
	if s := cairn.Sentinel(err); s != nil {
		b.Kind = s.Error()
	}
	return b
}

// errorOf turns an error answer back into an error wrapping the sentinel
// its kind names. A JSON body without a kind is an error that wraps none
// (an internal one). A body that is not an errorBody at all (something
// other than the handler answered) gets the sentinel its status stands
// for, if any.
func errorOf(resp *http.Response) error {
	var body errorBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		msg := "control socket: " + resp.Status
		if s := cairn.SentinelOfStatus(resp.StatusCode); s != nil {
			return fmt.Errorf("%s: %w", msg, s)
		}
		return errors.New(msg)
	}
	if s := cairn.SentinelNamed(body.Kind); s != nil {
		return remoteError{msg: body.Error, sentinel: s}
	}
	return errors.New(body.Error)
}

// remoteError is an error the data plane answered: its message, which
// names its sentinel already, and the sentinel again for errors.Is.
type remoteError struct {
	msg      string
	sentinel error
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.sentinel }

// Handler serves Ops over HTTP, for the control socket.
func Handler(ops Ops) http.Handler {
	mux := http.NewServeMux()
	h := &handler{ops: ops, readers: newHandles[Reader]("reader"), devices: newHandles[Device]("device")}
	mux.HandleFunc("GET /volumes", h.volumes)
	mux.HandleFunc("POST /volumes", h.createVolume)
	mux.HandleFunc("GET /volumes/{id}", h.volume)
	mux.HandleFunc("DELETE /volumes/{id}", h.deleteVolume)
	mux.HandleFunc("POST /volumes/{id}/extend", h.extend)
	mux.HandleFunc("POST /volumes/{id}/revert", h.revert)
	mux.HandleFunc("POST /volumes/{id}/snapshots", h.createSnapshot)
	mux.HandleFunc("GET /snapshots", h.snapshots)
	mux.HandleFunc("GET /snapshots/{id}", h.snapshot)
	mux.HandleFunc("DELETE /snapshots/{id}", h.deleteSnapshot)
	mux.HandleFunc("POST /snapshots/{id}/clone", h.clone)
	mux.HandleFunc("POST /changed-extents", h.changed)
	mux.HandleFunc("POST /readers", h.openReader)
	mux.HandleFunc("GET /readers/{id}", h.readAt)
	mux.HandleFunc("DELETE /readers/{id}", h.closeReader)
	mux.HandleFunc("POST /devices", h.openDevice)
	mux.HandleFunc("GET /devices/{id}", h.deviceRead)
	mux.HandleFunc("PUT /devices/{id}", h.deviceWrite)
	mux.HandleFunc("POST /devices/{id}/zero", h.deviceZero)
	mux.HandleFunc("POST /devices/{id}/trim", h.deviceTrim)
	mux.HandleFunc("POST /devices/{id}/flush", h.deviceFlush)
	mux.HandleFunc("GET /devices/{id}/extents", h.deviceExtents)
	mux.HandleFunc("DELETE /devices/{id}", h.closeDevice)
	mux.HandleFunc("POST /release-orphans", h.releaseOrphans)
	mux.HandleFunc("GET /exports", h.exported)
	mux.HandleFunc("PUT /exports/{name}", h.export)
	mux.HandleFunc("DELETE /exports/{name}", h.unexport)
	return mux
}

type handler struct {
	ops     Ops
	readers *handles[Reader]
	devices *handles[Device]
	// bufs holds the buffers reads are served from and writes are read
	// into (*[]byte): a backup reads a snapshot, and a restore writes a
	// volume, in 4 MiB requests, which would otherwise each allocate, and
	// clear, a buffer of their own.
	bufs sync.Pool
}

// buffer returns a buffer of n bytes from the pool, and the function
// that gives it back once the request no longer uses it.
func (h *handler) buffer(n int64) ([]byte, func()) {
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil || int64(cap(*bp)) < n {
		b := make([]byte, n)
		bp = &b
	}
	return (*bp)[:n], func() { h.bufs.Put(bp) }
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	writeJSON(w, cairn.HTTPStatus(err), errorBodyOf(err))
}

func pathID(r *http.Request) (cairn.ID, error) { return cairn.ParseID(r.PathValue("id")) }

func decode(r *http.Request, v any) error { return decodeLimit(r, v, 1<<20) }

// decodeLimit decodes a JSON body of at most limit bytes into v.
func decodeLimit(r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %v: %w", err, cairn.ErrInvalid)
	}
	return nil
}

func (h *handler) volumes(w http.ResponseWriter, r *http.Request) {
	v, err := h.ops.Volumes(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

type createVolumeReq struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

func (h *handler) createVolume(w http.ResponseWriter, r *http.Request) {
	var req createVolumeReq
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	v, err := h.ops.CreateVolume(r.Context(), req.Name, req.Size)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (h *handler) volume(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		var v volume.VolumeInfo
		if v, err = h.ops.Volume(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	writeErr(w, err)
}

func (h *handler) deleteVolume(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		err = h.ops.DeleteVolume(r.Context(), id)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) extend(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Size int64 `json:"size"`
	}
	id, err := pathID(r)
	if err == nil {
		err = decode(r, &req)
	}
	if err == nil {
		err = h.ops.ExtendVolume(r.Context(), id, req.Size)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) revert(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Snapshot cairn.ID `json:"snapshot"`
	}
	id, err := pathID(r)
	if err == nil {
		err = decode(r, &req)
	}
	if err == nil {
		err = h.ops.RevertVolume(r.Context(), id, req.Snapshot)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	id, err := pathID(r)
	if err == nil {
		err = decode(r, &req)
	}
	var s volume.SnapshotInfo
	if err == nil {
		s, err = h.ops.CreateSnapshot(r.Context(), id, req.Name)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s)
}

func (h *handler) snapshots(w http.ResponseWriter, r *http.Request) {
	var vol cairn.ID
	if v := r.URL.Query().Get("volume"); v != "" {
		var err error
		if vol, err = cairn.ParseID(v); err != nil {
			writeErr(w, err)
			return
		}
	}
	s, err := h.ops.Snapshots(r.Context(), vol)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *handler) snapshot(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		var s volume.SnapshotInfo
		if s, err = h.ops.Snapshot(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, s)
			return
		}
	}
	writeErr(w, err)
}

func (h *handler) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		err = h.ops.DeleteSnapshot(r.Context(), id)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) clone(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	id, err := pathID(r)
	if err == nil {
		err = decode(r, &req)
	}
	var v volume.VolumeInfo
	if err == nil {
		v, err = h.ops.CloneVolume(r.Context(), req.Name, id)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

type changedReq struct {
	From *volume.Ref `json:"from,omitempty"`
	To   volume.Ref  `json:"to"`
}

type changedResp struct {
	Extents []cairn.Extent `json:"extents"`
	Known   bool           `json:"known"`
}

func (h *handler) changed(w http.ResponseWriter, r *http.Request) {
	var req changedReq
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	list, known, err := h.ops.ChangedExtents(r.Context(), req.From, req.To)
	if err != nil {
		writeErr(w, err)
		return
	}
	if list == nil {
		list = []cairn.Extent{}
	}
	writeJSON(w, http.StatusOK, changedResp{list, known})
}

// openReader opens a volume or snapshot for reading and keeps it open
// under a handle until the client closes it (or leaves it idle for
// handleIdle), so a backup's many reads do not each open the device.
func (h *handler) openReader(w http.ResponseWriter, r *http.Request) {
	var ref volume.Ref
	if err := decode(r, &ref); err != nil {
		writeErr(w, err)
		return
	}
	rd, err := h.ops.Open(r.Context(), ref)
	if err != nil {
		writeErr(w, err)
		return
	}
	list, ok, err := rd.Allocated()
	if err != nil {
		rd.Close()
		writeErr(w, err)
		return
	}
	id := h.readers.add(r, rd)
	writeJSON(w, http.StatusOK, readerResp{Handle: id, Size: rd.Size(), Extents: list, Known: ok})
}

type readerResp struct {
	Handle  cairn.ID       `json:"handle"`
	Size    int64          `json:"size"`
	Extents []cairn.Extent `json:"extents"`
	Known   bool           `json:"known"`
}

// handleIdle is how long an open reader or device nobody uses stays open:
// a client that died without closing it does not keep its volume in use
// for ever.
const handleIdle = 10 * time.Minute

// handles keeps what clients opened, under handles they name in later
// requests. Its methods are safe for concurrent use.
type handles[T io.Closer] struct {
	what string
	mu   sync.Mutex
	m    map[cairn.ID]*openHandle[T]
}

type openHandle[T io.Closer] struct {
	v     T
	used  time.Time
	users int
	// owner opened it, when known.
	owner *peer
}

func newHandles[T io.Closer](what string) *handles[T] {
	return &handles[T]{what: what, m: map[cairn.ID]*openHandle[T]{}}
}

// add keeps v, opened by the sender of r, under a new handle, first
// closing what was left idle or by a process that died.
func (hs *handles[T]) add(r *http.Request, v T) cairn.ID {
	id := cairn.NewID()
	now := time.Now()
	o := &openHandle[T]{v: v, used: now}
	if p, ok := peerOf(r); ok {
		o.owner = &p
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.releaseLocked(func(o *openHandle[T]) bool { return now.Sub(o.used) > handleIdle || o.orphan() })
	hs.m[id] = o
	return id
}

// orphan reports whether the process that opened o has died.
func (o *openHandle[T]) orphan() bool { return o.owner != nil && !o.owner.alive() }

// releaseLocked closes the handles nobody is using for which drop says
// so, and returns how many. The caller holds hs.mu.
func (hs *handles[T]) releaseLocked(drop func(*openHandle[T]) bool) int {
	n := 0
	for id, o := range hs.m {
		if o.users == 0 && drop(o) {
			_ = o.v.Close()
			delete(hs.m, id)
			n++
		}
	}
	return n
}

// releaseOrphans closes the handles of processes that died.
func (hs *handles[T]) releaseOrphans() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.releaseLocked(func(o *openHandle[T]) bool { return o.orphan() })
}

// use returns what the request's handle names, until done is called.
func (hs *handles[T]) use(r *http.Request) (v T, done func(), err error) {
	id, err := pathID(r)
	if err != nil {
		return v, nil, err
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	o := hs.m[id]
	if o == nil {
		return v, nil, fmt.Errorf("%s %s: %w", hs.what, id.Short(), cairn.ErrNotFound)
	}
	o.users++
	return o.v, func() {
		hs.mu.Lock()
		o.users--
		o.used = time.Now()
		hs.mu.Unlock()
	}, nil
}

// close closes and forgets what the request's handle names.
func (hs *handles[T]) close(r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	hs.mu.Lock()
	o := hs.m[id]
	delete(hs.m, id)
	hs.mu.Unlock()
	if o == nil {
		return fmt.Errorf("%s %s: %w", hs.what, id.Short(), cairn.ErrNotFound)
	}
	return o.v.Close()
}

// rangeQuery reads the offset and length of a request's query.
func rangeQuery(r *http.Request) (off, n int64, err error) {
	q := r.URL.Query()
	off, err1 := strconv.ParseInt(q.Get("offset"), 10, 64)
	n, err2 := strconv.ParseInt(q.Get("length"), 10, 64)
	if err1 != nil || err2 != nil || off < 0 || n < 0 || n > maxTransfer {
		return 0, 0, fmt.Errorf("offset and length (at most %d): %w", maxTransfer, cairn.ErrInvalid)
	}
	return off, n, nil
}

// maxTransfer bounds the bytes of one read or write request.
const maxTransfer = 64 << 20

// readAt serves a byte range of an open reader: query offset, length.
func (h *handler) readAt(w http.ResponseWriter, r *http.Request) {
	rd, done, err := h.readers.use(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer done()
	off, n, err := rangeQuery(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	buf, put := h.buffer(n)
	defer put()
	m, err := rd.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(m))
	_, _ = w.Write(buf[:m])
}

func (h *handler) closeReader(w http.ResponseWriter, r *http.Request) {
	if err := h.readers.close(r); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Client implements Ops by talking to a control socket.
type Client struct {
	http *http.Client
	// streams shares http's connections without its overall timeout:
	// for the calls whose bodies are a database's backup or restore
	// stream, or that wait for a server to start, bounded by their
	// contexts and by the host.
	streams *http.Client
}

var _ Ops = (*Client)(nil)

// NewClient returns a client of the control socket at path.
func NewClient(socket string) *Client {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
	}
	return &Client{http: &http.Client{Transport: t, Timeout: 10 * time.Minute}, streams: &http.Client{Transport: t}}
}

// send sends one request with body (nil: none) and returns the answer for
// the caller to read and close; an error answer is returned as its error.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	return c.sendWith(c.http, ctx, method, path, body, contentType)
}

// sendWith is send through client hc.
func (c *Client) sendWith(hc *http.Client, ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://cairn"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, transportError(ctx, method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, errorOf(resp)
	}
	return resp, nil
}

// transportError is the error of a request to the control socket that
// got no answer, or whose answer broke off: unless ctx ended, the data
// plane is gone (killed, restarting) or unreachable, which is temporary.
func transportError(ctx context.Context, method, path string, err error) error {
	// The URL is made up; what failed, and where, is what tells.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// A connection the data plane broke says it is gone, even when ctx
	// ended meanwhile: a request whose body is a stream ends its writer
	// when the connection breaks, and the writer's failure may cancel
	// ctx before the request returns. The client may also have closed
	// the broken connection itself before the body's write, which then
	// fails on a closed connection (net.ErrClosed).
	gone := errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
	if ctx.Err() != nil && !gone {
		return fmt.Errorf("data plane: %s %s: %w", method, path, err)
	}
	return fmt.Errorf("data plane unreachable or gone during %s %s: %w: %w", method, path, err, cairn.ErrUnavailable)
}

// do sends in (if not nil) as JSON and decodes the answer into out (if
// not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	resp, err := c.send(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (c *Client) CreateVolume(ctx context.Context, name string, size int64) (v volume.VolumeInfo, err error) {
	err = c.do(ctx, "POST", "/volumes", createVolumeReq{name, size}, &v)
	return v, err
}

func (c *Client) CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (v volume.VolumeInfo, err error) {
	err = c.do(ctx, "POST", "/snapshots/"+snapshot.String()+"/clone", map[string]string{"name": name}, &v)
	return v, err
}

func (c *Client) Volumes(ctx context.Context) (v []volume.VolumeInfo, err error) {
	err = c.do(ctx, "GET", "/volumes", nil, &v)
	return v, err
}

func (c *Client) Volume(ctx context.Context, id cairn.ID) (v volume.VolumeInfo, err error) {
	err = c.do(ctx, "GET", "/volumes/"+id.String(), nil, &v)
	return v, err
}

func (c *Client) DeleteVolume(ctx context.Context, id cairn.ID) error {
	return c.do(ctx, "DELETE", "/volumes/"+id.String(), nil, nil)
}

func (c *Client) ExtendVolume(ctx context.Context, id cairn.ID, size int64) error {
	return c.do(ctx, "POST", "/volumes/"+id.String()+"/extend", map[string]int64{"size": size}, nil)
}

func (c *Client) RevertVolume(ctx context.Context, v, s cairn.ID) error {
	return c.do(ctx, "POST", "/volumes/"+v.String()+"/revert", map[string]cairn.ID{"snapshot": s}, nil)
}

func (c *Client) CreateSnapshot(ctx context.Context, v cairn.ID, name string) (s volume.SnapshotInfo, err error) {
	err = c.do(ctx, "POST", "/volumes/"+v.String()+"/snapshots", map[string]string{"name": name}, &s)
	return s, err
}

func (c *Client) Snapshots(ctx context.Context, v cairn.ID) (s []volume.SnapshotInfo, err error) {
	path := "/snapshots"
	if !v.IsZero() {
		path += "?volume=" + v.String()
	}
	err = c.do(ctx, "GET", path, nil, &s)
	return s, err
}

func (c *Client) Snapshot(ctx context.Context, id cairn.ID) (s volume.SnapshotInfo, err error) {
	err = c.do(ctx, "GET", "/snapshots/"+id.String(), nil, &s)
	return s, err
}

func (c *Client) DeleteSnapshot(ctx context.Context, id cairn.ID) error {
	return c.do(ctx, "DELETE", "/snapshots/"+id.String(), nil, nil)
}

func (c *Client) ChangedExtents(ctx context.Context, from *volume.Ref, to volume.Ref) ([]cairn.Extent, bool, error) {
	var resp changedResp
	err := c.do(ctx, "POST", "/changed-extents", changedReq{From: from, To: to}, &resp)
	return resp.Extents, resp.Known, err
}

func (c *Client) Open(ctx context.Context, r volume.Ref) (Reader, error) {
	var resp readerResp
	if err := c.do(ctx, "POST", "/readers", r, &resp); err != nil {
		return nil, err
	}
	return &remoteReader{c: c, ctx: ctx, handle: resp.Handle, size: resp.Size, alloc: resp.Extents, known: resp.Known}, nil
}

// remoteReader reads a volume or snapshot the serving process holds open.
type remoteReader struct {
	c      *Client
	ctx    context.Context
	handle cairn.ID
	size   int64
	alloc  []cairn.Extent
	known  bool
}

func (r *remoteReader) Size() int64                              { return r.size }
func (r *remoteReader) Allocated() ([]cairn.Extent, bool, error) { return r.alloc, r.known, nil }

func (r *remoteReader) Close() error {
	return r.c.do(context.WithoutCancel(r.ctx), "DELETE", "/readers/"+r.handle.String(), nil, nil)
}

func (r *remoteReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	resp, err := r.c.send(r.ctx, "GET", fmt.Sprintf("/readers/%s?offset=%d&length=%d", r.handle, off, n), nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	m, err := io.ReadFull(resp.Body, p[:n])
	if err != nil {
		return m, transportError(r.ctx, "GET", "/readers/"+r.handle.String(), fmt.Errorf("short read: %w", err))
	}
	if n < int64(len(p)) {
		return m, io.EOF
	}
	return m, nil
}
