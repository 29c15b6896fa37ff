package cairn

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
)

// declaredSentinels reads the package's source and returns the message of
// every package-level `ErrX = errors.New("...")`, by name. Read from the
// source rather than listed here, so a sentinel added without a status
// fails TestStatusTableCoversEverySentinel.
func declaredSentinels(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, de := range entries {
		file := de.Name()
		if de.IsDir() || !strings.HasSuffix(file, ".go") || strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Err") {
						continue
					}
					if msg, ok := newErrorMessage(vs, i); ok {
						out[name.Name] = msg
					} else {
						t.Errorf("%s: %s is not errors.New(\"...\"); teach this test", fset.Position(name.Pos()), name.Name)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no sentinel errors found in the package's source")
	}
	return out
}

// newErrorMessage returns the message of the i-th value of vs when it is
// errors.New("message").
func newErrorMessage(vs *ast.ValueSpec, i int) (string, bool) {
	if i >= len(vs.Values) {
		return "", false
	}
	call, ok := vs.Values[i].(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return "", false
	}
	if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || sel.Sel.Name != "New" {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	msg, err := strconv.Unquote(lit.Value)
	return msg, err == nil
}

func TestStatusTableCoversEverySentinel(t *testing.T) {
	declared := declaredSentinels(t)
	inTable := map[string]int{}
	for _, e := range statusTable() {
		inTable[e.err.Error()]++
	}
	for name, msg := range declared {
		switch inTable[msg] {
		case 0:
			t.Errorf("%s (%q) has no HTTP status in statusTable", name, msg)
		case 1:
		default:
			t.Errorf("%s (%q) is in statusTable %d times", name, msg, inTable[msg])
		}
	}
	if len(statusTable()) != len(declared) {
		t.Errorf("statusTable has %d entries for %d sentinels", len(statusTable()), len(declared))
	}
}

func TestHTTPStatus(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{ErrInvalid, http.StatusBadRequest},
		{ErrUnsupported, http.StatusBadRequest},
		{ErrUnauthenticated, http.StatusUnauthorized},
		{ErrForbidden, http.StatusForbidden},
		{ErrNotFound, http.StatusNotFound},
		{ErrGone, http.StatusGone},
		{ErrConflict, http.StatusConflict},
		{ErrExists, http.StatusConflict},
		{ErrQuota, http.StatusRequestEntityTooLarge},
		{ErrUnavailable, http.StatusServiceUnavailable},
		{ErrDenied, http.StatusInternalServerError},
		{ErrWrongKey, http.StatusInternalServerError},
		{ErrNotRepository, http.StatusInternalServerError},
		{ErrCorrupt, http.StatusInternalServerError},
		// Not a sentinel: an internal error.
		{errors.New("disk on fire"), http.StatusInternalServerError},
		// Wrapped, once or twice.
		{fmt.Errorf("volume v: %w", ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("task: %w", fmt.Errorf("size: %w", ErrInvalid)), http.StatusBadRequest},
		// Several sentinels: damage of the service's own data wins over
		// what looks like the caller's mistake.
		{fmt.Errorf("index: %w: %w", ErrNotFound, ErrCorrupt), http.StatusInternalServerError},
		{errors.Join(ErrInvalid, ErrUnavailable), http.StatusServiceUnavailable},
	}
	declared := declaredSentinels(t)
	covered := map[string]bool{}
	for _, c := range cases {
		if got := HTTPStatus(c.err); got != c.want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.want)
		}
		covered[c.err.Error()] = true
	}
	// The cases above decide every sentinel's status on purpose: a new
	// sentinel needs a case here too.
	for name, msg := range declared {
		if !covered[msg] {
			t.Errorf("no case for %s", name)
		}
	}
}

func TestSentinelRoundTrip(t *testing.T) {
	for _, e := range statusTable() {
		wrapped := fmt.Errorf("context: %w", e.err)
		if got := Sentinel(wrapped); got != e.err {
			t.Errorf("Sentinel(%v) = %v", wrapped, got)
		}
		// A control-socket client gets the sentinel back by its message.
		if got := SentinelNamed(e.err.Error()); got != e.err {
			t.Errorf("SentinelNamed(%q) = %v", e.err.Error(), got)
		}
		// By status alone, every status but 500 comes back as a sentinel
		// with that same status.
		back := SentinelOfStatus(e.status)
		if e.status == http.StatusInternalServerError {
			if back != nil {
				t.Errorf("SentinelOfStatus(500) = %v, want nil", back)
			}
			continue
		}
		if back == nil || HTTPStatus(back) != e.status {
			t.Errorf("SentinelOfStatus(%d) = %v", e.status, back)
		}
	}
	// The first of the sentinels sharing a status is the one read back.
	for status, want := range map[int]error{409: ErrConflict, 400: ErrInvalid, 403: ErrForbidden} {
		if got := SentinelOfStatus(status); got != want {
			t.Errorf("SentinelOfStatus(%d) = %v, want %v", status, got, want)
		}
	}
	for _, status := range []int{200, 204, 302, 405, 418, 502} {
		if got := SentinelOfStatus(status); got != nil {
			t.Errorf("SentinelOfStatus(%d) = %v, want nil", status, got)
		}
	}
	if Sentinel(nil) != nil || Sentinel(errors.New("x")) != nil || SentinelNamed("") != nil || SentinelNamed("no such") != nil {
		t.Error("a lookup of nothing found something")
	}
}
