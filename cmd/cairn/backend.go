package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/limit"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/objstore/metered"
	"github.com/cairnproject/cairn/internal/objstore/retry"
	"github.com/cairnproject/cairn/internal/objstore/s3"
	"github.com/cairnproject/cairn/internal/objstore/swift"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// store is an opened repository location.
type store struct {
	backend objstore.Backend
	// meter counts the requests that reach the store (each retry too).
	meter *metered.Backend
	// margin is how long the store's listings may lag writes: the
	// default consistency margin of a repository created there.
	margin time.Duration
	// remote stores want more requests in flight than a local disk.
	remote bool
}

// openStore turns a repository location into a backend:
//
//	PATH, local:PATH                         a directory
//	s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path-style=true|false&profile=P]
//	swift://CONTAINER[/PREFIX][?region=R]
//
// S3 credentials come from the AWS environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3);
// CAIRN_S3_ENDPOINT and CAIRN_S3_PATH_STYLE set the endpoint and path
// style. Swift credentials come from ST_* or OS_* variables or OS_CLOUD.
// Remote stores are wrapped in the retry policy. create prepares the
// location for init (directory, bucket, container). The caller closes the
// store's backend.
func (a *app) openStore(ctx context.Context, location string, create bool) (*store, error) {
	return a.openLimitedStore(ctx, location, create, nil)
}

// openLimitedStore is openStore with the requests in flight bounded by
// lim (when not nil), which other stores may share: cairn serve gives the
// repositories of all containers of one backup store one limit. The
// limit sits inside the retry policy, so an operation backing off holds
// no slot.
func (a *app) openLimitedStore(ctx context.Context, location string, create bool, lim *limit.Limiter) (*store, error) {
	s, err := a.openLocation(ctx, location, create, lim)
	if err != nil {
		return nil, err
	}
	s.backend = a.hooks.store(s.backend)
	return s, nil
}

// limited wraps be in lim when there is one.
func limited(lim *limit.Limiter, be objstore.Backend) objstore.Backend {
	if lim == nil {
		return be
	}
	return lim.Wrap(be)
}

// openLocation is openLimitedStore without the test hooks.
func (a *app) openLocation(ctx context.Context, location string, create bool, lim *limit.Limiter) (*store, error) {
	if location == "" {
		return nil, usageError{fmt.Errorf("no repository given: use --repo or CAIRN_REPO")}
	}
	scheme, _, found := strings.Cut(location, "://")
	if !found {
		path := strings.TrimPrefix(location, "local:")
		be, err := local.New(path, create)
		if err != nil {
			return nil, err
		}
		m := metered.New(be)
		return &store{backend: limited(lim, m), meter: m}, nil
	}
	u, err := url.Parse(location)
	if err != nil || u.Host == "" {
		return nil, usageError{fmt.Errorf("repository location %q: want %s://NAME[/PREFIX]", location, scheme)}
	}
	q := u.Query()
	prefix := strings.Trim(u.Path, "/")
	policy := retry.Policy{OnRetry: a.logRetry}
	switch scheme {
	case "s3":
		endpoint := q.Get("endpoint")
		if endpoint == "" {
			endpoint = a.getenv("CAIRN_S3_ENDPOINT")
		}
		pathStyle := endpoint != "" // custom endpoints rarely do virtual hosts
		if v := firstNonEmpty(q.Get("path-style"), a.getenv("CAIRN_S3_PATH_STYLE")); v != "" {
			if pathStyle, err = strconv.ParseBool(v); err != nil {
				return nil, usageError{fmt.Errorf("path-style %q: want true or false", v)}
			}
		}
		be, err := s3.New(ctx, s3.Config{
			Bucket: u.Host, Prefix: prefix, Endpoint: endpoint, Region: q.Get("region"),
			PathStyle: pathStyle, Profile: q.Get("profile"), Connections: 2 * a.transfersOr(16), PagePolicy: policy,
		})
		if err != nil {
			return nil, err
		}
		if create {
			if err := policy.Do(ctx, "create bucket", u.Host, be.EnsureBucket); err != nil {
				be.Close()
				return nil, err
			}
		}
		m := metered.New(be)
		return &store{backend: retry.New(limited(lim, m), policy), meter: m, remote: true}, nil
	case "swift":
		var be *swift.Backend
		err := policy.Do(ctx, "authenticate", u.Host, func(ctx context.Context) error {
			var err error
			be, err = swift.New(ctx, swift.Config{Container: u.Host, Prefix: prefix, Region: q.Get("region"),
				Connections: 2 * a.transfersOr(16), PagePolicy: policy, Getenv: a.getenv})
			return err
		})
		if err != nil {
			return nil, err
		}
		if create {
			if err := policy.Do(ctx, "create container", u.Host, be.EnsureContainer); err != nil {
				be.Close()
				return nil, err
			}
		}
		// Swift updates container listings asynchronously under load.
		m := metered.New(be)
		return &store{backend: retry.New(limited(lim, m), policy), meter: m, margin: 30 * time.Second, remote: true}, nil
	default:
		return nil, usageError{fmt.Errorf("repository location %q: unknown scheme %q (want a path, s3:// or swift://)", location, scheme)}
	}
}

// gcParams are the garbage-collection parameters of a new repository in
// the store: the defaults, with the store's listing lag as margin.
func (s *store) gcParams() format.GCParams {
	gc := repo.DefaultGC
	gc.ConsistencyMargin = format.Duration(s.margin)
	return gc
}

func (a *app) transfersOr(def int) int {
	if a.transfers > 0 {
		return a.transfers
	}
	return def
}

func (a *app) logRetry(op, name string, attempt int, delay time.Duration, err error) {
	if a.verbose {
		fmt.Fprintf(a.stderr, "retrying %s %s in %v (attempt %d): %v\n", op, name, delay.Round(time.Millisecond), attempt, err)
	}
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// closeStore closes a store no repository took over (repo.Open and
// repo.Init leave it to the caller when they fail).
func closeStore(be objstore.Backend) { _ = be.Close() }
