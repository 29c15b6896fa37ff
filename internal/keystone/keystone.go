// Package keystone validates OpenStack Keystone (identity v3) tokens as
// keystonemiddleware does: cairn's own service user asks Keystone about
// each token it has not seen lately (GET /v3/auth/tokens, the token in
// X-Subject-Token), and keeps the answer for a bounded time.
package keystone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
)

// DefaultCacheTime is how long a validated token is trusted without
// asking Keystone again, as keystonemiddleware's token_cache_time: a token
// revoked in Keystone stops working here within this time.
const DefaultCacheTime = 5 * time.Minute

// defaultMaxCached bounds the cache of validated tokens.
const defaultMaxCached = 8192

// maxAnswer bounds what is read of one Keystone answer (tokens are asked
// for without their catalog).
const maxAnswer = 1 << 20

// serviceTokenMargin: the service token is renewed this long before it
// expires, so no request carries one that expires on the way.
const serviceTokenMargin = time.Minute

// Config configures a Validator.
type Config struct {
	// AuthURL is Keystone's identity v3 endpoint, http://host:5000/v3.
	AuthURL string
	// Credentials are cairn's service user's.
	Credentials Credentials
	// HTTPClient makes the requests; nil: one with a 30 s timeout.
	HTTPClient *http.Client
	// CacheTime bounds how long a validated token is trusted without
	// asking again; 0: DefaultCacheTime.
	CacheTime time.Duration
	// MaxCached bounds the cache; 0: 8192 tokens.
	MaxCached int
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Validator validates tokens. It is safe for concurrent use.
type Validator struct {
	authURL   string
	creds     Credentials
	hc        *http.Client
	cacheTime time.Duration
	maxCached int
	now       func() time.Time

	// svcSem is held while the service token is read or renewed: one
	// renewal at a time, and a waiter can give up with its context.
	svcSem     chan struct{}
	svcToken   string
	svcExpires time.Time

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	id    cairn.Identity
	until time.Time
}

// New returns a validator for cfg.
func New(cfg Config) (*Validator, error) {
	u, err := url.Parse(cfg.AuthURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keystone url %q: want http(s)://host[:port]/v3: %w", cfg.AuthURL, cairn.ErrInvalid)
	}
	if err := cfg.Credentials.check(); err != nil {
		return nil, err
	}
	v := &Validator{
		authURL:   strings.TrimSuffix(cfg.AuthURL, "/"),
		creds:     cfg.Credentials,
		hc:        cfg.HTTPClient,
		cacheTime: cfg.CacheTime,
		maxCached: cfg.MaxCached,
		now:       cfg.Now,
		svcSem:    make(chan struct{}, 1),
		cache:     map[[32]byte]cached{},
	}
	if !strings.HasSuffix(v.authURL, "/v3") {
		v.authURL += "/v3"
	}
	if v.hc == nil {
		v.hc = &http.Client{Timeout: 30 * time.Second}
	}
	if v.cacheTime <= 0 {
		v.cacheTime = DefaultCacheTime
	}
	if v.maxCached <= 0 {
		v.maxCached = defaultMaxCached
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Validate returns who token belongs to. A token Keystone does not know,
// has expired or is not scoped to a project is cairn.ErrUnauthenticated;
// Keystone unreachable, or refusing cairn's service user, is
// cairn.ErrUnavailable.
func (v *Validator) Validate(ctx context.Context, token string) (cairn.Identity, error) {
	if token == "" {
		return cairn.Identity{}, fmt.Errorf("empty token: %w", cairn.ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte(token))
	now := v.now()
	v.mu.Lock()
	c, ok := v.cache[key]
	v.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.id, nil
	}
	id, err := v.validate(ctx, token)
	if err != nil {
		return cairn.Identity{}, err
	}
	until := now.Add(v.cacheTime)
	if id.ExpiresAt.Before(until) {
		until = id.ExpiresAt
	}
	v.mu.Lock()
	if len(v.cache) >= v.maxCached {
		for k, c := range v.cache {
			if !now.Before(c.until) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= v.maxCached {
			clear(v.cache)
		}
	}
	v.cache[key] = cached{id: id, until: until}
	v.mu.Unlock()
	return id, nil
}

// validate asks Keystone, renewing the service token once if Keystone
// refuses it (it may have been revoked before its expiry).
func (v *Validator) validate(ctx context.Context, token string) (cairn.Identity, error) {
	for attempt := 0; ; attempt++ {
		svc, err := v.serviceToken(ctx, attempt > 0)
		if err != nil {
			return cairn.Identity{}, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.authURL+"/auth/tokens?nocatalog", nil)
		if err != nil {
			return cairn.Identity{}, fmt.Errorf("keystone request: %w", err)
		}
		req.Header.Set("X-Auth-Token", svc)
		req.Header.Set("X-Subject-Token", token)
		req.Header.Set("Accept", "application/json")
		resp, err := v.hc.Do(req)
		if err != nil {
			return cairn.Identity{}, fmt.Errorf("keystone: %w: %w", err, cairn.ErrUnavailable)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
		if err != nil {
			return cairn.Identity{}, fmt.Errorf("keystone answer: %w: %w", err, cairn.ErrUnavailable)
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			id, err := ParseToken(body)
			if err != nil {
				return cairn.Identity{}, err
			}
			if !v.now().Before(id.ExpiresAt) {
				return cairn.Identity{}, fmt.Errorf("token expired at %s: %w", id.ExpiresAt.Format(time.RFC3339), cairn.ErrUnauthenticated)
			}
			return id, nil
		case resp.StatusCode == http.StatusNotFound:
			return cairn.Identity{}, fmt.Errorf("token not valid (unknown, revoked or expired): %w", cairn.ErrUnauthenticated)
		case (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && attempt == 0:
			continue
		default:
			return cairn.Identity{}, fmt.Errorf("keystone validating a token: %s: %s: %w", resp.Status, excerpt(body), cairn.ErrUnavailable)
		}
	}
}

// serviceToken returns cairn's own token, asking for a new one when it
// is missing, about to expire, or renew is set.
func (v *Validator) serviceToken(ctx context.Context, renew bool) (string, error) {
	select {
	case v.svcSem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("keystone service token: %w", ctx.Err())
	}
	defer func() { <-v.svcSem }()
	if !renew && v.svcToken != "" && v.now().Add(serviceTokenMargin).Before(v.svcExpires) {
		return v.svcToken, nil
	}
	v.svcToken = ""
	body, err := json.Marshal(v.creds.authRequest())
	if err != nil {
		return "", fmt.Errorf("keystone auth request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.authURL+"/auth/tokens?nocatalog", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("keystone request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := v.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("keystone: %w: %w", err, cairn.ErrUnavailable)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("keystone answer: %w: %w", err, cairn.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusCreated {
		// Cairn's own credentials failing is the operator's problem, not
		// the caller's: 503, with Keystone's reason in the log.
		return "", fmt.Errorf("keystone refused cairn's service user: %s: %s: %w", resp.Status, excerpt(answer), cairn.ErrUnavailable)
	}
	tok := resp.Header.Get("X-Subject-Token")
	if tok == "" {
		return "", fmt.Errorf("keystone issued no X-Subject-Token: %w", cairn.ErrUnavailable)
	}
	var a struct {
		Token struct {
			ExpiresAt string `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return "", fmt.Errorf("keystone service token answer: %w: %w", err, cairn.ErrUnavailable)
	}
	exp, err := time.Parse(time.RFC3339Nano, a.Token.ExpiresAt)
	if err != nil {
		return "", fmt.Errorf("keystone service token expires_at %q: %w", a.Token.ExpiresAt, cairn.ErrUnavailable)
	}
	v.svcToken, v.svcExpires = tok, exp
	return tok, nil
}

// ParseToken reads Keystone's answer about a token (GET /v3/auth/tokens).
// A token not scoped to a project is cairn.ErrUnauthenticated: cairn's
// resources all belong to projects. A malformed answer is
// cairn.ErrUnavailable: it is Keystone's fault, not the caller's.
func ParseToken(body []byte) (cairn.Identity, error) {
	type named struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	var a struct {
		Token *struct {
			ExpiresAt string  `json:"expires_at"`
			User      named   `json:"user"`
			Project   *named  `json:"project"`
			Roles     []named `json:"roles"`
		} `json:"token"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return cairn.Identity{}, fmt.Errorf("keystone token answer: %w: %w", err, cairn.ErrUnavailable)
	}
	t := a.Token
	if t == nil {
		return cairn.Identity{}, fmt.Errorf("keystone token answer has no token: %w", cairn.ErrUnavailable)
	}
	exp, err := time.Parse(time.RFC3339Nano, t.ExpiresAt)
	if err != nil {
		return cairn.Identity{}, fmt.Errorf("keystone token expires_at %q: %w", t.ExpiresAt, cairn.ErrUnavailable)
	}
	if t.User.ID == "" {
		return cairn.Identity{}, fmt.Errorf("keystone token answer names no user: %w", cairn.ErrUnavailable)
	}
	if t.Project == nil || t.Project.ID == "" {
		return cairn.Identity{}, fmt.Errorf("token is not scoped to a project (ask Keystone for a project-scoped token): %w", cairn.ErrUnauthenticated)
	}
	id := cairn.Identity{UserID: t.User.ID, UserName: t.User.Name, ProjectID: t.Project.ID,
		ProjectName: t.Project.Name, ExpiresAt: exp.UTC()}
	for _, r := range t.Roles {
		if r.Name != "" {
			id.Roles = append(id.Roles, strings.ToLower(r.Name))
		}
	}
	return id, nil
}

// excerpt is the start of an error answer, for the log.
func excerpt(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
