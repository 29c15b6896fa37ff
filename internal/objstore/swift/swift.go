// Package swift stores objects in an OpenStack Swift container, through
// the native API (github.com/ncw/swift/v2): Keystone v3 with passwords or
// application credentials, or tempauth v1.
//
// Objects larger than the cluster's max_file_size go up as static large
// objects, their segments in "<container>_segments". Deletes always ask
// for "multipart-manifest=delete", which removes a large object's segments
// and deletes any other object as usual. Failures map to cairn sentinels;
// transient ones wrap cairn.ErrUnavailable for the retry wrapper.
package swift

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/retry"
)

// Config locates a container and says how to authenticate. Empty fields
// are taken from the usual environment: ST_AUTH/ST_USER/ST_KEY (tempauth),
// OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME,
// OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME,
// OS_APPLICATION_CREDENTIAL_ID/SECRET, and from clouds.yaml via OS_CLOUD.
type Config struct {
	Container string
	Prefix    string // "" or a path ending in "/"
	Region    string
	// Connection, when set, is used as given (tests, callers with their
	// own configuration); otherwise one is built from the environment.
	Connection *swift.Connection
	// SegmentSize, when positive, caps the size of a single object below
	// the cluster's own limit (tests use it to exercise large objects).
	SegmentSize int64
	// Connections bounds idle connections kept per host (default 32).
	Connections int
	// PagePolicy retries single listing pages.
	PagePolicy retry.Policy
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
}

// Backend is a container (and prefix) holding objects.
type Backend struct {
	conn     *swift.Connection
	cfg      Config
	maxFile  int64
	segments string
	// transport is the one New built for the connection, whose idle
	// connections Close releases; nil when the caller gave its own.
	transport *http.Transport
	closed    atomic.Bool
}

var _ objstore.Backend = (*Backend)(nil)

// New authenticates and returns a backend for the container. It does not
// create the container; EnsureContainer does.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Container == "" {
		return nil, fmt.Errorf("swift: no container: %w", cairn.ErrInvalid)
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 32
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	conn := cfg.Connection
	if conn == nil {
		var err error
		if conn, err = connectionFromEnv(cfg.Getenv); err != nil {
			return nil, err
		}
	}
	if cfg.Region != "" {
		conn.Region = cfg.Region
	}
	var own *http.Transport
	if conn.Transport == nil {
		own = http.DefaultTransport.(*http.Transport).Clone()
		own.MaxIdleConns = cfg.Connections * 2
		own.MaxIdleConnsPerHost = cfg.Connections
		conn.Transport = own
	}
	conn.Retries = 2 // re-authentication on an expired token; other retries are ours
	if conn.UserAgent == "" {
		conn.UserAgent = "cairn"
	}
	b := &Backend{conn: conn, cfg: cfg, maxFile: 5 << 30, segments: cfg.Container + "_segments", transport: own}
	if err := conn.Authenticate(ctx); err != nil {
		b.Close()
		return nil, b.authError(err)
	}
	if info, err := conn.QueryInfo(ctx); err == nil {
		if sw, ok := info["swift"].(map[string]any); ok {
			if v, ok := sw["max_file_size"].(float64); ok && v > 0 {
				b.maxFile = int64(v)
			}
		}
	}
	if cfg.SegmentSize > 0 && cfg.SegmentSize < b.maxFile {
		b.maxFile = cfg.SegmentSize
	}
	return b, nil
}

// connectionFromEnv builds a connection from OS_*/ST_* variables, or from
// clouds.yaml when OS_CLOUD names a cloud.
func connectionFromEnv(getenv func(string) string) (*swift.Connection, error) {
	conn := &swift.Connection{}
	if cloud := getenv("OS_CLOUD"); cloud != "" {
		if err := applyCloudsYAML(conn, cloud, getenv); err != nil {
			return nil, err
		}
	}
	// Environment variables override clouds.yaml, as in the OpenStack CLI.
	env := &swift.Connection{}
	for _, kv := range []struct {
		dst  *string
		name string
	}{
		{&env.AuthUrl, "ST_AUTH"}, {&env.UserName, "ST_USER"}, {&env.ApiKey, "ST_KEY"},
		{&env.AuthUrl, "OS_AUTH_URL"}, {&env.UserName, "OS_USERNAME"}, {&env.ApiKey, "OS_PASSWORD"},
		{&env.Tenant, "OS_PROJECT_NAME"}, {&env.Tenant, "OS_TENANT_NAME"}, {&env.TenantId, "OS_PROJECT_ID"},
		{&env.Domain, "OS_USER_DOMAIN_NAME"}, {&env.DomainId, "OS_USER_DOMAIN_ID"},
		{&env.TenantDomain, "OS_PROJECT_DOMAIN_NAME"}, {&env.TenantDomainId, "OS_PROJECT_DOMAIN_ID"},
		{&env.Region, "OS_REGION_NAME"},
		{&env.ApplicationCredentialId, "OS_APPLICATION_CREDENTIAL_ID"},
		{&env.ApplicationCredentialName, "OS_APPLICATION_CREDENTIAL_NAME"},
		{&env.ApplicationCredentialSecret, "OS_APPLICATION_CREDENTIAL_SECRET"},
		{&env.StorageUrl, "OS_STORAGE_URL"}, {&env.AuthToken, "OS_AUTH_TOKEN"},
	} {
		if v := getenv(kv.name); v != "" {
			*kv.dst = v
		}
	}
	for _, f := range []struct{ dst, src *string }{
		{&conn.AuthUrl, &env.AuthUrl}, {&conn.UserName, &env.UserName}, {&conn.ApiKey, &env.ApiKey},
		{&conn.Tenant, &env.Tenant}, {&conn.TenantId, &env.TenantId}, {&conn.Domain, &env.Domain},
		{&conn.DomainId, &env.DomainId}, {&conn.TenantDomain, &env.TenantDomain}, {&conn.TenantDomainId, &env.TenantDomainId},
		{&conn.Region, &env.Region}, {&conn.ApplicationCredentialId, &env.ApplicationCredentialId},
		{&conn.ApplicationCredentialName, &env.ApplicationCredentialName},
		{&conn.ApplicationCredentialSecret, &env.ApplicationCredentialSecret},
		{&conn.StorageUrl, &env.StorageUrl}, {&conn.AuthToken, &env.AuthToken},
	} {
		if *f.src != "" {
			*f.dst = *f.src
		}
	}
	if v := getenv("ST_AUTH_VERSION"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("swift: ST_AUTH_VERSION %q: %w", v, cairn.ErrInvalid)
		}
		conn.AuthVersion = n
	}
	if v := getenv("OS_IDENTITY_API_VERSION"); v != "" && getenv("ST_AUTH_VERSION") == "" {
		major, _, _ := strings.Cut(v, ".")
		n, err := strconv.Atoi(major)
		if err != nil {
			return nil, fmt.Errorf("swift: OS_IDENTITY_API_VERSION %q: %w", v, cairn.ErrInvalid)
		}
		conn.AuthVersion = n
	}
	// Domains and application credentials exist only in Keystone v3;
	// without them ncw/swift guesses the version from the URL, and an
	// unversioned URL would be taken for tempauth.
	if conn.AuthVersion == 0 && (conn.Domain != "" || conn.DomainId != "" || conn.TenantDomain != "" ||
		conn.TenantDomainId != "" || conn.ApplicationCredentialId != "" || conn.ApplicationCredentialName != "") {
		conn.AuthVersion = 3
	}
	if conn.AuthVersion == 3 {
		conn.AuthUrl = identityV3URL(conn.AuthUrl)
	}
	if conn.AuthUrl == "" && (conn.StorageUrl == "" || conn.AuthToken == "") {
		return nil, fmt.Errorf("swift: no credentials: set ST_AUTH/ST_USER/ST_KEY, OS_AUTH_URL and OS_USERNAME/OS_PASSWORD or an application credential, or OS_CLOUD: %w", cairn.ErrInvalid)
	}
	return conn, nil
}

// authError maps a failed authentication: two answers mean something
// other than what mapErr would say.
func (b *Backend) authError(err error) error {
	var se *swift.Error
	switch {
	case errors.As(err, &se) && se.StatusCode == 0 && b.conn.AuthToken != "" && b.conn.StorageUrl == "":
		// Keystone issued a token, but its catalog has no endpoint for
		// us: a wrong region, not a transient failure.
		region := "any region"
		if b.conn.Region != "" {
			region = fmt.Sprintf("region %q", b.conn.Region)
		}
		return fmt.Errorf("swift authenticate %s: the service catalog has no object-store endpoint in %s: %w", b.Location(), region, cairn.ErrInvalid)
	case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
		// Not a missing object: Keystone answers 404 for an application
		// credential it does not know, and any server for an auth URL
		// that is not one.
		return fmt.Errorf("swift authenticate %s: %s answered 404: check the auth URL (Keystone v3's ends in /v3) and the application credential ID: %w",
			b.Location(), b.conn.AuthUrl, cairn.ErrDenied)
	}
	return b.mapErr("authenticate", "", err)
}

// identityV3URL adds "/v3" to a Keystone URL without a version, as
// clouds.yaml files often give it (devstack's: auth_url
// http://host/identity, identity_api_version 3): the OpenStack clients
// discover the version, ncw/swift posts to <URL>/auth/tokens as given.
func identityV3URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	path := strings.TrimSuffix(u.Path, "/")
	last := path[strings.LastIndex(path, "/")+1:]
	if len(last) >= 2 && last[0] == 'v' && last[1] >= '0' && last[1] <= '9' {
		return raw
	}
	u.Path = path + "/v3"
	return u.String()
}

// Close implements objstore.Backend: it closes the idle connections of
// the transport New built (not of one the caller's connection had).
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}

// usable returns the error a call must fail with before it starts: the
// context's, or ErrClosed.
func (b *Backend) usable(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return fmt.Errorf("swift %s %s/%s: %w", op, b.Location(), name, objstore.ErrClosed)
	}
	return nil
}

// Location implements objstore.Backend.
func (b *Backend) Location() string {
	loc := strings.TrimSuffix("swift://"+b.cfg.Container+"/"+b.cfg.Prefix, "/")
	if u, err := url.Parse(b.conn.AuthUrl); err == nil && u.Host != "" {
		loc += " at " + u.Host
	}
	return loc
}

func (b *Backend) key(name string) (string, error) {
	if err := objstore.ValidName(name); err != nil {
		return "", err
	}
	return b.cfg.Prefix + name, nil
}

// EnsureContainer creates the container if it does not exist.
func (b *Backend) EnsureContainer(ctx context.Context) error {
	if err := b.conn.ContainerCreate(ctx, b.cfg.Container, nil); err != nil {
		return b.mapErr("create container", "", err)
	}
	return nil
}

// RemoveContainer deletes the container and its segment container, which
// must be empty; a missing one is not an error.
func (b *Backend) RemoveContainer(ctx context.Context) error {
	for _, c := range []string{b.cfg.Container, b.segments} {
		if err := b.conn.ContainerDelete(ctx, c); err != nil && !errors.Is(err, swift.ContainerNotFound) {
			return b.mapErr("delete container "+c, "", err)
		}
	}
	return nil
}

// settle is how long a create-if-absent PUT waits before reading its
// object back: longer than a small PUT takes, so a concurrent PUT that
// also passed If-None-Match has landed and the newest timestamp decides.
const settle = time.Second

// Put implements objstore.Backend. Swift checks If-None-Match without
// serialising concurrent PUTs, so a create-if-absent PUT also reads its
// object back after a moment: the newest write wins, and every other
// writer sees cairn.ErrExists.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.usable(ctx, "put", name); err != nil {
		return err
	}
	if int64(len(data)) > b.maxFile {
		return b.putLarge(ctx, name, key, data)
	}
	h := swift.Headers{"Content-Length": strconv.Itoa(len(data))}
	if opts.IfAbsent {
		h["If-None-Match"] = "*"
	}
	_, err = b.conn.ObjectPut(ctx, b.cfg.Container, key, bytes.NewReader(data), false, "", "application/octet-stream", h)
	if err != nil {
		return b.mapErr("put", name, err)
	}
	if opts.IfAbsent {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settle):
		}
		stored, err := objstore.ReadAll(ctx, b, name, 0, -1)
		if err != nil {
			return err
		}
		if !bytes.Equal(stored, data) {
			return fmt.Errorf("swift put %s/%s: written concurrently by another writer: %w", b.Location(), name, cairn.ErrExists)
		}
	}
	return nil
}

// putLarge uploads data as a static large object.
func (b *Backend) putLarge(ctx context.Context, name, key string, data []byte) error {
	if err := b.conn.ContainerCreate(ctx, b.segments, nil); err != nil {
		return b.mapErr("create segment container", name, err)
	}
	f, err := b.conn.StaticLargeObjectCreateFile(ctx, &swift.LargeObjectOpts{
		Container:        b.cfg.Container,
		ObjectName:       key,
		Flags:            os.O_TRUNC | os.O_CREATE,
		ContentType:      "application/octet-stream",
		ChunkSize:        b.maxFile,
		SegmentContainer: b.segments,
		SegmentPrefix:    key + "/" + strconv.FormatInt(time.Now().UnixNano(), 10),
		NoBuffer:         true,
	})
	if err != nil {
		return b.mapErr("put large", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return b.mapErr("put large", name, err)
	}
	if err := f.CloseWithContext(ctx); err != nil {
		return b.mapErr("put large", name, err)
	}
	return nil
}

// Get implements objstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	if err := b.usable(ctx, "get", name); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("swift: get %s: negative offset: %w", name, cairn.ErrInvalid)
	}
	if length == 0 {
		if _, err := b.Stat(ctx, name); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	h := swift.Headers{}
	if offset > 0 || length > 0 {
		rng := fmt.Sprintf("bytes=%d-", offset)
		if length > 0 {
			rng += strconv.FormatInt(offset+length-1, 10)
		}
		h["Range"] = rng
	}
	f, _, err := b.conn.ObjectOpen(ctx, b.cfg.Container, key, false, h)
	if err != nil {
		var se *swift.Error
		if errors.As(err, &se) && se.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			info, serr := b.Stat(ctx, name)
			if serr != nil {
				return nil, serr
			}
			if offset == info.Size {
				return io.NopCloser(bytes.NewReader(nil)), nil
			}
			return nil, fmt.Errorf("swift: get %s: offset %d beyond size %d: %w", name, offset, info.Size, cairn.ErrInvalid)
		}
		return nil, b.mapErr("get", name, err)
	}
	return objstore.MapReadErrors(f, func(err error) error { return b.mapErr("get", name, err) }), nil
}

// Stat implements objstore.Backend. The modification time comes from
// X-Timestamp, which unlike Last-Modified keeps sub-second precision, as
// listings do.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	key, err := b.key(name)
	if err != nil {
		return objstore.ObjectInfo{}, err
	}
	if err := b.usable(ctx, "stat", name); err != nil {
		return objstore.ObjectInfo{}, err
	}
	info, h, err := b.conn.Object(ctx, b.cfg.Container, key)
	if err != nil {
		return objstore.ObjectInfo{}, b.mapErr("stat", name, err)
	}
	mod := info.LastModified
	if ts, err := strconv.ParseFloat(h["X-Timestamp"], 64); err == nil {
		sec := int64(ts)
		mod = time.Unix(sec, int64((ts-float64(sec))*1e9)).UTC()
	}
	return objstore.ObjectInfo{Name: name, Size: info.Bytes, ModTime: mod}, nil
}

// List implements objstore.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.usable(ctx, "list", prefix); err != nil {
		return err
	}
	marker := ""
	for {
		var page []swift.Object
		err := b.cfg.PagePolicy.Do(ctx, "list", prefix, func(ctx context.Context) error {
			var err error
			page, err = b.conn.Objects(ctx, b.cfg.Container, &swift.ObjectsOpts{Prefix: b.cfg.Prefix + prefix, Marker: marker, Limit: 10000})
			if err != nil {
				return b.mapErr("list", prefix, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, o := range page {
			name := strings.TrimPrefix(o.Name, b.cfg.Prefix)
			if objstore.ValidName(name) != nil {
				continue
			}
			if err := fn(objstore.ObjectInfo{Name: name, Size: o.Bytes, ModTime: o.LastModified}); err != nil {
				return err
			}
		}
		marker = page[len(page)-1].Name
	}
}

// Delete implements objstore.Backend. It deletes plainly, one request: a
// large object's segments are left behind and removed by
// RemoveTemporary, which garbage collection calls.
func (b *Backend) Delete(ctx context.Context, name string) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.usable(ctx, "delete", name); err != nil {
		return err
	}
	if err := b.conn.ObjectDelete(ctx, b.cfg.Container, key); err != nil {
		if err := b.mapErr("delete", name, err); !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
	}
	return nil
}

// DeleteBatch implements objstore.BatchDeleter with the bulk-delete
// middleware; a cluster without it gets one DELETE per object.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := b.usable(ctx, "delete batch", names[0]); err != nil {
		return err
	}
	keys := make([]string, 0, len(names))
	for _, name := range names {
		key, err := b.key(name)
		if err != nil {
			return err
		}
		keys = append(keys, key)
	}
	res, err := b.conn.BulkDelete(ctx, b.cfg.Container, keys)
	if errors.Is(err, swift.Forbidden) && len(res.Errors) == 0 {
		for _, name := range names {
			if err := b.Delete(ctx, name); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return b.mapErr("delete batch", names[0], err)
	}
	for key, e := range res.Errors {
		if !errors.Is(e, swift.ObjectNotFound) {
			return b.mapErr("delete batch", strings.TrimPrefix(key, "/"+b.cfg.Container+"/"), e)
		}
	}
	return nil
}

// RemoveTemporary deletes the segments of large objects that no longer
// exist (deleted, or never completed) and are older than age; it returns
// how many segments it removed.
func (b *Backend) RemoveTemporary(ctx context.Context, age time.Duration) (int, error) {
	if err := b.usable(ctx, "remove temporary", ""); err != nil {
		return 0, err
	}
	// Segments are named "<object key>/<upload nanoseconds>/<n>".
	groups := map[string][]swift.Object{}
	err := b.conn.ObjectsWalk(ctx, b.segments, &swift.ObjectsOpts{Prefix: b.cfg.Prefix}, func(ctx context.Context, opts *swift.ObjectsOpts) (any, error) {
		objs, err := b.conn.Objects(ctx, b.segments, opts)
		for _, o := range objs {
			parts := strings.Split(o.Name, "/")
			if len(parts) < 3 {
				continue
			}
			manifest := strings.Join(parts[:len(parts)-2], "/")
			groups[manifest] = append(groups[manifest], o)
		}
		return objs, err
	})
	if errors.Is(err, swift.ContainerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, b.mapErr("list segments", "", err)
	}
	removed := 0
	cutoff := time.Now().Add(-age)
	for manifest, segs := range groups {
		if _, _, err := b.conn.Object(ctx, b.cfg.Container, manifest); err == nil {
			continue
		} else if !errors.Is(err, swift.ObjectNotFound) {
			return removed, b.mapErr("stat", manifest, err)
		}
		for _, s := range segs {
			if s.LastModified.After(cutoff) {
				continue
			}
			if err := b.conn.ObjectDelete(ctx, b.segments, s.Name); err != nil && !errors.Is(err, swift.ObjectNotFound) {
				return removed, b.mapErr("delete segment", s.Name, err)
			}
			removed++
		}
	}
	return removed, nil
}

// mapErr names the store, operation and object, wraps the matching
// sentinel, and carries no secret.
func (b *Backend) mapErr(op, name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	where := fmt.Sprintf("swift %s %s", op, b.Location())
	if name != "" {
		where += "/" + name
	}
	var se *swift.Error
	if errors.As(err, &se) {
		var sentinel error
		switch code := se.StatusCode; {
		case errors.Is(err, swift.ContainerNotFound) || (code == http.StatusNotFound && op == "put"):
			return fmt.Errorf("%s: container %q does not exist: %w", where, b.cfg.Container, cairn.ErrNotFound)
		case code == http.StatusNotFound:
			sentinel = cairn.ErrNotFound
		case code == http.StatusPreconditionFailed:
			sentinel = cairn.ErrExists
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			sentinel = cairn.ErrDenied
		case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code == 498:
			sentinel = cairn.ErrUnavailable
		case code == 0 && transientNetwork(err):
			sentinel = cairn.ErrUnavailable
		case code >= 400:
			sentinel = cairn.ErrInvalid
		default:
			return fmt.Errorf("%s: %s: %w", where, se.Text, err)
		}
		return fmt.Errorf("%s: %s: %w", where, se.Text, sentinel)
	}
	if transientNetwork(err) {
		return fmt.Errorf("%s: %s: %w", where, shortNetError(err), cairn.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", where, err)
}

func transientNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, swift.TimeoutError)
}

func shortNetError(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		// The address says which endpoint failed: with Keystone it is
		// not the host Location names.
		if oe.Addr != nil {
			return oe.Op + " " + oe.Addr.String() + ": " + oe.Err.Error()
		}
		return oe.Op + " " + oe.Err.Error()
	}
	return err.Error()
}
