package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
)

// troveAPI drives a cairn serve through its database API, as the
// project of token.
type troveAPI struct {
	url   string // http://HOST:PORT/v1.0/PROJECT
	token string
	poll  time.Duration
}

func (a troveAPI) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		js, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s %s: %w", method, path, errNotFound)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: answer %q: %w", method, path, data, err)
	}
	return nil
}

var errNotFound = errors.New("not found")

// instanceRequest is what createInstance sends.
type instanceRequest struct {
	Name, Type, Version string
	SizeGiB             int
	Database, User, Pw  string
	BackupRef           string
	// Source and PointInTime restore an instance (gone, say) as it was
	// at an instant.
	Source      string
	PointInTime time.Time
}

// createInstance creates an instance and waits for it to leave BUILD; it
// fails unless the instance is ACTIVE.
func (a troveAPI) createInstance(ctx context.Context, r instanceRequest) (wire.Instance, error) {
	in := map[string]any{
		"name":      r.Name,
		"datastore": map[string]any{"type": r.Type, "version": r.Version},
		"volume":    map[string]any{"size": r.SizeGiB},
	}
	if r.Database != "" {
		in["databases"] = []any{map[string]any{"name": r.Database}}
		in["users"] = []any{map[string]any{"name": r.User, "password": r.Pw,
			"databases": []any{map[string]any{"name": r.Database}}}}
	}
	if r.BackupRef != "" {
		in["restorePoint"] = map[string]any{"backupRef": r.BackupRef}
	}
	if r.Source != "" {
		in["restorePoint"] = map[string]any{"instance": r.Source, "point_in_time": r.PointInTime.UTC().Format(time.RFC3339Nano)}
	}
	var out struct {
		Instance wire.Instance `json:"instance"`
	}
	if err := a.call(ctx, "POST", "/instances", map[string]any{"instance": in}, &out); err != nil {
		return out.Instance, err
	}
	return a.waitInstance(ctx, out.Instance.ID)
}

func (a troveAPI) waitInstance(ctx context.Context, id string) (wire.Instance, error) {
	for {
		var out struct {
			Instance wire.Instance `json:"instance"`
		}
		if err := a.call(ctx, "GET", "/instances/"+id, nil, &out); err != nil {
			return out.Instance, err
		}
		switch out.Instance.Status {
		case "BUILD":
		case "ACTIVE":
			return out.Instance, nil
		default:
			return out.Instance, fmt.Errorf("instance %s: %s: %v", id, out.Instance.Status, deref(out.Instance.FailReason))
		}
		if err := sleep(ctx, a.poll); err != nil {
			return out.Instance, err
		}
	}
}

// deleteInstance deletes an instance and waits until it is gone.
func (a troveAPI) deleteInstance(ctx context.Context, id string) error {
	if err := a.call(ctx, "DELETE", "/instances/"+id, nil, nil); err != nil {
		return err
	}
	for {
		err := a.call(ctx, "GET", "/instances/"+id, nil, nil)
		if errors.Is(err, errNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := sleep(ctx, a.poll); err != nil {
			return err
		}
	}
}

// backupRequest is what backup sends.
type backupRequest struct {
	Name, Instance, Parent, Container string
}

// backup takes a snapshot backup and waits until it is COMPLETED.
func (a troveAPI) backup(ctx context.Context, r backupRequest) (wire.DatabaseBackup, error) {
	in := map[string]any{"name": r.Name, "instance": r.Instance, "strategy": "snapshot", "container": r.Container}
	if r.Parent != "" {
		in["parent_id"], in["incremental"] = r.Parent, 1
	}
	var out struct {
		Backup wire.DatabaseBackup `json:"backup"`
	}
	if err := a.call(ctx, "POST", "/backups", map[string]any{"backup": in}, &out); err != nil {
		return out.Backup, err
	}
	id := out.Backup.ID
	for {
		if err := a.call(ctx, "GET", "/backups/"+id, nil, &out); err != nil {
			return out.Backup, err
		}
		switch out.Backup.Status {
		case "NEW", "BUILDING", "SAVING":
		case "COMPLETED":
			return out.Backup, nil
		default:
			return out.Backup, fmt.Errorf("backup %s: %s: %v", id, out.Backup.Status, deref(out.Backup.FailReason))
		}
		if err := sleep(ctx, a.poll); err != nil {
			return out.Backup, err
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// address returns an instance's host and port.
func address(inst wire.Instance) (string, int, error) {
	if len(inst.Addresses) != 1 {
		return "", 0, fmt.Errorf("instance %s: addresses %v", inst.ID, inst.Addresses)
	}
	return inst.Addresses[0].Address, inst.Addresses[0].Port, nil
}

// blockCall calls the block storage API of the same service and project.
func (a troveAPI) blockCall(ctx context.Context, method, path string, in, out any) error {
	b := a
	b.url = strings.Replace(a.url, "/v1.0/", "/v3/", 1)
	return b.call(ctx, method, path, in, out)
}

// prepareContainer makes a container's repository before a timed step,
// as pgBackRest's stanza-create is run before its timed backups: a
// backup of an empty 1 GiB volume into it (the volume made once, in
// *scratch). What a repository costs to create (its keys) is then
// outside the timed step, and the container holds no data chunk.
func (a troveAPI) prepareContainer(ctx context.Context, container string, scratch *string) error {
	type resource struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	wait := func(kind, id string) error {
		for {
			var out map[string]resource
			if err := a.blockCall(ctx, "GET", "/"+kind+"s/"+id, nil, &out); err != nil {
				return err
			}
			switch st := out[kind].Status; st {
			case "available":
				return nil
			case "error":
				return fmt.Errorf("%s %s: %s", kind, id, st)
			}
			if err := sleep(ctx, a.poll); err != nil {
				return err
			}
		}
	}
	if *scratch == "" {
		var v map[string]resource
		if err := a.blockCall(ctx, "POST", "/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "container-prep"}}, &v); err != nil {
			return err
		}
		if err := wait("volume", v["volume"].ID); err != nil {
			return err
		}
		*scratch = v["volume"].ID
	}
	var b map[string]resource
	if err := a.blockCall(ctx, "POST", "/backups", map[string]any{"backup": map[string]any{"volume_id": *scratch, "container": container}}, &b); err != nil {
		return err
	}
	return wait("backup", b["backup"].ID)
}
