// Package s3 stores objects in an S3-compatible bucket (AWS, Ceph RGW,
// Swift's s3api, versitygw, ...).
//
// It sends payloads unsigned and without aws-chunked encoding (some
// S3-compatible stores refuse that), adds Content-MD5 where the protocol
// requires it, and maps every failure to a cairn sentinel error:
// transient ones wrap cairn.ErrUnavailable so the retry wrapper retries
// them; SDK-level retries are off so there is one retry policy.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/retry"
)

// Config locates a bucket and says how to reach it. Empty fields fall back
// to the usual AWS environment (AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL_S3, ...).
type Config struct {
	Bucket    string
	Prefix    string // "" or a path ending in "/"
	Endpoint  string // e.g. http://127.0.0.1:7070; "" for AWS
	Region    string
	PathStyle bool
	Profile   string
	// AccessKey and SecretKey override the credential chain.
	AccessKey, SecretKey string
	// Connections bounds idle connections kept per host (default 32).
	Connections int
	// PagePolicy retries single listing pages (default retry.Policy{}).
	PagePolicy retry.Policy
	// HTTPClient, when set, replaces the default client (tests).
	HTTPClient *http.Client
}

// Backend is a bucket (and prefix) holding objects.
type Backend struct {
	client *s3.Client
	cfg    Config
	// conns are the connections of the HTTP client New built, which
	// Close closes.
	conns  *connTracker
	closed atomic.Bool
	// noConditional is set once the store answered a conditional PUT
	// with 501 Not Implemented (Swift's s3api).
	noConditional atomic.Bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// settle is how long an emulated create-if-absent PUT waits before
// reading its object back, so a concurrent writer's PUT has landed.
const settle = time.Second

var _ objstore.Backend = (*Backend)(nil)

// New connects to the bucket. It does not check that the bucket exists;
// EnsureBucket does.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("s3: no bucket: %w", cairn.ErrInvalid)
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 32
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryMaxAttempts(1), // one retry policy: ours
		config.WithHTTPClient(httpClient(cfg.Connections)),
	}
	if cfg.HTTPClient != nil {
		opts[1] = config.WithHTTPClient(cfg.HTTPClient)
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	conns := &connTracker{conns: map[*trackedConn]struct{}{}}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// The SDK has configured the client it will use (CA bundle,
		// timeouts) and copies its transport on every change: only the
		// dialer that every copy shares sees all the connections.
		if bc, ok := o.HTTPClient.(*awshttp.BuildableClient); ok && cfg.HTTPClient == nil {
			o.HTTPClient = bc.WithTransportOptions(conns.track)
		}
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Backend{client: client, cfg: cfg, conns: conns}, nil
}

// Close implements objstore.Backend: it closes the connections of the
// HTTP client New built (not of one the caller gave), which are all idle
// once every call has returned.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.conns.closeAll()
	return nil
}

// usable returns the error a call must fail with before it starts: the
// context's, or ErrClosed.
func (b *Backend) usable(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return fmt.Errorf("s3 %s %s/%s: %w", op, b.Location(), name, objstore.ErrClosed)
	}
	return nil
}

func httpClient(conns int) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = conns * 2
		t.MaxIdleConnsPerHost = conns
		t.ResponseHeaderTimeout = 2 * time.Minute
	})
}

// unsigned sends the payload as UNSIGNED-PAYLOAD: no SHA-256 of every
// chunk on the CPU, and no aws-chunked encoding for stores that refuse it.
func unsigned(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// Location implements objstore.Backend.
func (b *Backend) Location() string {
	loc := "s3://" + b.cfg.Bucket + "/" + b.cfg.Prefix
	if b.cfg.Endpoint != "" {
		loc += " at " + b.cfg.Endpoint
	}
	return strings.TrimSuffix(loc, "/")
}

func (b *Backend) key(name string) (string, error) {
	if err := objstore.ValidName(name); err != nil {
		return "", err
	}
	return b.cfg.Prefix + name, nil
}

// EnsureBucket creates the bucket if it does not exist.
func (b *Backend) EnsureBucket(ctx context.Context) error {
	_, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.cfg.Bucket)}, closeConnection)
	if err == nil {
		return nil
	}
	if !errors.Is(b.mapErr("head bucket", "", err), cairn.ErrNotFound) {
		return b.mapErr("head bucket", "", err)
	}
	_, err = b.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b.cfg.Bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return b.mapErr("create bucket", "", err)
	}
	return nil
}

// RemoveBucket deletes the (empty) bucket.
func (b *Backend) RemoveBucket(ctx context.Context) error {
	if _, err := b.client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(b.cfg.Bucket)}); err != nil {
		return b.mapErr("delete bucket", "", err)
	}
	return nil
}

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.usable(ctx, "put", name); err != nil {
		return err
	}
	// The checksum makes the store refuse a body cut short: some
	// S3-compatible servers otherwise keep a truncated object when an
	// upload is interrupted, and a chunk must never exist half-written.
	crc := crc32.Checksum(data, castagnoli)
	in := &s3.PutObjectInput{
		Bucket:         aws.String(b.cfg.Bucket),
		Key:            aws.String(key),
		Body:           bytes.NewReader(data),
		ContentLength:  aws.Int64(int64(len(data))),
		ContentType:    aws.String("application/octet-stream"),
		ChecksumCRC32C: aws.String(base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc))),
	}
	if opts.IfAbsent {
		if b.noConditional.Load() {
			return b.putIfAbsentEmulated(ctx, name, in, data)
		}
		in.IfNoneMatch = aws.String("*")
	}
	putOpts := []func(*s3.Options){unsigned}
	if opts.IfAbsent {
		putOpts = append(putOpts, closeConnection)
	}
	if _, err := b.client.PutObject(ctx, in, putOpts...); err != nil {
		if opts.IfAbsent && status(err) == http.StatusNotImplemented {
			b.noConditional.Store(true)
			in.IfNoneMatch = nil
			in.Body = bytes.NewReader(data)
			return b.putIfAbsentEmulated(ctx, name, in, data)
		}
		return b.mapErr("put", name, err)
	}
	return nil
}

// putIfAbsentEmulated stands in for a conditional PUT on stores without
// one: refuse if the object exists, write, wait, read back. Of concurrent
// writers only the one whose write the store kept sees its own bytes.
func (b *Backend) putIfAbsentEmulated(ctx context.Context, name string, in *s3.PutObjectInput, data []byte) error {
	if _, err := b.Stat(ctx, name); err == nil {
		return fmt.Errorf("s3 put %s/%s: %w", b.Location(), name, cairn.ErrExists)
	} else if !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	if _, err := b.client.PutObject(ctx, in, unsigned); err != nil {
		return b.mapErr("put", name, err)
	}
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
		return fmt.Errorf("s3 put %s/%s: written concurrently by another writer: %w", b.Location(), name, cairn.ErrExists)
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
		return nil, fmt.Errorf("s3: get %s: negative offset: %w", name, cairn.ErrInvalid)
	}
	if length == 0 {
		if _, err := b.Stat(ctx, name); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}
	if offset > 0 || length > 0 {
		rng := fmt.Sprintf("bytes=%d-", offset)
		if length > 0 {
			rng += fmt.Sprint(offset + length - 1)
		}
		in.Range = aws.String(rng)
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		if status(err) == http.StatusRequestedRangeNotSatisfiable {
			// Reading at the very end is empty, beyond it is an error.
			info, serr := b.Stat(ctx, name)
			if serr != nil {
				return nil, serr
			}
			if offset == info.Size {
				return io.NopCloser(bytes.NewReader(nil)), nil
			}
			return nil, fmt.Errorf("s3: get %s: offset %d beyond size %d: %w", name, offset, info.Size, cairn.ErrInvalid)
		}
		return nil, b.mapErr("get", name, err)
	}
	return objstore.MapReadErrors(out.Body, func(err error) error { return b.mapErr("get", name, err) }), nil
}

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	key, err := b.key(name)
	if err != nil {
		return objstore.ObjectInfo{}, err
	}
	if err := b.usable(ctx, "stat", name); err != nil {
		return objstore.ObjectInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}, closeConnection)
	if err != nil {
		return objstore.ObjectInfo{}, b.mapErr("stat", name, err)
	}
	return objstore.ObjectInfo{Name: name, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List implements objstore.Backend. Each page request is retried on its
// own, so a long listing survives a transient failure.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.usable(ctx, "list", prefix); err != nil {
		return err
	}
	var token *string
	for {
		var out *s3.ListObjectsV2Output
		err := b.cfg.PagePolicy.Do(ctx, "list", prefix, func(ctx context.Context) error {
			var err error
			out, err = b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
				Bucket:            aws.String(b.cfg.Bucket),
				Prefix:            aws.String(b.cfg.Prefix + prefix),
				ContinuationToken: token,
			})
			if err != nil {
				return b.mapErr("list", prefix, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, o := range out.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), b.cfg.Prefix)
			if objstore.ValidName(name) != nil {
				continue // not an object of ours (e.g. a "directory" marker)
			}
			if err := fn(objstore.ObjectInfo{Name: name, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		token = out.NextContinuationToken
	}
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.usable(ctx, "delete", name); err != nil {
		return err
	}
	_, err = b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		if err := b.mapErr("delete", name, err); !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
	}
	return nil
}

// DeleteBatch implements objstore.BatchDeleter with DeleteObjects. It sends
// Content-MD5, which Swift's s3api requires of this call.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := b.usable(ctx, "delete batch", names[0]); err != nil {
		return err
	}
	ids := make([]types.ObjectIdentifier, 0, len(names))
	for _, name := range names {
		key, err := b.key(name)
		if err != nil {
			return err
		}
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(key)})
	}
	out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(b.cfg.Bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	}, withContentMD5, closeConnection)
	if err != nil {
		return b.mapErr("delete batch", names[0], err)
	}
	for _, e := range out.Errors {
		if aws.ToString(e.Code) == "NoSuchKey" {
			continue
		}
		return fmt.Errorf("s3 delete batch %s/%s: %s: %w", b.Location(), aws.ToString(e.Key), aws.ToString(e.Code), cairn.ErrUnavailable)
	}
	return nil
}

// closeConnection makes the request close its connection afterwards.
// Swift's s3api leaves a stray chunk terminator on the connection after
// some responses (a 404 to HEAD, multi-object delete, 501 to a
// conditional PUT), which would break the next request sent on it. These
// requests are rare in cairn; the bulk of traffic keeps its connections.
func closeConnection(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("cairnCloseConnection",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				if req, ok := in.Request.(*smithyhttp.Request); ok {
					req.Close = true
				}
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	})
}

// withContentMD5 adds a Content-MD5 header computed from the request body.
func withContentMD5(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("cairnContentMD5",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				req, ok := in.Request.(*smithyhttp.Request)
				if ok {
					if stream := req.GetStream(); stream != nil {
						body, err := io.ReadAll(stream)
						if err != nil {
							return middleware.FinalizeOutput{}, middleware.Metadata{}, err
						}
						sum := md5.Sum(body)
						req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
						if req, err = req.SetStream(bytes.NewReader(body)); err != nil {
							return middleware.FinalizeOutput{}, middleware.Metadata{}, err
						}
						in.Request = req
					}
				}
				return next.HandleFinalize(ctx, in)
			}), middleware.Before)
	})
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// mapErr turns an SDK error into one that names the store, the operation
// and the object, wraps the matching cairn sentinel, and carries no
// secret.
func (b *Backend) mapErr(op, name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	where := fmt.Sprintf("s3 %s %s/%s", op, b.Location(), name)
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	st := status(err)
	var sentinel error
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%s: bucket %q does not exist: %w", where, b.cfg.Bucket, cairn.ErrNotFound)
	case st == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		sentinel = cairn.ErrNotFound
	case st == http.StatusPreconditionFailed || code == "PreconditionFailed":
		sentinel = cairn.ErrExists
	case st == http.StatusForbidden || st == http.StatusUnauthorized || code == "AccessDenied" ||
		code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		sentinel = cairn.ErrDenied
	case st == http.StatusNotImplemented:
		sentinel = cairn.ErrUnsupported
	case st >= 500 || st == http.StatusTooManyRequests || st == http.StatusRequestTimeout ||
		code == "SlowDown" || code == "RequestTimeout" || code == "InternalError":
		sentinel = cairn.ErrUnavailable
	case st == 0 && transientNetwork(err):
		sentinel = cairn.ErrUnavailable
	case st >= 400:
		sentinel = cairn.ErrInvalid
	default:
		// Not an HTTP answer and not a network failure: configuration,
		// credentials, a malformed endpoint. Permanent.
		return fmt.Errorf("%s: %w", where, err)
	}
	msg := code
	if msg == "" && st != 0 {
		msg = http.StatusText(st)
	}
	if msg == "" {
		msg = shortNetError(err)
	}
	return fmt.Errorf("%s: %s: %w", where, msg, sentinel)
}

// transientNetwork reports network failures worth a retry: timeouts,
// refused and reset connections, truncated responses.
func transientNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE)
}

func shortNetError(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + " " + oe.Err.Error()
	}
	return err.Error()
}
