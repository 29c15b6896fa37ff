package notify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// request is one attempt a receiver saw.
type request struct {
	header http.Header
	body   []byte
	at     time.Time
}

// event decodes the request's body.
func (r request) event(t *testing.T) Event {
	t.Helper()
	var e Event
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return e
}

// seq is the event's payload "seq".
func (r request) seq(t *testing.T) int {
	t.Helper()
	f, ok := r.event(t).Payload["seq"].(float64)
	if !ok {
		t.Fatalf("body %q has no seq", r.body)
	}
	return int(f)
}

// receiver is a webhook endpoint that records every attempt.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
	ok   []request // the attempts answered 2xx
}

// serve starts a receiver. respond answers the i-th attempt (from 0) by
// writing a status; nil answers 200.
func serve(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, i int, req request)) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		req := request{header: r.Header.Clone(), body: body, at: time.Now()}
		rc.mu.Lock()
		i := len(rc.reqs)
		rc.reqs = append(rc.reqs, req)
		rc.mu.Unlock()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if respond != nil {
			respond(sw, r, i, req)
		}
		if sw.status >= 200 && sw.status < 300 {
			rc.mu.Lock()
			rc.ok = append(rc.ok, req)
			rc.mu.Unlock()
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() (all, ok []request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs), slices.Clone(rc.ok)
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// fastOptions retries quickly, so failure paths take milliseconds.
func fastOptions(hooks ...Webhook) Options {
	return Options{
		Webhooks:    hooks,
		MaxAttempts: 3,
		MinBackoff:  time.Millisecond,
		MaxBackoff:  5 * time.Millisecond,
	}
}

// closeOK closes n, failing the test if that does not finish in time.
func closeOK(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// hang returns a respond func that blocks until release is closed (or the
// client gives up), and reports each arrival on started.
func hang(t *testing.T) (respond func(http.ResponseWriter, *http.Request, int, request), started chan int, release chan struct{}) {
	started = make(chan int, 100)
	release = make(chan struct{})
	// Cleanups run last-registered first: this one runs before the
	// server's Close, which waits for its handlers.
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return func(w http.ResponseWriter, r *http.Request, i int, _ request) {
		started <- i
		select {
		case <-release:
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}, started, release
}

func waitStarted(t *testing.T, started chan int) {
	t.Helper()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("receiver saw no request")
	}
}

func TestSignVerify(t *testing.T) {
	secret := []byte("k3y")
	body := []byte(`{"event_type":"volume.create.end"}`)
	ts := "1700000000"
	good := Sign(secret, ts, body)
	if !strings.HasPrefix(good, "sha256=") || len(good) != len("sha256=")+64 {
		t.Fatalf("Sign = %q, want sha256=<64 hex>", good)
	}
	tests := []struct {
		name   string
		secret []byte
		ts     string
		body   []byte
		sig    string
		want   bool
	}{
		{"valid", secret, ts, body, good, true},
		{"tampered body", secret, ts, []byte(`{"event_type":"volume.delete.end"}`), good, false},
		{"body with a byte appended", secret, ts, append(slices.Clone(body), ' '), good, false},
		{"tampered timestamp", secret, "1700000001", body, good, false},
		{"timestamp moved into body", secret, "170000000", []byte("0." + string(body)), good, false},
		{"wrong secret", []byte("other"), ts, body, good, false},
		{"no prefix", secret, ts, body, strings.TrimPrefix(good, "sha256="), false},
		{"upper-case hex", secret, ts, body, "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), false},
		{"truncated", secret, ts, body, good[:len(good)-2], false},
		{"empty", secret, ts, body, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Verify(tc.secret, tc.ts, tc.body, tc.sig); got != tc.want {
				t.Errorf("Verify = %v, want %v", got, tc.want)
			}
		})
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestShape(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	secret := []byte("webhook-secret")
	tests := []struct {
		name         string
		in           Event
		wantPriority string
		wantID       string // "" means a generated UUID
		wantTime     time.Time
	}{
		{"defaults filled", Event{Type: "volume.create.end", ProjectID: "p1", Payload: map[string]any{"id": "v1", "size": 10}},
			PriorityInfo, "", now},
		{"error type", Event{Type: "volume.create.error", ProjectID: "p1", Payload: map[string]any{"id": "v1"}},
			PriorityError, "", now},
		{"caller's fields kept", Event{ID: "msg-1", Type: "backup.create.end", Priority: "WARN", Timestamp: now.Add(-time.Hour)},
			"WARN", "msg-1", now.Add(-time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := serve(t, nil)
			n := New(Options{Webhooks: []Webhook{{URL: rc.URL, Secret: secret}}, Now: func() time.Time { return now }})
			n.Notify(t.Context(), tc.in)
			closeOK(t, n)

			all, _ := rc.requests()
			if len(all) != 1 {
				t.Fatalf("receiver saw %d requests, want 1", len(all))
			}
			r := all[0]
			e := r.event(t)
			h := r.header
			if got := h.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := h.Get(HeaderEvent); got != tc.in.Type {
				t.Errorf("%s = %q, want %q", HeaderEvent, got, tc.in.Type)
			}
			if got := h.Get(HeaderDelivery); got != e.ID {
				t.Errorf("%s = %q, body's message_id %q", HeaderDelivery, got, e.ID)
			}
			if tc.wantID == "" && !uuidRE.MatchString(e.ID) {
				t.Errorf("generated ID %q is not a v4 UUID", e.ID)
			} else if tc.wantID != "" && e.ID != tc.wantID {
				t.Errorf("ID = %q, want %q", e.ID, tc.wantID)
			}
			ts := h.Get(HeaderTimestamp)
			if ts != strconv.FormatInt(now.Unix(), 10) {
				t.Errorf("%s = %q, want %d", HeaderTimestamp, ts, now.Unix())
			}
			if !Verify(secret, ts, r.body, h.Get(HeaderSignature)) {
				t.Errorf("signature %q does not verify", h.Get(HeaderSignature))
			}
			if e.Priority != tc.wantPriority {
				t.Errorf("priority = %q, want %q", e.Priority, tc.wantPriority)
			}
			if !e.Timestamp.Equal(tc.wantTime) {
				t.Errorf("timestamp = %v, want %v", e.Timestamp, tc.wantTime)
			}
			if e.Type != tc.in.Type || e.ProjectID != tc.in.ProjectID || e.Payload["id"] != tc.in.Payload["id"] {
				t.Errorf("body %s does not match %+v", r.body, tc.in)
			}
		})
	}
}

func TestNoSecretNoSignature(t *testing.T) {
	rc := serve(t, nil)
	n := New(Options{Webhooks: []Webhook{{URL: rc.URL}}})
	n.Notify(t.Context(), Event{Type: "volume.create.end"})
	closeOK(t, n)
	all, _ := rc.requests()
	if len(all) != 1 || all[0].header.Get(HeaderSignature) != "" {
		t.Fatalf("want one unsigned request, got %d, signature %q", len(all), all[0].header.Get(HeaderSignature))
	}
}

func TestStatusHandling(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int // answered in turn; the last repeats
		want     Stats
		attempts int
	}{
		{"200 delivered", []int{200}, Stats{Delivered: 1}, 1},
		{"204 delivered", []int{204}, Stats{Delivered: 1}, 1},
		{"500 retried then delivered once", []int{500, 500, 200}, Stats{Delivered: 1, Retries: 2}, 3},
		{"408 retried", []int{408, 200}, Stats{Delivered: 1, Retries: 1}, 2},
		{"429 retried", []int{429, 200}, Stats{Delivered: 1, Retries: 1}, 2},
		{"502 retried", []int{502, 200}, Stats{Delivered: 1, Retries: 1}, 2},
		{"503 retried", []int{503, 200}, Stats{Delivered: 1, Retries: 1}, 2},
		{"400 not retried", []int{400}, Stats{Failed: 1}, 1},
		{"401 not retried", []int{401}, Stats{Failed: 1}, 1},
		{"404 not retried", []int{404}, Stats{Failed: 1}, 1},
		{"410 not retried", []int{410}, Stats{Failed: 1}, 1},
		{"422 not retried", []int{422}, Stats{Failed: 1}, 1},
		{"redirect not followed", []int{307}, Stats{Failed: 1}, 1},
		{"gives up after MaxAttempts", []int{500}, Stats{Failed: 1, Retries: 2}, 3},
		{"gives up after MaxAttempts of 429", []int{429}, Stats{Failed: 1, Retries: 2}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := serve(t, func(w http.ResponseWriter, _ *http.Request, i int, _ request) {
				code := tc.statuses[min(i, len(tc.statuses)-1)]
				if code/100 == 3 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(code)
			})
			n := New(fastOptions(Webhook{URL: rc.URL}))
			n.Notify(t.Context(), Event{Type: "snapshot.delete.end", Payload: map[string]any{"id": "s1"}})
			closeOK(t, n)

			if got := n.Stats(); got != tc.want {
				t.Errorf("Stats = %+v, want %+v", got, tc.want)
			}
			all, ok := rc.requests()
			if len(all) != tc.attempts {
				t.Errorf("receiver saw %d attempts, want %d", len(all), tc.attempts)
			}
			if len(ok) != int(tc.want.Delivered) {
				t.Errorf("receiver accepted %d attempts, want %d", len(ok), tc.want.Delivered)
			}
			for _, r := range all {
				if r.header.Get(HeaderDelivery) != all[0].header.Get(HeaderDelivery) || !bytes.Equal(r.body, all[0].body) {
					t.Errorf("retry differs from first attempt: delivery %q body %s, first %q %s",
						r.header.Get(HeaderDelivery), r.body, all[0].header.Get(HeaderDelivery), all[0].body)
				}
			}
		})
	}
}

func TestTransportErrorRetried(t *testing.T) {
	rc := serve(t, nil)
	url := rc.URL
	rc.Close() // nothing listens there now
	n := New(fastOptions(Webhook{URL: url}))
	n.Notify(t.Context(), Event{Type: "volume.create.start"})
	closeOK(t, n)
	if got, want := n.Stats(), (Stats{Failed: 1, Retries: 2}); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestOrderUnderRetries(t *testing.T) {
	// The first attempt at every event fails, alternately with a 500 and
	// a dropped connection; the second succeeds.
	var mu sync.Mutex
	seen := map[string]bool{}
	rc := serve(t, func(w http.ResponseWriter, _ *http.Request, i int, r request) {
		mu.Lock()
		first := !seen[r.header.Get(HeaderDelivery)]
		seen[r.header.Get(HeaderDelivery)] = true
		mu.Unlock()
		switch {
		case !first:
		case i%2 == 0:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			panic(http.ErrAbortHandler) // the client sees a transport error
		}
	})
	n := New(fastOptions(Webhook{URL: rc.URL}))
	const events = 20
	for i := range events {
		n.Notify(t.Context(), Event{Type: "volume.create.end", Payload: map[string]any{"seq": i}})
	}
	closeOK(t, n)

	if got, want := n.Stats(), (Stats{Delivered: events, Retries: events}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	_, ok := rc.requests()
	var order []int
	for _, r := range ok {
		order = append(order, r.seq(t))
	}
	if want := slices.Collect(func(yield func(int) bool) {
		for i := range events {
			yield(i)
		}
	}); !slices.Equal(order, want) {
		t.Errorf("delivered in order %v, want %v", order, want)
	}
}

func TestQueueOverflowDropsOldest(t *testing.T) {
	respond, started, release := hang(t)
	rc := serve(t, func(w http.ResponseWriter, r *http.Request, i int, req request) {
		if i == 0 {
			respond(w, r, i, req)
		}
	})
	opts := fastOptions(Webhook{URL: rc.URL})
	opts.QueueSize = 3
	n := New(opts)

	n.Notify(t.Context(), Event{Type: "volume.create.end", Payload: map[string]any{"seq": 0}})
	waitStarted(t, started) // event 0 is in flight, out of the queue

	start := time.Now()
	for i := 1; i <= 10; i++ {
		n.Notify(t.Context(), Event{Type: "volume.create.end", Payload: map[string]any{"seq": i}})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("10 Notify calls against a hung receiver took %v", d)
	}
	if got := n.Stats().Dropped; got != 7 {
		t.Errorf("Dropped = %d, want 7 (events 1-7)", got)
	}

	close(release)
	closeOK(t, n)
	_, ok := rc.requests()
	var order []int
	for _, r := range ok {
		order = append(order, r.seq(t))
	}
	if want := []int{0, 8, 9, 10}; !slices.Equal(order, want) {
		t.Errorf("delivered %v, want %v", order, want)
	}
	if got, want := n.Stats(), (Stats{Delivered: 4, Dropped: 7}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestCloseDeliversQueued(t *testing.T) {
	// The receiver holds the first delivery until Close has begun, so the
	// other events are certainly still queued when Close is called.
	var n *Notifier
	rc := serve(t, func(_ http.ResponseWriter, _ *http.Request, i int, _ request) {
		if i == 0 {
			<-n.closing
		}
	})
	n = New(fastOptions(Webhook{URL: rc.URL}))
	const events = 10
	for i := range events {
		n.Notify(t.Context(), Event{Type: "backup.create.end", Payload: map[string]any{"seq": i}})
	}
	closeOK(t, n)
	if _, ok := rc.requests(); len(ok) != events {
		t.Errorf("receiver got %d events, want %d", len(ok), events)
	}

	// Closed: events are no longer delivered, and a second Close is fine.
	n.Notify(t.Context(), Event{Type: "backup.delete.end"})
	closeOK(t, n)
	if got, want := n.Stats(), (Stats{Delivered: events, Dropped: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if all, _ := rc.requests(); len(all) != events {
		t.Errorf("receiver saw %d requests after Close, want %d", len(all), events)
	}
}

func TestCloseGivesUp(t *testing.T) {
	tests := []struct {
		name    string
		respond func(t *testing.T) (func(http.ResponseWriter, *http.Request, int, request), chan int)
		ctx     func(t *testing.T) context.Context
		wantErr error
	}{
		{
			name: "request in flight, ctx already cancelled",
			respond: func(t *testing.T) (func(http.ResponseWriter, *http.Request, int, request), chan int) {
				respond, started, _ := hang(t)
				return respond, started
			},
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				return ctx
			},
			wantErr: context.Canceled,
		},
		{
			name: "waiting an hour to retry, ctx times out",
			respond: func(t *testing.T) (func(http.ResponseWriter, *http.Request, int, request), chan int) {
				started := make(chan int, 100)
				return func(w http.ResponseWriter, _ *http.Request, i int, _ request) {
					started <- i
					w.Header().Set("Retry-After", "3600")
					w.WriteHeader(http.StatusServiceUnavailable)
				}, started
			},
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
				t.Cleanup(cancel)
				return ctx
			},
			wantErr: context.DeadlineExceeded,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			respond, started := tc.respond(t)
			rc := serve(t, respond)
			opts := fastOptions(Webhook{URL: rc.URL})
			opts.MaxBackoff = time.Hour
			n := New(opts)
			const events = 5
			for range events {
				n.Notify(t.Context(), Event{Type: "backup.restore.start"})
			}
			waitStarted(t, started)

			start := time.Now()
			err := n.Close(tc.ctx(t))
			if d := time.Since(start); d > time.Second {
				t.Errorf("Close took %v", d)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Close = %v, want %v", err, tc.wantErr)
			}
			if got, want := n.Stats().Abandoned, uint64(events); got != want {
				t.Errorf("Abandoned = %d, want %d (stats %+v)", got, want, n.Stats())
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter func() string
		maxBackoff time.Duration
		minGap     time.Duration
		maxGap     time.Duration
	}{
		// The backoff alone would wait at most 1µs: a longer gap shows
		// Retry-After was honoured, a gap under 1 s that it was capped.
		{"429 seconds, capped", 429, func() string { return "1" }, 150 * time.Millisecond, 150 * time.Millisecond, 900 * time.Millisecond},
		{"503 seconds, capped", 503, func() string { return "2" }, 100 * time.Millisecond, 100 * time.Millisecond, 900 * time.Millisecond},
		{"503 HTTP date, capped", 503, func() string { return time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat) },
			100 * time.Millisecond, 100 * time.Millisecond, 900 * time.Millisecond},
		{"429 zero", 429, func() string { return "0" }, time.Second, 0, 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := serve(t, func(w http.ResponseWriter, _ *http.Request, i int, _ request) {
				if i == 0 {
					w.Header().Set("Retry-After", tc.retryAfter())
					w.WriteHeader(tc.status)
				}
			})
			opts := fastOptions(Webhook{URL: rc.URL})
			opts.MinBackoff, opts.MaxBackoff = time.Microsecond, tc.maxBackoff
			n := New(opts)
			n.Notify(t.Context(), Event{Type: "volume.create.end"})
			closeOK(t, n)

			all, ok := rc.requests()
			if len(all) != 2 || len(ok) != 1 {
				t.Fatalf("receiver saw %d attempts, accepted %d; want 2, 1", len(all), len(ok))
			}
			if gap := all[1].at.Sub(all[0].at); gap < tc.minGap || gap > tc.maxGap {
				t.Errorf("retried after %v, want %v to %v", gap, tc.minGap, tc.maxGap)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"soon", 0, false},
		{"-1", 0, false},
		{"0", 0, true},
		{" 7 ", 7 * time.Second, true},
		{"99999999999999", 24 * time.Hour, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range tests {
		got, ok := retryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
	}{
		{"defaults", 200 * time.Millisecond, 30 * time.Second},
		{"min above max", time.Minute, time.Second},
		{"huge", time.Duration(1) << 61, time.Duration(1<<63 - 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := &Notifier{opts: Options{MinBackoff: tc.min, MaxBackoff: tc.max}}
			for attempt := 1; attempt <= 100; attempt++ {
				ceiling := tc.max
				if attempt < 40 && tc.min <= tc.max>>(attempt-1) {
					ceiling = tc.min << (attempt - 1)
				}
				for range 20 {
					if d := n.backoff(attempt); d < 0 || d > ceiling {
						t.Fatalf("backoff(%d) = %v, want 0 to %v", attempt, d, ceiling)
					}
				}
			}
		})
	}
}

func TestTwoWebhooks(t *testing.T) {
	secrets := [][]byte{[]byte("first-secret"), []byte("second-secret")}
	var rcs []*receiver
	var hooks []Webhook
	for _, s := range secrets {
		rc := serve(t, nil)
		rcs = append(rcs, rc)
		hooks = append(hooks, Webhook{URL: rc.URL, Secret: s})
	}
	n := New(fastOptions(hooks...))
	const events = 3
	for i := range events {
		n.Notify(t.Context(), Event{Type: "backup.restore.end", Payload: map[string]any{"seq": i}})
	}
	closeOK(t, n)

	if got, want := n.Stats(), (Stats{Delivered: 2 * events}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	for k, rc := range rcs {
		_, ok := rc.requests()
		if len(ok) != events {
			t.Fatalf("webhook %d got %d events, want %d", k, len(ok), events)
		}
		for i, r := range ok {
			if r.seq(t) != i {
				t.Errorf("webhook %d: event %d has seq %d", k, i, r.seq(t))
			}
			ts, sig := r.header.Get(HeaderTimestamp), r.header.Get(HeaderSignature)
			if !Verify(secrets[k], ts, r.body, sig) {
				t.Errorf("webhook %d: signature does not verify with its secret", k)
			}
			if Verify(secrets[1-k], ts, r.body, sig) {
				t.Errorf("webhook %d: signature verifies with the other webhook's secret", k)
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the handler's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestLogging(t *testing.T) {
	const (
		secret   = "s3cret-hmac-key"
		password = "hunter2-url-password"
		token    = "query-token-value"
	)
	rc := serve(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ request) {
		w.WriteHeader(http.StatusForbidden)
	})
	hookURL := strings.Replace(rc.URL, "http://", "http://user:"+password+"@", 1) + "/hook?token=" + token
	var logs syncBuffer
	n := New(Options{
		Webhooks: []Webhook{{URL: hookURL, Secret: []byte(secret)}},
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	n.Notify(t.Context(), Event{Type: "volume.create.error", ProjectID: "proj-9", Payload: map[string]any{"id": "vol-123"}})
	n.Notify(t.Context(), Event{Type: "volume.create.end", ProjectID: "proj-9", Payload: map[string]any{"id": "vol-456"}})
	closeOK(t, n)
	out := logs.String()
	t.Log(out)

	for _, want := range []string{
		"level=ERROR msg=notification event_type=volume.create.error project_id=proj-9 id=vol-123",
		"level=INFO msg=notification event_type=volume.create.end project_id=proj-9 id=vol-456",
		"level=WARN", rc.Listener.Addr().String() + "/hook", "403 Forbidden",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for _, bad := range []string{secret, hex.EncodeToString([]byte(secret)), password, token} {
		if strings.Contains(out, bad) {
			t.Errorf("log contains %q", bad)
		}
	}
	if got := n.Stats().Failed; got != 2 {
		t.Errorf("Failed = %d, want 2", got)
	}
}

func TestUndeliverableEvents(t *testing.T) {
	rc := serve(t, nil)
	n := New(fastOptions(Webhook{URL: rc.URL}))
	n.Notify(t.Context(), Event{Type: "volume.create.end", Payload: map[string]any{"f": func() {}}})
	n.Notify(t.Context(), Event{Type: "volume.create.end\r\nX-Injected: 1"})
	closeOK(t, n)
	if got, want := n.Stats(), (Stats{Failed: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if all, _ := rc.requests(); len(all) != 0 {
		t.Errorf("receiver saw %d requests, want 0", len(all))
	}
}

func TestNoWebhooks(t *testing.T) {
	n := New(Options{})
	n.Notify(t.Context(), Event{Type: "volume.create.end"})
	closeOK(t, n)
	if got := n.Stats(); got != (Stats{}) {
		t.Errorf("Stats = %+v, want zero", got)
	}
}

func TestPayloadReusableAfterNotify(t *testing.T) {
	rc := serve(t, nil)
	n := New(fastOptions(Webhook{URL: rc.URL}))
	p := map[string]any{"id": "v1", "status": "creating"}
	n.Notify(t.Context(), Event{Type: "volume.create.start", Payload: p})
	p["status"] = "available" // would race with delivery if Notify kept p
	closeOK(t, n)
	_, ok := rc.requests()
	if len(ok) != 1 {
		t.Fatalf("receiver got %d events, want 1", len(ok))
	}
	if got := ok[0].event(t).Payload["status"]; got != "creating" {
		t.Errorf("delivered status %v, want creating (the value at Notify)", fmt.Sprint(got))
	}
}
