// Package notify sends the block storage service's notifications (event
// types like OpenStack Cinder's: "volume.create.start",
// "volume.create.end", "backup.restore.end", "volume.create.error") to
// webhooks, and logs every one.
//
// Delivery is asynchronous and at-least-once: Notify only queues, and one
// goroutine per webhook posts that webhook's events in order, retrying an
// event (with the same X-Cairn-Delivery ID, so receivers can deduplicate)
// before it sends the next. A webhook that cannot keep up loses its
// oldest queued events rather than slowing the service down.
//
// Each request is signed: X-Cairn-Signature is "sha256=" and the hex
// HMAC-SHA256, keyed with the webhook's secret, of X-Cairn-Timestamp, a
// dot, and the body. Receivers check it with Verify, and should reject
// timestamps too far from their clock to stop replays.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	randv2 "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Priorities of events.
const (
	PriorityInfo  = "INFO"
	PriorityError = "ERROR"
)

// Request headers of a delivery.
const (
	HeaderEvent     = "X-Cairn-Event"
	HeaderDelivery  = "X-Cairn-Delivery"
	HeaderTimestamp = "X-Cairn-Timestamp"
	HeaderSignature = "X-Cairn-Signature"
)

// Event is one notification.
type Event struct {
	// ID is filled by Notify if empty, with a random UUID. It is sent as
	// X-Cairn-Delivery on every attempt, so receivers can deduplicate.
	ID string `json:"message_id"`
	// Type is what happened, e.g. "backup.create.end".
	Type string `json:"event_type"`
	// Priority is filled by Notify if empty: "ERROR" for types ending in
	// ".error", else "INFO".
	Priority  string `json:"priority"`
	ProjectID string `json:"project_id"`
	// Timestamp is filled by Notify with Options.Now() if zero.
	Timestamp time.Time `json:"timestamp"`
	// Payload holds the resource's fields; its "id" is logged.
	Payload map[string]any `json:"payload"`
}

// Webhook is a receiver of every event.
type Webhook struct {
	URL string
	// Secret is the HMAC-SHA256 key of X-Cairn-Signature. A webhook
	// without one gets no signature header: a signature under an empty
	// key would prove nothing.
	Secret []byte
}

// Options configure a Notifier. Zero fields take the defaults noted.
type Options struct {
	Webhooks []Webhook
	// Logger hears every event (Info, or Error for "*.error" types, with
	// its type, project and payload "id") and every delivery given up
	// (Warn, with the webhook's URL, never its secret). Default: discard.
	Logger *slog.Logger
	// Client posts the events. Default: a 10 s timeout per attempt, and
	// redirects are not followed (a 3xx is a permanent failure), so an
	// event and its signature go only where they were configured to.
	Client *http.Client
	// MaxAttempts bounds the attempts at one delivery, the first
	// included (default 8). Between attempts the delay is drawn
	// uniformly from [0, min(MaxBackoff, MinBackoff·2^(retry-1))] (full
	// jitter, so webhooks that failed together do not retry together),
	// unless a 429 or 503 says Retry-After, which is honoured up to
	// MaxBackoff.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the delays (defaults 200 ms, 30 s).
	MinBackoff, MaxBackoff time.Duration
	// QueueSize bounds each webhook's queue of undelivered events
	// (default 1024). When it is full the oldest queued event is dropped
	// (and counted): Notify never waits for a receiver.
	QueueSize int
	// Now is the clock of event timestamps and X-Cairn-Timestamp
	// (default time.Now).
	Now func() time.Time
}

// Stats counts deliveries, one per event and webhook, since New.
type Stats struct {
	// Delivered: a 2xx answered.
	Delivered uint64
	// Failed: given up, after a permanent failure (a 4xx other than 408
	// and 429, a 3xx, an event that cannot be encoded) or MaxAttempts.
	Failed uint64
	// Dropped: pushed out of a full queue, or notified after Close.
	Dropped uint64
	// Retries: attempts after the first.
	Retries uint64
	// Abandoned: still queued or in flight when a Close's context ended.
	Abandoned uint64
}

// Notifier logs events and delivers them to webhooks. It is safe for
// concurrent use. Close it to deliver what is queued and stop its
// goroutines.
type Notifier struct {
	opts  Options
	log   *slog.Logger
	hooks []*hook

	// mu orders Notify's enqueues before Close: once closed is set no
	// event is queued, so a worker that finds its queue empty after
	// closing is closed may exit.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{}

	// abandon is cancelled when a Close gives up: it aborts requests and
	// backoff sleeps, and the workers count what is left as abandoned.
	abandon context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed when every worker has exited

	delivered, failed, dropped, retries, abandoned atomic.Uint64
}

// hook is one webhook and its queue.
type hook struct {
	url    string
	logURL string // url without password or query, for logs
	secret []byte

	mu    sync.Mutex
	queue []item        // FIFO, oldest first
	wake  chan struct{} // capacity 1: "the queue may have grown"
}

// item is a queued event: its encoding and what logs name it by. The
// Payload map is not kept, so the caller may change it after Notify.
type item struct {
	id, typ string
	body    []byte
}

// New returns a Notifier that delivers to opts.Webhooks, with a goroutine
// per webhook.
func New(opts Options) *Notifier {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 8
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	n := &Notifier{
		opts:    opts,
		log:     opts.Logger,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	n.abandon, n.cancel = context.WithCancel(context.Background())
	for _, w := range opts.Webhooks {
		n.hooks = append(n.hooks, &hook{
			url:    w.URL,
			logURL: redact(w.URL),
			secret: bytes.Clone(w.Secret),
			wake:   make(chan struct{}, 1),
		})
	}
	n.opts.Webhooks = nil // n.hooks holds private copies
	var wg sync.WaitGroup
	for _, h := range n.hooks {
		wg.Go(func() { n.run(h) })
	}
	go func() {
		wg.Wait()
		close(n.done)
	}()
	return n
}

// Notify fills e's empty ID, Priority and Timestamp, logs it, and queues
// it for every webhook. It returns at once: it never waits on the network
// or a full queue. The event is encoded before Notify returns, so the
// caller may reuse e.Payload. ctx is used only for the log record (a
// request's context ends before its notifications are delivered). After
// Close, events are logged and counted as dropped.
func (n *Notifier) Notify(ctx context.Context, e Event) {
	if e.ID == "" {
		e.ID = newUUID()
	}
	isError := strings.HasSuffix(e.Type, ".error")
	if e.Priority == "" {
		e.Priority = PriorityInfo
		if isError {
			e.Priority = PriorityError
		}
	}
	if e.Timestamp.IsZero() {
		e.Timestamp = n.opts.Now()
	}
	level := slog.LevelInfo
	if isError || e.Priority == PriorityError {
		level = slog.LevelError
	}
	n.log.Log(ctx, level, "notification",
		"event_type", e.Type, "project_id", e.ProjectID, "id", e.Payload["id"], "message_id", e.ID)
	if len(n.hooks) == 0 {
		return
	}

	body, err := json.Marshal(e)
	if err != nil {
		// A payload value JSON cannot hold (a func, a channel, a NaN) is
		// the caller's bug; no retry can deliver it.
		n.failed.Add(uint64(len(n.hooks)))
		n.log.ErrorContext(ctx, "notification cannot be encoded; not delivered",
			"event_type", e.Type, "message_id", e.ID, "err", err)
		return
	}
	it := item{id: e.ID, typ: e.Type, body: body}

	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.dropped.Add(uint64(len(n.hooks)))
		n.log.WarnContext(ctx, "notifier closed; notification not delivered",
			"event_type", e.Type, "message_id", e.ID)
		return
	}
	for _, h := range n.hooks {
		if old, ok := h.push(it, n.opts.QueueSize); ok {
			n.dropped.Add(1)
			n.log.WarnContext(ctx, "webhook queue full; dropped oldest notification",
				"url", h.logURL, "event_type", old.typ, "message_id", old.id)
		}
	}
}

// Close stops accepting events and waits until every queued event has
// been delivered or given up. If ctx ends first, Close aborts the
// requests in flight, counts what is left as abandoned, and returns
// ctx.Err() if anything was. Either way no goroutine of n outlives Close.
// Close may be called more than once.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.closing)
	}
	n.mu.Unlock()

	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
	}
	before := n.abandoned.Load()
	n.cancel()
	<-n.done // prompt: requests and sleeps watch n.abandon
	if left := n.abandoned.Load() - before; left > 0 {
		n.log.Warn("notifier closed before delivering everything", "abandoned", left)
		return ctx.Err()
	}
	return nil
}

// Stats returns the counts so far.
func (n *Notifier) Stats() Stats {
	return Stats{
		Delivered: n.delivered.Load(),
		Failed:    n.failed.Load(),
		Dropped:   n.dropped.Load(),
		Retries:   n.retries.Load(),
		Abandoned: n.abandoned.Load(),
	}
}

// push queues it, first dropping the oldest event if the queue holds limit;
// it returns the dropped event and whether there was one.
func (h *hook) push(it item, limit int) (item, bool) {
	h.mu.Lock()
	var old item
	full := len(h.queue) >= limit
	if full {
		old = h.queue[0]
		h.queue[0] = item{} // let its body be collected
		h.queue = h.queue[1:]
	}
	h.queue = append(h.queue, it)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return old, full
}

// pop takes the oldest queued event.
func (h *hook) pop() (item, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queue) == 0 {
		return item{}, false
	}
	it := h.queue[0]
	h.queue[0] = item{}
	h.queue = h.queue[1:]
	return it, true
}

// run delivers h's events one at a time, in order, until n is closed and
// h's queue is empty.
func (n *Notifier) run(h *hook) {
	for {
		if it, ok := h.pop(); ok {
			n.deliver(h, it)
			continue
		}
		select {
		case <-h.wake:
		case <-n.closing:
			// Nothing can be queued any more; exit once it is all sent.
			h.mu.Lock()
			empty := len(h.queue) == 0
			h.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// outcome is what one attempt came to.
type outcome int

const (
	delivered outcome = iota
	retry
	permanent
)

// deliver posts it to h until it is delivered, fails permanently, runs
// out of attempts, or n is abandoned; it counts the result.
func (n *Notifier) deliver(h *hook, it item) {
	for attempt := 1; ; attempt++ {
		if n.abandon.Err() != nil {
			n.abandoned.Add(1)
			return
		}
		res, wait, reason := n.attempt(h, it)
		switch {
		case res == delivered:
			n.delivered.Add(1)
			return
		case res == retry && n.abandon.Err() != nil:
			// The failure was Close aborting the request.
			n.abandoned.Add(1)
			return
		case res == permanent || attempt >= n.opts.MaxAttempts:
			n.failed.Add(1)
			n.log.Warn("webhook delivery failed; giving up",
				"url", h.logURL, "event_type", it.typ, "message_id", it.id,
				"attempts", attempt, "reason", reason)
			return
		}
		if wait < 0 {
			wait = n.backoff(attempt)
		}
		n.log.Debug("webhook delivery failed; retrying",
			"url", h.logURL, "event_type", it.typ, "message_id", it.id,
			"attempt", attempt, "delay", wait, "reason", reason)
		t := time.NewTimer(wait)
		select {
		case <-n.abandon.Done():
			t.Stop()
			n.abandoned.Add(1)
			return
		case <-t.C:
		}
		n.retries.Add(1)
	}
}

// attempt posts it to h once. For a retry, wait is the delay the receiver
// asked for (Retry-After, capped at MaxBackoff), or negative for the
// backoff's choice; reason says why the attempt failed.
func (n *Notifier) attempt(h *hook, it item) (res outcome, wait time.Duration, reason string) {
	if !headerSafe(it.typ) || !headerSafe(it.id) {
		return permanent, 0, "event type or ID holds control characters"
	}
	req, err := http.NewRequestWithContext(n.abandon, http.MethodPost, h.url, bytes.NewReader(it.body))
	if err != nil {
		// Not err itself: it quotes the URL, password and all.
		return permanent, 0, "invalid webhook URL"
	}
	ts := strconv.FormatInt(n.opts.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cairn-notify")
	req.Header.Set(HeaderEvent, it.typ)
	req.Header.Set(HeaderDelivery, it.id)
	req.Header.Set(HeaderTimestamp, ts)
	if len(h.secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(h.secret, ts, it.body))
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		// Transport errors (refused, reset, timeout) are usually
		// passing. *url.Error repeats the URL, which may hold a
		// password, so log only its cause.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return retry, -1, err.Error()
	}
	// Drain a little so the connection can be reused; receivers owe us
	// no body.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()

	code := resp.StatusCode
	reason = resp.Status
	switch {
	case code >= 200 && code < 300:
		return delivered, 0, ""
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), n.opts.Now()); ok {
			return retry, min(d, n.opts.MaxBackoff), reason
		}
		return retry, -1, reason
	case code == http.StatusRequestTimeout || code >= 500:
		return retry, -1, reason
	default: // 1xx, 3xx and the other 4xx: repeating will not help
		return permanent, 0, reason
	}
}

// backoff returns the delay after the attempt-th failed attempt: full
// jitter under an exponentially growing ceiling.
func (n *Notifier) backoff(attempt int) time.Duration {
	lo, hi := n.opts.MinBackoff, n.opts.MaxBackoff
	ceiling := hi
	// lo<<shift without overflow: only if it stays within hi.
	if shift := attempt - 1; shift < 63 && lo <= hi>>shift {
		ceiling = lo << shift
	}
	if ceiling < math.MaxInt64 {
		ceiling++ // N's bound is exclusive; the ceiling itself may be drawn
	}
	return randv2.N(ceiling)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > int64(24*time.Hour/time.Second) { // avoid overflow; capped later anyway
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Sign returns the X-Cairn-Signature of a request: "sha256=" and the hex
// HMAC-SHA256, keyed with secret, of timestamp, ".", and body. Signing the
// timestamp too keeps a captured request from being replayed later under
// a fresh one.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is Sign(secret, timestamp, body), in
// time independent of where they differ. It does not judge the
// timestamp's age; receivers should.
func Verify(secret []byte, timestamp string, body []byte, signature string) bool {
	return hmac.Equal([]byte(signature), []byte(Sign(secret, timestamp, body)))
}

// headerSafe reports whether v may be a header value as it is: no
// control characters, which net/http would refuse to send (every attempt
// would fail the same way).
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// newUUID returns a random RFC 4122 version 4 UUID, the shape of the
// block storage API's IDs. (cairn.NewUUID is not used: the root package
// will import this one.)
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails; it crashes the program instead
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// redact returns raw fit for a log: without its password and query (where
// tokens hide), or a placeholder if it does not parse.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Sprintf("<unparsable URL, %d bytes>", len(raw))
	}
	u.RawQuery, u.ForceQuery, u.Fragment = "", false, ""
	return u.Redacted()
}
