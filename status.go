package cairn

import (
	"errors"
	"net/http"
)

// The HTTP status of every sentinel error: the one table both HTTP
// servers of cairn (the API and the volume control socket) answer with,
// and their clients read back. The CLI's exit codes are the other table
// (exitCode in cmd/cairn).
//
// The rule behind the table: a 4xx says the caller can change something
// (its input, its token, the resource's state, its quota), and its
// message may tell the caller exactly what; a 5xx says the service is at
// fault or busy, and an API answers it with a generic message (the cause
// may name paths and store locations, which are no tenant's business).
//
// Order matters for an error that wraps several sentinels: the first
// entry it wraps decides. Faults of the service's own data and
// configuration come first, so an error that is one of them is never
// answered as the caller's mistake whatever else it wraps.
type statusEntry struct {
	err    error
	status int
}

// statusTable returns the table. It is a function, not a variable, so
// that nothing can change it.
func statusTable() []statusEntry {
	return []statusEntry{
		// Stored bytes failed authentication or a structural check: damage
		// at rest, never the caller's doing.
		{ErrCorrupt, http.StatusInternalServerError},
		// The service's key does not open a repository. The block storage
		// API answered 403 here before; but the caller's token is fine, the
		// deployment's key is not, and only the operator can fix it, so it
		// is a 500 (whose cause goes to the log, not to the tenant).
		{ErrWrongKey, http.StatusInternalServerError},
		// A location holds no repository: the service creates repositories
		// itself, so finding none where one should be is its own fault.
		{ErrNotRepository, http.StatusInternalServerError},
		// A store refused the service's credentials or an operation. The
		// API answered 403 before, which told a caller its token lacked a
		// right; the store's refusal is the deployment's problem, and its
		// message names the store. 500.
		{ErrDenied, http.StatusInternalServerError},
		// A transient failure of something the service depends on: try
		// again later.
		{ErrUnavailable, http.StatusServiceUnavailable},
		// No valid token.
		{ErrUnauthenticated, http.StatusUnauthorized},
		// A valid token that may not do this (admin-only calls).
		{ErrForbidden, http.StatusForbidden},
		// Over a quota: the block storage API's 413 overLimit.
		{ErrQuota, http.StatusRequestEntityTooLarge},
		{ErrNotFound, http.StatusNotFound},
		// What the caller asked for existed and is gone for good (a
		// server's log removed before it was archived).
		{ErrGone, http.StatusGone},
		// The resource's state forbids the operation. Before ErrExists:
		// it is the sentinel a 409 stands for when read back.
		{ErrConflict, http.StatusConflict},
		{ErrExists, http.StatusConflict},
		// The caller's input is malformed or out of range.
		{ErrInvalid, http.StatusBadRequest},
		// A version or feature this build does not support. It reaches an
		// HTTP answer only through what the caller sent (a backup record of
		// another version), and the caller must change the request, so 400
		// like the API answered, with the message saying what is
		// unsupported. The control socket answered 501 before; its client
		// reads the sentinel back by name, so nothing changes for it.
		{ErrUnsupported, http.StatusBadRequest},
	}
}

// Sentinels returns every sentinel error of the package, in the table's
// order.
func Sentinels() []error {
	t := statusTable()
	out := make([]error, len(t))
	for i, e := range t {
		out[i] = e.err
	}
	return out
}

// HTTPStatus returns the HTTP status code of err: that of the first
// sentinel in the table err wraps (errors.Is), or 500 for an error that
// wraps none (an internal error). It does no I/O.
func HTTPStatus(err error) int {
	if e, ok := entryOf(err); ok {
		return e.status
	}
	return http.StatusInternalServerError
}

// Sentinel returns the first sentinel in the table that err wraps, or nil
// when it wraps none.
func Sentinel(err error) error {
	if e, ok := entryOf(err); ok {
		return e.err
	}
	return nil
}

// entryOf returns the first entry of the table whose sentinel err wraps.
func entryOf(err error) (statusEntry, bool) {
	if err != nil {
		for _, e := range statusTable() {
			if errors.Is(err, e.err) {
				return e, true
			}
		}
	}
	return statusEntry{}, false
}

// SentinelNamed returns the sentinel whose message is text (what its
// Error method returns), or nil. A server sends a sentinel's message with
// an error so that its client can wrap the same sentinel again.
func SentinelNamed(text string) error {
	if text == "" {
		return nil
	}
	for _, e := range statusTable() {
		if e.err.Error() == text {
			return e.err
		}
	}
	return nil
}

// SentinelOfStatus returns the sentinel an HTTP status stands for when
// nothing more is known: the first in the table with that status. It is
// nil for 500 (an internal error is not one of the sentinels mapped to
// it), for 2xx and 3xx, and for statuses the table does not give.
func SentinelOfStatus(status int) error {
	if status == http.StatusInternalServerError {
		return nil
	}
	for _, e := range statusTable() {
		if e.status == status {
			return e.err
		}
	}
	return nil
}
