package volumectl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
)

// The control socket's devices: a volume opened read-write under a handle
// (POST /devices), read (GET), written (PUT, the body at ?offset=),
// zeroed, trimmed, flushed, its allocation described, and closed (DELETE).
// And the export table: GET /exports, PUT and DELETE /exports/{name}.

type openDeviceReq struct {
	Volume cairn.ID `json:"volume"`
}

type deviceResp struct {
	Handle    cairn.ID `json:"handle"`
	Size      int64    `json:"size"`
	ReadOnly  bool     `json:"read_only"`
	FastZero  bool     `json:"fast_zero"`
	MultiConn bool     `json:"multi_conn"`
}

type deviceRangeReq struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	NoHole bool  `json:"no_hole,omitempty"`
}

type exportReq struct {
	Volume cairn.ID `json:"volume"`
}

func (h *handler) openDevice(w http.ResponseWriter, r *http.Request) {
	var req openDeviceReq
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	dev, err := h.ops.OpenDevice(r.Context(), req.Volume)
	if err != nil {
		writeErr(w, err)
		return
	}
	id := h.devices.add(r, dev)
	writeJSON(w, http.StatusOK, deviceResp{Handle: id, Size: dev.Size(), ReadOnly: dev.ReadOnly(),
		FastZero: dev.FastZero(), MultiConn: dev.MultiConn()})
}

func (h *handler) deviceRead(w http.ResponseWriter, r *http.Request) {
	dev, done, err := h.devices.use(r)
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
	buf := make([]byte, n)
	if err := dev.ReadAt(r.Context(), buf, off); err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
}

func (h *handler) deviceWrite(w http.ResponseWriter, r *http.Request) {
	dev, done, err := h.devices.use(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer done()
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || off < 0 || r.ContentLength < 0 || r.ContentLength > maxTransfer {
		writeErr(w, fmt.Errorf("offset, and a body of a known length up to %d bytes: %w", maxTransfer, cairn.ErrInvalid))
		return
	}
	buf, put := h.buffer(r.ContentLength)
	defer put()
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		writeErr(w, fmt.Errorf("request body: %v: %w", err, cairn.ErrInvalid))
		return
	}
	if err := dev.WriteAt(r.Context(), buf, off); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deviceRange runs f on the device and the range of a request's body.
func (h *handler) deviceRange(w http.ResponseWriter, r *http.Request, f func(Device, deviceRangeReq) error) {
	dev, done, err := h.devices.use(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer done()
	var req deviceRangeReq
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if err := f(dev, req); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) deviceZero(w http.ResponseWriter, r *http.Request) {
	h.deviceRange(w, r, func(d Device, q deviceRangeReq) error { return d.Zero(r.Context(), q.Offset, q.Length, q.NoHole) })
}

func (h *handler) deviceTrim(w http.ResponseWriter, r *http.Request) {
	h.deviceRange(w, r, func(d Device, q deviceRangeReq) error { return d.Trim(r.Context(), q.Offset, q.Length) })
}

func (h *handler) deviceFlush(w http.ResponseWriter, r *http.Request) {
	dev, done, err := h.devices.use(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer done()
	if err := dev.Flush(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) deviceExtents(w http.ResponseWriter, r *http.Request) {
	dev, done, err := h.devices.use(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer done()
	// Block status may ask about a range larger than one transfer.
	q := r.URL.Query()
	off, err1 := strconv.ParseInt(q.Get("offset"), 10, 64)
	n, err2 := strconv.ParseInt(q.Get("length"), 10, 64)
	if err1 != nil || err2 != nil || off < 0 || n < 0 {
		writeErr(w, fmt.Errorf("offset and length: %w", cairn.ErrInvalid))
		return
	}
	list, err := dev.BlockStatus(r.Context(), off, n)
	if err != nil {
		writeErr(w, err)
		return
	}
	if list == nil {
		list = []nbd.Extent{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) closeDevice(w http.ResponseWriter, r *http.Request) {
	if err := h.devices.close(r); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) exported(w http.ResponseWriter, r *http.Request) {
	m, err := h.ops.Exported(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (h *handler) export(w http.ResponseWriter, r *http.Request) {
	var req exportReq
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if err := h.ops.Export(r.Context(), r.PathValue("name"), req.Volume); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) unexport(w http.ResponseWriter, r *http.Request) {
	if err := h.ops.Unexport(r.Context(), r.PathValue("name")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// OpenDevice implements Ops.
func (c *Client) OpenDevice(ctx context.Context, id cairn.ID) (Device, error) {
	var resp deviceResp
	if err := c.do(ctx, "POST", "/devices", openDeviceReq{Volume: id}, &resp); err != nil {
		return nil, err
	}
	return &remoteDevice{c: c, base: "/devices/" + resp.Handle.String(), info: resp}, nil
}

// Export implements Ops.
func (c *Client) Export(ctx context.Context, name string, id cairn.ID) error {
	if err := checkExportName(name); err != nil {
		return err
	}
	return c.do(ctx, "PUT", "/exports/"+url.PathEscape(name), exportReq{Volume: id}, nil)
}

// Unexport implements Ops.
func (c *Client) Unexport(ctx context.Context, name string) error {
	if err := checkExportName(name); err != nil {
		return err
	}
	return c.do(ctx, "DELETE", "/exports/"+url.PathEscape(name), nil, nil)
}

// Exported implements Ops.
func (c *Client) Exported(ctx context.Context) (map[string]cairn.ID, error) {
	m := map[string]cairn.ID{}
	err := c.do(ctx, "GET", "/exports", nil, &m)
	return m, err
}

// remoteDevice is a volume the serving process holds open for this one.
type remoteDevice struct {
	c    *Client
	base string
	info deviceResp
}

var _ Device = (*remoteDevice)(nil)

func (d *remoteDevice) Size() int64     { return d.info.Size }
func (d *remoteDevice) ReadOnly() bool  { return d.info.ReadOnly }
func (d *remoteDevice) FastZero() bool  { return d.info.FastZero }
func (d *remoteDevice) MultiConn() bool { return d.info.MultiConn }

func (d *remoteDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), maxTransfer)
		resp, err := d.c.send(ctx, "GET", fmt.Sprintf("%s?offset=%d&length=%d", d.base, off, n), nil, "")
		if err != nil {
			return err
		}
		_, err = io.ReadFull(resp.Body, p[:n])
		resp.Body.Close()
		if err != nil {
			return transportError(ctx, "GET", d.base, fmt.Errorf("short read: %w", err))
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (d *remoteDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), maxTransfer)
		resp, err := d.c.send(ctx, "PUT", fmt.Sprintf("%s?offset=%d", d.base, off), bytes.NewReader(p[:n]), "application/octet-stream")
		if err != nil {
			return err
		}
		resp.Body.Close()
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (d *remoteDevice) Zero(ctx context.Context, off, n int64, noHole bool) error {
	return d.c.do(ctx, "POST", d.base+"/zero", deviceRangeReq{Offset: off, Length: n, NoHole: noHole}, nil)
}

func (d *remoteDevice) Trim(ctx context.Context, off, n int64) error {
	return d.c.do(ctx, "POST", d.base+"/trim", deviceRangeReq{Offset: off, Length: n}, nil)
}

func (d *remoteDevice) Flush(ctx context.Context) error {
	return d.c.do(ctx, "POST", d.base+"/flush", nil, nil)
}

func (d *remoteDevice) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	var list []nbd.Extent
	err := d.c.do(ctx, "GET", fmt.Sprintf("%s/extents?offset=%d&length=%d", d.base, off, n), nil, &list)
	return list, err
}

// Close implements Device. It runs on its own context: a device must be
// closed even when the work that used it was cancelled.
func (d *remoteDevice) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return d.c.do(ctx, "DELETE", d.base, nil, nil)
}

// closeTimeout bounds closing a remote reader or device: a serving process
// that does not answer has closed it anyway, or will when it sees the
// handle idle.
const closeTimeout = time.Minute

// ServerInfo describes the process serving a data directory: who it is
// and where its NBD exports are.
type ServerInfo struct {
	PID int `json:"pid"`
	// NBDSocket and NBDListen are where NBD clients connect (empty: not
	// served there).
	NBDSocket string `json:"nbd_socket,omitempty"`
	NBDListen string `json:"nbd_listen,omitempty"`
	// AllExports: every volume and snapshot is exported by ID, not only
	// the export table's names.
	AllExports bool `json:"all_exports"`
}

// WithInfo adds GET /info, answering info, to a control socket's handler.
func WithInfo(h http.Handler, info ServerInfo) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, info) })
	mux.Handle("/", h)
	return mux
}

// Info asks the serving process who it is.
func (c *Client) Info(ctx context.Context) (ServerInfo, error) {
	var info ServerInfo
	err := c.do(ctx, "GET", "/info", nil, &info)
	return info, err
}

type releaseOrphansResp struct {
	Released int `json:"released"`
}

// releaseOrphans closes the readers and devices whose opener died.
func (h *handler) releaseOrphans(w http.ResponseWriter, _ *http.Request) {
	n := h.readers.releaseOrphans() + h.devices.releaseOrphans()
	writeJSON(w, http.StatusOK, releaseOrphansResp{Released: n})
}

// ReleaseOrphans closes the readers and devices that processes which
// have died left open, so their volumes and snapshots are no longer in
// use; it returns how many it closed. A control plane calls it when it
// starts, for what a predecessor killed in the middle of a task left.
func (c *Client) ReleaseOrphans(ctx context.Context) (int, error) {
	var resp releaseOrphansResp
	err := c.do(ctx, "POST", "/release-orphans", nil, &resp)
	return resp.Released, err
}
