package volumectl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cairnproject/cairn"
)

// TestErrorsRoundTrip sends every sentinel through the control socket's
// error answers: the status is the one table's, and the client's error
// wraps the same sentinel with the same message.
func TestErrorsRoundTrip(t *testing.T) {
	for _, s := range cairn.Sentinels() {
		err := fmt.Errorf("volume 1234abcd: %w", s)
		rec := httptest.NewRecorder()
		writeErr(rec, err)
		resp := rec.Result()
		if resp.StatusCode != cairn.HTTPStatus(s) {
			t.Errorf("%v: status %d, want %d", s, resp.StatusCode, cairn.HTTPStatus(s))
		}
		back := errorOf(resp)
		if !errors.Is(back, s) || back.Error() != err.Error() {
			t.Errorf("%v: read back as %q (%v)", s, back, cairn.Sentinel(back))
		}
	}

	// An internal error: 500, and no sentinel on the way back.
	rec := httptest.NewRecorder()
	writeErr(rec, errors.New("engine state: disk on fire"))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("internal error: status %d", rec.Code)
	}
	if back := errorOf(rec.Result()); cairn.Sentinel(back) != nil || back.Error() != "engine state: disk on fire" {
		t.Errorf("internal error read back as %q (%v)", back, cairn.Sentinel(back))
	}

	// Not an answer of the handler (a plain-text 404 of an unknown route):
	// the status decides.
	rec = httptest.NewRecorder()
	http.NotFound(rec, httptest.NewRequest("GET", "/nope", nil))
	back := errorOf(rec.Result())
	if !errors.Is(back, cairn.ErrNotFound) || !strings.Contains(back.Error(), "404") {
		t.Errorf("plain 404 read back as %q", back)
	}
	rec = httptest.NewRecorder()
	http.Error(rec, "boom", http.StatusBadGateway)
	if back := errorOf(rec.Result()); cairn.Sentinel(back) != nil || !strings.Contains(back.Error(), "502") {
		t.Errorf("plain 502 read back as %q", back)
	}
}

// TestTransportError: a request that got no answer is the data plane
// gone (temporary) unless its context ended first, and a connection the
// data plane broke is that even when the context ended meanwhile.
func TestTransportError(t *testing.T) {
	broken := &url.Error{Op: "Put", URL: "http://cairn/instances/x", Err: &net.OpError{Op: "write", Net: "unix",
		Err: os.NewSyscallError("write", syscall.EPIPE)}}
	reset := &net.OpError{Op: "read", Net: "unix", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
	}{
		{"refused", t.Context(), syscall.ECONNREFUSED, true},
		{"broken pipe", t.Context(), broken, true},
		{"broken pipe, context ended", cancelled, broken, true},
		{"reset, context ended", cancelled, reset, true},
		{"closed connection, context ended", cancelled, &url.Error{Op: "Put", URL: "http://cairn/instances/x",
			Err: &net.OpError{Op: "write", Net: "unix", Err: net.ErrClosed}}, true},
		{"context ended", cancelled, context.Canceled, false},
		{"another error, context ended", cancelled, errors.New("the stream's writer failed"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := transportError(tc.ctx, "PUT", "/instances/x", tc.err)
			if got := errors.Is(err, cairn.ErrUnavailable); got != tc.unavailable {
				t.Fatalf("%v: unavailable %v, want %v", err, got, tc.unavailable)
			}
		})
	}
}
