package volumectl

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A WAL stream on the control socket is the body of
// GET /instances/{id}/wal?timeline=T&start=LSN: a sequence of frames,
// flushed as they are written (a burst of them, messages the server
// sent back to back, at its last), and a trailer saying how it ended (the
// timeline's end, or an error). Frames, big endian:
//
//	'w' start(8) server_end(8) server_time(8, Unix ns) n(4) n bytes of WAL
//	'k' server_end(8) server_time(8)                     a keepalive
//
// POST /instances/{id}/wal/confirm {"lsn": N} reports what the archive
// has stored.

const (
	frameWAL       = 'w'
	frameKeepalive = 'k'
	// maxWALFrame bounds the WAL bytes of one frame (the server sends at
	// most 128 KiB a message).
	maxWALFrame     = 16 << 20
	timelineTrailer = "Cairn-Timeline-End"
)

// AppendWALFrame appends m's frame to dst.
func AppendWALFrame(dst []byte, m dbagent.WALMessage) []byte {
	t := int64(0)
	if !m.ServerTime.IsZero() {
		t = m.ServerTime.UnixNano()
	}
	if len(m.Data) == 0 {
		dst = append(dst, frameKeepalive)
		dst = binary.BigEndian.AppendUint64(dst, uint64(m.ServerEnd))
		return binary.BigEndian.AppendUint64(dst, uint64(t))
	}
	dst = append(dst, frameWAL)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Start))
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.ServerEnd))
	dst = binary.BigEndian.AppendUint64(dst, uint64(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.Data)))
	return append(dst, m.Data...)
}

// ReadWALFrame reads one frame from r into m, reusing buf for its bytes
// (m.Data aliases it). It returns io.EOF at a clean end between frames.
func ReadWALFrame(r io.Reader, buf []byte) (m dbagent.WALMessage, out []byte, err error) {
	var typ [1]byte
	if _, err := io.ReadFull(r, typ[:]); err != nil {
		return m, buf, err
	}
	var hdr [28]byte
	bad := func(err error) (dbagent.WALMessage, []byte, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return m, buf, fmt.Errorf("WAL frame: %w: %w", err, cairn.ErrCorrupt)
	}
	when := func(ns uint64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, int64(ns)).UTC()
	}
	switch typ[0] {
	case frameKeepalive:
		if _, err := io.ReadFull(r, hdr[:16]); err != nil {
			return bad(err)
		}
		m.ServerEnd = dbagent.LSN(binary.BigEndian.Uint64(hdr[0:8]))
		m.ServerTime = when(binary.BigEndian.Uint64(hdr[8:16]))
		return m, buf, nil
	case frameWAL:
		if _, err := io.ReadFull(r, hdr[:28]); err != nil {
			return bad(err)
		}
		m.Start = dbagent.LSN(binary.BigEndian.Uint64(hdr[0:8]))
		m.ServerEnd = dbagent.LSN(binary.BigEndian.Uint64(hdr[8:16]))
		m.ServerTime = when(binary.BigEndian.Uint64(hdr[16:24]))
		n := binary.BigEndian.Uint32(hdr[24:28])
		if n == 0 || n > maxWALFrame {
			return bad(fmt.Errorf("%d bytes", n))
		}
		if uint64(m.Start)+uint64(n) < uint64(m.Start) {
			return bad(errors.New("range wraps"))
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return bad(err)
		}
		m.Data = buf
		return m, buf, nil
	}
	return bad(fmt.Errorf("type %q", typ[0]))
}

// walHandlers serves the WAL endpoints of in.
func walHandlers(mux *http.ServeMux, in Instances) {
	mux.HandleFunc("GET /instances/{id}/wal/identity", func(w http.ResponseWriter, r *http.Request) {
		id, err := in.WALIdentity(r.Context(), r.PathValue("id"))
		answer(w, id, err)
	})
	mux.HandleFunc("GET /instances/{id}/wal/slot", func(w http.ResponseWriter, r *http.Request) {
		s, err := in.WALSlot(r.Context(), r.PathValue("id"))
		answer(w, s, err)
	})
	mux.HandleFunc("GET /instances/{id}/wal/history/{timeline}", func(w http.ResponseWriter, r *http.Request) {
		tli, err := strconv.ParseUint(r.PathValue("timeline"), 10, 32)
		if err != nil {
			writeErr(w, fmt.Errorf("timeline %q: %w", r.PathValue("timeline"), cairn.ErrInvalid))
			return
		}
		b, err := in.TimelineHistory(r.Context(), r.PathValue("id"), uint32(tli))
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /instances/{id}/wal/confirm", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			LSN dbagent.LSN `json:"lsn"`
		}
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		in.ConfirmWAL(r.PathValue("id"), req.LSN)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /instances/{id}/wal", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tli, err1 := strconv.ParseUint(q.Get("timeline"), 10, 32)
		start, err2 := strconv.ParseUint(q.Get("start"), 10, 64)
		if err1 != nil || err2 != nil || tli == 0 {
			writeErr(w, fmt.Errorf("timeline and start: %w", cairn.ErrInvalid))
			return
		}
		// The stream is the answer's body, flushed frame by frame; how it
		// ended comes after it, in a trailer. Errors before the first
		// frame are an ordinary answer.
		w.Header().Set("Trailer", timelineTrailer+", "+errorTrailer)
		w.Header().Set("Content-Type", "application/octet-stream")
		fl, _ := w.(http.Flusher)
		bw := bufio.NewWriterSize(w, 256<<10)
		var frame []byte
		started := false
		end, err := in.StreamWAL(r.Context(), r.PathValue("id"), uint32(tli), dbagent.LSN(start), func(m dbagent.WALMessage) error {
			started = true
			frame = AppendWALFrame(frame[:0], m)
			if _, err := bw.Write(frame); err != nil {
				return err
			}
			if m.More {
				return nil // flushed with the last of the burst
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
			return nil
		})
		if err != nil && !started {
			w.Header().Del("Trailer")
			writeErr(w, err)
			return
		}
		_ = bw.Flush()
		if err != nil {
			js, _ := json.Marshal(errorBodyOf(err))
			w.Header().Set(errorTrailer, base64.StdEncoding.EncodeToString(js))
			return
		}
		if end != nil {
			js, _ := json.Marshal(end)
			w.Header().Set(timelineTrailer, base64.StdEncoding.EncodeToString(js))
		}
	})
}

func (h HostInstances) WALIdentity(ctx context.Context, id string) (dbagent.WALIdentity, error) {
	return h.H.WALIdentity(ctx, id)
}

func (h HostInstances) WALSlot(ctx context.Context, id string) (dbagent.WALSlot, error) {
	return h.H.WALSlot(ctx, id)
}

func (h HostInstances) TimelineHistory(ctx context.Context, id string, timeline uint32) ([]byte, error) {
	return h.H.TimelineHistory(ctx, id, timeline)
}

func (h HostInstances) StreamWAL(ctx context.Context, id string, timeline uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	return h.H.StreamWAL(ctx, id, timeline, start, fn)
}

func (h HostInstances) ConfirmWAL(id string, lsn dbagent.LSN) { h.H.ConfirmWAL(id, lsn) }

func (c *Client) WALIdentity(ctx context.Context, id string) (v dbagent.WALIdentity, err error) {
	err = c.do(ctx, "GET", "/instances/"+url.PathEscape(id)+"/wal/identity", nil, &v)
	return v, err
}

func (c *Client) WALSlot(ctx context.Context, id string) (v dbagent.WALSlot, err error) {
	err = c.do(ctx, "GET", "/instances/"+url.PathEscape(id)+"/wal/slot", nil, &v)
	return v, err
}

func (c *Client) TimelineHistory(ctx context.Context, id string, timeline uint32) ([]byte, error) {
	path := fmt.Sprintf("/instances/%s/wal/history/%d", url.PathEscape(id), timeline)
	resp, err := c.send(ctx, "GET", path, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, transportError(ctx, "GET", path, err)
	}
	return b, nil
}

// ConfirmWAL implements Instances; a data plane that cannot be told is
// logged nowhere: the next stream starts at what is stored anyway.
func (c *Client) ConfirmWAL(id string, lsn dbagent.LSN) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.do(ctx, "POST", "/instances/"+url.PathEscape(id)+"/wal/confirm", map[string]any{"lsn": lsn}, nil)
}

// StreamWAL implements Instances: the frames are read as they come and
// handed to fn; the trailer says how the stream ended.
func (c *Client) StreamWAL(ctx context.Context, id string, timeline uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	path := fmt.Sprintf("/instances/%s/wal?timeline=%d&start=%d", url.PathEscape(id), timeline, uint64(start))
	resp, err := c.sendWith(c.streams, ctx, "GET", path, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	var buf []byte
	for {
		var m dbagent.WALMessage
		m, buf, err = ReadWALFrame(br, buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, err
			}
			return nil, fmt.Errorf("WAL stream ended early (the data plane stopped?): %w: %w", err, cairn.ErrUnavailable)
		}
		if err := fn(m); err != nil {
			return nil, err
		}
	}
	if e := resp.Trailer.Get(errorTrailer); e != "" {
		return nil, trailerError(e)
	}
	if t := resp.Trailer.Get(timelineTrailer); t != "" {
		var end dbagent.TimelineEnd
		raw, err := base64.StdEncoding.DecodeString(t)
		if err == nil {
			err = json.Unmarshal(raw, &end)
		}
		if err != nil {
			return nil, fmt.Errorf("WAL stream: unreadable timeline trailer: %w", cairn.ErrCorrupt)
		}
		return &end, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("WAL stream ended without saying why (the data plane stopped?): %w", cairn.ErrUnavailable)
}

// trailerError reads the error a stream's trailer carries.
func trailerError(e string) error {
	var body errorBody
	if raw, err := base64.StdEncoding.DecodeString(e); err == nil && json.Unmarshal(raw, &body) == nil {
		if s := cairn.SentinelNamed(body.Kind); s != nil {
			return fmt.Errorf("%s: %w", body.Error, s)
		}
		return errors.New(body.Error)
	}
	return fmt.Errorf("stream: unreadable error trailer: %w", cairn.ErrCorrupt)
}
