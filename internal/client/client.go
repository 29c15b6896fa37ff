// Package client is a Go client of the service's HTTP API (internal/api):
// volumes, snapshots and backups of a project, their tasks and limits. It
// speaks the types of package wire and needs nothing else of the server.
//
// Every call takes a context first. Errors the API answers with are
// *APIError values that wrap the cairn sentinel their status stands for
// (cairn.SentinelOfStatus: ErrNotFound for 404, ErrConflict for 409, ...),
// so errors.Is works on them. A request that reaches no API fails with an
// *UnreachableError, which wraps cairn.ErrUnavailable.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// DefaultPollInterval is how often Wait looks at a resource.
const DefaultPollInterval = 250 * time.Millisecond

// Client calls one API with one token. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client

	// PollInterval is Wait's period (DefaultPollInterval when zero).
	PollInterval time.Duration

	mu      sync.Mutex
	project string // the project of the URLs; "" until known
}

// New returns a client of the API at baseURL (e.g. http://127.0.0.1:8776;
// a trailing /v3 is accepted) authenticating with token. A nil httpClient
// means http.DefaultClient. The client acts in the token's project unless
// SetProject names another (which only an admin token may use).
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	base := strings.TrimRight(baseURL, "/")
	base = strings.TrimSuffix(base, "/v3")
	return &Client{base: base, token: token, http: httpClient}
}

// SetProject makes the client act in project (an admin token may act in
// any project); "" returns to the token's own project.
func (c *Client) SetProject(project string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.project = project
}

// Project returns the project the client acts in, asking the API for the
// token's project the first time when none was set.
func (c *Client) Project(ctx context.Context) (string, error) {
	c.mu.Lock()
	p := c.project
	c.mu.Unlock()
	if p != "" {
		return p, nil
	}
	info, err := c.Whoami(ctx)
	if err != nil {
		return "", err
	}
	if info.ProjectID == "" {
		return "", errors.New("the API names no project for this token")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.project == "" {
		c.project = info.ProjectID
	}
	return c.project, nil
}

// APIError is an error the API answered with: its HTTP status code, the
// block storage API's error name (itemNotFound, badRequest, ...), the
// message, and the request's ID (which the service's log names too).
type APIError struct {
	Code      int
	Name      string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("HTTP %d %s", e.Code, e.Name)
}

// Unwrap returns the cairn sentinel the status code stands for, or nil.
func (e *APIError) Unwrap() error { return cairn.SentinelOfStatus(e.Code) }

// UnreachableError is a request that got no answer from the API: nothing
// listens at the URL, its host is unknown, or it did not answer in time.
// It wraps cairn.ErrUnavailable (and the transport's error), so the
// caller may try again later.
type UnreachableError struct {
	// URL is the API's base URL.
	URL string
	// Reason says what happened, for people: "connection refused",
	// "no such host example", "timed out", ...
	Reason string
	// Err is the transport's error.
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the cairn API at %s: %s (is cairn serve running there? set --url or CAIRN_URL)", e.URL, e.Reason)
}

// Unwrap returns cairn.ErrUnavailable and the transport's error.
func (e *UnreachableError) Unwrap() []error { return []error{cairn.ErrUnavailable, e.Err} }

// unreachableReason says in a few words why a request got no answer.
func unreachableReason(err error) string {
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no such host " + dns.Name
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed without an answer"
	case errors.As(err, &dns):
		return "looking up " + dns.Name + ": " + dns.Err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// apiError reads an error answer: the API's {"<name>": {"code", "message"}}
// or, from something in between (a proxy), whatever text it sent.
func apiError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Code: resp.StatusCode, Name: http.StatusText(resp.StatusCode),
		RequestID: resp.Header.Get(wire.RequestIDHeader)}
	var doc map[string]wire.Fault
	if json.Unmarshal(body, &doc) == nil && len(doc) == 1 {
		for name, v := range doc {
			e.Name, e.Message = name, v.Message
		}
		return e
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	e.Message = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if text != "" {
		e.Message += ": " + text
	}
	return e
}

// do sends a request to path (below the base URL) with in as its JSON body
// (nil: none) and decodes a 2xx answer's body into out (nil: discarded).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		js, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	// cairn's own members (fail reasons, stored bytes, parents) too.
	req.Header.Set(wire.MembersHeader, wire.MembersAll)
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return &UnreachableError{URL: c.base, Reason: unreachableReason(err), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: answer: %w", method, path, err)
	}
	return nil
}

// projectPath is /v3/{project}/ followed by the escaped path elements.
func (c *Client) projectPath(ctx context.Context, elems ...string) (string, error) {
	p, err := c.Project(ctx)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("/v3/")
	b.WriteString(url.PathEscape(p))
	for _, e := range elems {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(e))
	}
	return b.String(), nil
}

// call is do on a path of the client's project.
func (c *Client) call(ctx context.Context, method string, q url.Values, in, out any, elems ...string) error {
	path, err := c.projectPath(ctx, elems...)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, q, in, out)
}

// Whoami tells whose the token is: its project and whether it is an
// admin's.
func (c *Client) Whoami(ctx context.Context) (wire.TokenInfo, error) {
	var out struct {
		Token wire.TokenInfo `json:"token"`
	}
	err := c.do(ctx, http.MethodGet, "/v3/auth/token", nil, nil, &out)
	return out.Token, err
}

// Limits returns the project's quotas and usage, read from the absolute
// limits the API answers.
func (c *Client) Limits(ctx context.Context) (wire.Limits, error) {
	var out struct {
		Limits wire.LimitsAnswer `json:"limits"`
	}
	err := c.call(ctx, http.MethodGet, nil, nil, &out, "limits")
	return out.Limits.Absolute.Limits(), err
}

// Tasks lists the tasks of a resource (a volume, snapshot or backup
// ID), oldest first; "" lists every task of the project.
func (c *Client) Tasks(ctx context.Context, resourceID string) ([]cairn.Task, error) {
	var q url.Values
	if resourceID != "" {
		q = url.Values{"resource_id": {resourceID}}
	}
	var out struct {
		Tasks []cairn.Task `json:"tasks"`
	}
	err := c.call(ctx, http.MethodGet, q, nil, &out, "tasks")
	return out.Tasks, err
}

// NextMarker returns the marker of the page after a list's, from its
// links, or "" when the list was the last page.
func NextMarker(links []wire.Link) string {
	for _, l := range links {
		if l.Rel != "next" {
			continue
		}
		u, err := url.Parse(l.Href)
		if err != nil {
			return ""
		}
		return u.Query().Get("marker")
	}
	return ""
}

// listPath is the path of a list: the summaries or, with detail, the
// full resources.
func listPath(kind string, detail bool) []string {
	if detail {
		return []string{kind, "detail"}
	}
	return []string{kind}
}

// Volumes.

// CreateVolume asks for a volume: empty (req.Volume.Size GiB), a clone of
// a snapshot or a restore of a backup. The answer is the volume in status
// creating (or restoring-backup); Wait follows it.
func (c *Client) CreateVolume(ctx context.Context, req wire.VolumeCreateRequest) (wire.Volume, error) {
	var out struct {
		Volume wire.Volume `json:"volume"`
	}
	err := c.call(ctx, http.MethodPost, nil, req, &out, "volumes")
	return out.Volume, err
}

// ListVolumes returns one page of volumes and its links (see NextMarker).
// Without detail only ID, Name and Links are set. q holds the list's
// parameters: limit, marker, sort, name, status, all_tenants.
func (c *Client) ListVolumes(ctx context.Context, detail bool, q url.Values) ([]wire.Volume, []wire.Link, error) {
	var out struct {
		Volumes []wire.Volume `json:"volumes"`
		Links   []wire.Link   `json:"volumes_links"`
	}
	err := c.call(ctx, http.MethodGet, q, nil, &out, listPath("volumes", detail)...)
	return out.Volumes, out.Links, err
}

// GetVolume returns a volume.
func (c *Client) GetVolume(ctx context.Context, id string) (wire.Volume, error) {
	var out struct {
		Volume wire.Volume `json:"volume"`
	}
	err := c.call(ctx, http.MethodGet, nil, nil, &out, "volumes", id)
	return out.Volume, err
}

// UpdateVolume changes a volume's name or description (nil: unchanged).
func (c *Client) UpdateVolume(ctx context.Context, id string, name, description *string) (wire.Volume, error) {
	var req wire.VolumeUpdateRequest
	req.Volume.Name, req.Volume.Description = name, description
	var out struct {
		Volume wire.Volume `json:"volume"`
	}
	err := c.call(ctx, http.MethodPut, nil, req, &out, "volumes", id)
	return out.Volume, err
}

// DeleteVolume asks for a volume's deletion (status deleting, then gone).
func (c *Client) DeleteVolume(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, nil, nil, nil, "volumes", id)
}

// ExtendVolume asks for a volume to grow to newSize GiB (status extending).
func (c *Client) ExtendVolume(ctx context.Context, id string, newSize int64) error {
	req := wire.VolumeActionRequest{Extend: &wire.ExtendAction{NewSize: newSize}}
	return c.call(ctx, http.MethodPost, nil, req, nil, "volumes", id, "action")
}

// AttachVolume exports a volume over NBD (status in-use) and says where.
func (c *Client) AttachVolume(ctx context.Context, id string) (wire.Attachment, error) {
	req := wire.VolumeActionRequest{Attach: &struct{}{}}
	var out struct {
		Attachment wire.Attachment `json:"attachment"`
	}
	err := c.call(ctx, http.MethodPost, nil, req, &out, "volumes", id, "action")
	return out.Attachment, err
}

// DetachVolume stops exporting a volume (status available).
func (c *Client) DetachVolume(ctx context.Context, id string) error {
	req := wire.VolumeActionRequest{Detach: &struct{}{}}
	return c.call(ctx, http.MethodPost, nil, req, nil, "volumes", id, "action")
}

// resetStatus is the body of every os-reset_status action.
func resetStatus(status string) wire.ResetStatusRequest {
	return wire.ResetStatusRequest{ResetStatus: &wire.ResetStatusAction{Status: status}}
}

// ResetVolumeStatus sets a volume's status (admins only).
func (c *Client) ResetVolumeStatus(ctx context.Context, id, status string) error {
	return c.call(ctx, http.MethodPost, nil, resetStatus(status), nil, "volumes", id, "action")
}

// Snapshots.

// CreateSnapshot asks for a snapshot of a volume (status creating). The
// answer has the members of wire.SnapshotSummary (not the project,
// progress and fail reason).
func (c *Client) CreateSnapshot(ctx context.Context, req wire.SnapshotCreateRequest) (wire.Snapshot, error) {
	var out struct {
		Snapshot wire.Snapshot `json:"snapshot"`
	}
	err := c.call(ctx, http.MethodPost, nil, req, &out, "snapshots")
	return out.Snapshot, err
}

// ListSnapshots returns one page of snapshots and its links. Without
// detail the members of wire.SnapshotSummary are set (not the project,
// progress and fail reason). q: limit, marker, sort, name, status,
// volume_id, all_tenants.
func (c *Client) ListSnapshots(ctx context.Context, detail bool, q url.Values) ([]wire.Snapshot, []wire.Link, error) {
	var out struct {
		Snapshots []wire.Snapshot `json:"snapshots"`
		Links     []wire.Link     `json:"snapshots_links"`
	}
	err := c.call(ctx, http.MethodGet, q, nil, &out, listPath("snapshots", detail)...)
	return out.Snapshots, out.Links, err
}

// GetSnapshot returns a snapshot.
func (c *Client) GetSnapshot(ctx context.Context, id string) (wire.Snapshot, error) {
	var out struct {
		Snapshot wire.Snapshot `json:"snapshot"`
	}
	err := c.call(ctx, http.MethodGet, nil, nil, &out, "snapshots", id)
	return out.Snapshot, err
}

// DeleteSnapshot asks for a snapshot's deletion.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, nil, nil, nil, "snapshots", id)
}

// ResetSnapshotStatus sets a snapshot's status (admins only).
func (c *Client) ResetSnapshotStatus(ctx context.Context, id, status string) error {
	return c.call(ctx, http.MethodPost, nil, resetStatus(status), nil, "snapshots", id, "action")
}

// Backups.

// CreateBackup asks for a backup of a volume or a snapshot (status
// creating). The answer is the block storage API's summary: only the
// backup's ID, Name and Links are set (GetBackup or Wait for the rest).
func (c *Client) CreateBackup(ctx context.Context, req wire.BackupCreateRequest) (wire.Backup, error) {
	var out struct {
		Backup wire.Backup `json:"backup"`
	}
	err := c.call(ctx, http.MethodPost, nil, req, &out, "backups")
	return out.Backup, err
}

// ListBackups returns one page of backups and its links. Without detail
// only ID, Name and Links are set. q: limit, marker, sort, name, status,
// volume_id, snapshot_id, all_tenants.
func (c *Client) ListBackups(ctx context.Context, detail bool, q url.Values) ([]wire.Backup, []wire.Link, error) {
	var out struct {
		Backups []wire.Backup `json:"backups"`
		Links   []wire.Link   `json:"backups_links"`
	}
	err := c.call(ctx, http.MethodGet, q, nil, &out, listPath("backups", detail)...)
	return out.Backups, out.Links, err
}

// GetBackup returns a backup.
func (c *Client) GetBackup(ctx context.Context, id string) (wire.Backup, error) {
	var out struct {
		Backup wire.Backup `json:"backup"`
	}
	err := c.call(ctx, http.MethodGet, nil, nil, &out, "backups", id)
	return out.Backup, err
}

// DeleteBackup asks for a backup's deletion.
func (c *Client) DeleteBackup(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, nil, nil, nil, "backups", id)
}

// RestoreBackup asks for a backup to be restored into the volume
// volumeID or, when it is "", into a new volume called name. The volume
// is in status restoring-backup until the restore ends: Wait on it.
func (c *Client) RestoreBackup(ctx context.Context, id, volumeID, name string) (wire.RestoreResult, error) {
	req := wire.RestoreRequest{Restore: wire.Restore{VolumeID: volumeID, Name: name}}
	var out struct {
		Restore wire.RestoreResult `json:"restore"`
	}
	err := c.call(ctx, http.MethodPost, nil, req, &out, "backups", id, "restore")
	return out.Restore, err
}

// ExportRecord returns what another deployment needs to import a backup.
func (c *Client) ExportRecord(ctx context.Context, id string) (wire.BackupRecord, error) {
	var out struct {
		Record wire.BackupRecord `json:"backup-record"`
	}
	err := c.call(ctx, http.MethodGet, nil, nil, &out, "backups", id, "export_record")
	return out.Record, err
}

// ImportRecord adds the backup an exported record describes and returns
// it: the API answers the block storage API's summary (ID, name, links),
// so it reads the backup back.
func (c *Client) ImportRecord(ctx context.Context, rec wire.BackupRecord) (wire.Backup, error) {
	req := wire.ImportRecordRequest{BackupRecord: &rec}
	var out struct {
		Backup wire.Summary `json:"backup"`
	}
	if err := c.call(ctx, http.MethodPost, nil, req, &out, "backups", "import_record"); err != nil {
		return wire.Backup{}, err
	}
	return c.GetBackup(ctx, out.Backup.ID)
}

// ResetBackupStatus sets a backup's status (admins only).
func (c *Client) ResetBackupStatus(ctx context.Context, id, status string) error {
	return c.call(ctx, http.MethodPost, nil, resetStatus(status), nil, "backups", id, "action")
}

// Waiting.

// Kind is a kind of resource Wait follows.
type Kind string

// Resources.
const (
	Volume   Kind = "volume"
	Snapshot Kind = "snapshot"
	Backup   Kind = "backup"
)

// Gone is the status Wait returns for a resource that no longer exists
// (deleted).
const Gone = "deleted"

// Transient reports whether a status is held only while a task works on
// the resource.
func Transient(status string) bool {
	switch cairn.Status(status) {
	case cairn.StatusCreating, cairn.StatusDeleting, cairn.StatusExtending, cairn.StatusBackingUp,
		cairn.StatusRestoringBackup, cairn.StatusRestoring, "attaching", "detaching":
		return true
	}
	return false
}

// FailedError is the end of an operation in status error (or
// error_deleting), with the reason the service recorded.
type FailedError struct {
	Kind   Kind
	ID     string
	Status string
	Reason string
}

func (e *FailedError) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = "no reason recorded"
	}
	return fmt.Sprintf("%s %s ended in status %s: %s", e.Kind, e.ID, e.Status, reason)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// state reads a resource's status and fail reason; gone is true when it
// no longer exists.
func (c *Client) state(ctx context.Context, kind Kind, id string) (status, reason string, gone bool, err error) {
	switch kind {
	case Volume:
		var v wire.Volume
		v, err = c.GetVolume(ctx, id)
		status, reason = v.Status, deref(v.FailReason)
	case Snapshot:
		var s wire.Snapshot
		s, err = c.GetSnapshot(ctx, id)
		status, reason = s.Status, deref(s.FailReason)
	case Backup:
		var b wire.Backup
		b, err = c.GetBackup(ctx, id)
		status, reason = b.Status, deref(b.FailReason)
	default:
		return "", "", false, fmt.Errorf("wait: resource kind %q: want volume, snapshot or backup: %w", kind, cairn.ErrInvalid)
	}
	if errors.Is(err, cairn.ErrNotFound) {
		return Gone, "", true, nil
	}
	return status, reason, false, err
}

// Wait polls a resource (every PollInterval) until it leaves its
// transient status, and returns the status it ends in; Gone when it no
// longer exists (after a delete). An end in error or error_deleting
// returns that status and a *FailedError carrying the fail reason.
// Any other error ends the wait, with the last status seen.
// progress, when not nil, is called with the running task's bytes done
// and total whenever the service reports them.
func (c *Client) Wait(ctx context.Context, kind Kind, id string, progress func(done, total int64)) (string, error) {
	every := c.PollInterval
	if every <= 0 {
		every = DefaultPollInterval
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastDone, lastTotal int64 = -1, -1
	last := ""
	for {
		status, reason, gone, err := c.state(ctx, kind, id)
		if err != nil {
			return last, err
		}
		last = status
		if gone {
			return Gone, nil
		}
		if !Transient(status) {
			if status == string(cairn.StatusError) || status == string(cairn.StatusErrorDeleting) {
				return status, &FailedError{Kind: kind, ID: id, Status: status, Reason: reason}
			}
			return status, nil
		}
		if progress != nil {
			if done, total, ok := c.taskProgress(ctx, id); ok && (done != lastDone || total != lastTotal) {
				lastDone, lastTotal = done, total
				progress(done, total)
			}
		}
		select {
		case <-ctx.Done():
			return status, ctx.Err()
		case <-tick.C:
		}
	}
}

// taskProgress returns the progress of the latest unfinished task of a
// resource that reports any. Progress is a nicety: errors are ignored.
func (c *Client) taskProgress(ctx context.Context, id string) (done, total int64, ok bool) {
	list, err := c.Tasks(ctx, id)
	if err != nil {
		return 0, 0, false
	}
	for i := len(list) - 1; i >= 0; i-- {
		t := list[i]
		if t.State != cairn.TaskPending && t.State != cairn.TaskRunning {
			continue
		}
		if t.ProgressTotal > 0 {
			return t.ProgressDone, t.ProgressTotal, true
		}
		return 0, 0, false
	}
	return 0, 0, false
}
