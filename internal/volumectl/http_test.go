package volumectl

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
