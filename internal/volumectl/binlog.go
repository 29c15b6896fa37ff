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
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A binary log stream on the control socket is the body of
// GET /instances/{id}/binlog?file=NAME: a sequence of frames, each
// flushed as it is written, and a trailer saying how it ended (the
// error, or that the host's stream returned without one). Frames, big
// endian:
//
//	'b' start(8) server_pos(8) server_time(8, Unix ns) lf(1) ls(1) file server_file n(4) n bytes of the log
//	's' start(8) server_pos(8) server_time(8)          lf(1) ls(1) file server_file   a status
//
// where lf and ls are the lengths of the message's File and ServerFile. A
// message with more bytes than a frame holds is sent as several frames,
// as a stream's messages need not end at event boundaries.
//
// GET /instances/{id}/binlog/state answers the server's dbagent.BinlogState.

const (
	frameBinlog       = 'b'
	frameBinlogStatus = 's'
	// maxLogName bounds a file name in a frame (NAME_MAX).
	maxLogName = 255
	// maxBinlogFrame bounds the log bytes of one frame.
	maxBinlogFrame = 16 << 20
	// binlogEndTrailer says the host's stream returned nil: without it
	// or an error, the stream broke off.
	binlogEndTrailer = "Cairn-Binlog-End"
)

// AppendBinlogFrame appends m's frame to dst: a status when m has no
// Data. It fails for names longer than maxLogName or Data longer than a
// frame holds (16 MiB).
func AppendBinlogFrame(dst []byte, m dbagent.BinlogMessage) ([]byte, error) {
	if len(m.File) > maxLogName || len(m.ServerFile) > maxLogName || len(m.Data) > maxBinlogFrame {
		return dst, fmt.Errorf("binary log frame of %s (%d bytes): %w", m.File, len(m.Data), cairn.ErrInvalid)
	}
	t := int64(0)
	if !m.ServerTime.IsZero() {
		t = m.ServerTime.UnixNano()
	}
	typ := byte(frameBinlog)
	if len(m.Data) == 0 {
		typ = frameBinlogStatus
	}
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, m.Start)
	dst = binary.BigEndian.AppendUint64(dst, m.ServerPos)
	dst = binary.BigEndian.AppendUint64(dst, uint64(t))
	dst = append(dst, byte(len(m.File)), byte(len(m.ServerFile)))
	dst = append(dst, m.File...)
	dst = append(dst, m.ServerFile...)
	if typ == frameBinlogStatus {
		return dst, nil
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.Data)))
	return append(dst, m.Data...), nil
}

// ReadBinlogFrame reads one frame from r into m, reusing buf for its
// bytes (m.Data aliases it). It returns io.EOF at a clean end between
// frames; any other failure wraps cairn.ErrCorrupt.
func ReadBinlogFrame(r io.Reader, buf []byte) (m dbagent.BinlogMessage, out []byte, err error) {
	var typ [1]byte
	if _, err := io.ReadFull(r, typ[:]); err != nil {
		return m, buf, err
	}
	bad := func(err error) (dbagent.BinlogMessage, []byte, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return dbagent.BinlogMessage{}, buf, fmt.Errorf("binary log frame: %w: %w", err, cairn.ErrCorrupt)
	}
	if typ[0] != frameBinlog && typ[0] != frameBinlogStatus {
		return bad(fmt.Errorf("type %q", typ[0]))
	}
	var hdr [26]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return bad(err)
	}
	m.Start = binary.BigEndian.Uint64(hdr[0:8])
	m.ServerPos = binary.BigEndian.Uint64(hdr[8:16])
	if ns := binary.BigEndian.Uint64(hdr[16:24]); ns != 0 {
		m.ServerTime = time.Unix(0, int64(ns)).UTC()
	}
	names := make([]byte, int(hdr[24])+int(hdr[25]))
	if _, err := io.ReadFull(r, names); err != nil {
		return bad(err)
	}
	m.File, m.ServerFile = string(names[:hdr[24]]), string(names[hdr[24]:])
	if typ[0] == frameBinlogStatus {
		return m, buf, nil
	}
	var nb [4]byte
	if _, err := io.ReadFull(r, nb[:]); err != nil {
		return bad(err)
	}
	n := binary.BigEndian.Uint32(nb[:])
	if n == 0 || n > maxBinlogFrame {
		return bad(fmt.Errorf("%d bytes", n))
	}
	if m.File == "" {
		return bad(errors.New("bytes of no file"))
	}
	if m.Start+uint64(n) < m.Start {
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

// binlogHandlers serves the binary log endpoints of in.
func binlogHandlers(mux *http.ServeMux, in Instances) {
	mux.HandleFunc("GET /instances/{id}/binlog/state", func(w http.ResponseWriter, r *http.Request) {
		st, err := in.BinlogState(r.Context(), r.PathValue("id"))
		answer(w, st, err)
	})
	mux.HandleFunc("GET /instances/{id}/binlog", func(w http.ResponseWriter, r *http.Request) {
		file := r.URL.Query().Get("file")
		if file == "" {
			writeErr(w, fmt.Errorf("binary log stream without its first file: %w", cairn.ErrInvalid))
			return
		}
		// The stream is the answer's body, flushed frame by frame: a
		// message carries no sign that another follows at once, so each
		// goes out as it comes. How the stream ended comes after it, in a
		// trailer; errors before the first frame are an ordinary answer.
		w.Header().Set("Trailer", binlogEndTrailer+", "+errorTrailer)
		w.Header().Set("Content-Type", "application/octet-stream")
		fl, _ := w.(http.Flusher)
		bw := bufio.NewWriterSize(w, 256<<10)
		var frame []byte
		started := false
		send := func(m dbagent.BinlogMessage) error {
			var err error
			if frame, err = AppendBinlogFrame(frame[:0], m); err != nil {
				return err
			}
			_, err = bw.Write(frame)
			return err
		}
		err := in.StreamBinlog(r.Context(), r.PathValue("id"), file, func(m dbagent.BinlogMessage) error {
			started = true
			for len(m.Data) > maxBinlogFrame {
				part := m
				part.Data = m.Data[:maxBinlogFrame]
				if err := send(part); err != nil {
					return err
				}
				m.Start += maxBinlogFrame
				m.Data = m.Data[maxBinlogFrame:]
			}
			if err := send(m); err != nil {
				return err
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
		w.Header().Set(binlogEndTrailer, "1")
	})
}

func (h HostInstances) BinlogState(ctx context.Context, id string) (dbagent.BinlogState, error) {
	return h.H.BinlogState(ctx, id)
}

func (h HostInstances) StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error {
	return h.H.StreamBinlog(ctx, id, file, fn)
}

func (c *Client) BinlogState(ctx context.Context, id string) (st dbagent.BinlogState, err error) {
	err = c.do(ctx, "GET", "/instances/"+url.PathEscape(id)+"/binlog/state", nil, &st)
	return st, err
}

// StreamBinlog implements Instances: the frames are read as they come
// and handed to fn (a message's Data aliases a buffer reused for the
// next: fn copies what it keeps); the trailer says how the stream ended.
func (c *Client) StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error {
	path := "/instances/" + url.PathEscape(id) + "/binlog?file=" + url.QueryEscape(file)
	resp, err := c.sendWith(c.streams, ctx, "GET", path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	var buf []byte
	for {
		var m dbagent.BinlogMessage
		m, buf, err = ReadBinlogFrame(br, buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				return err
			}
			return fmt.Errorf("binary log stream ended early (the data plane stopped?): %w: %w", err, cairn.ErrUnavailable)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	if e := resp.Trailer.Get(errorTrailer); e != "" {
		return trailerError(e)
	}
	if resp.Trailer.Get(binlogEndTrailer) != "" {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("binary log stream ended without saying why (the data plane stopped?): %w", cairn.ErrUnavailable)
}
