package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// The block storage API's quota sets (os-quota-sets) and quota classes
// (os-quota-class-sets) over cairn's project quotas (service/quotas.go).
// cairn has no groups and no per-type quotas: groups shows 0 (none may
// be made) and a change of either is refused.

// quotaKeys are the limits of a quota set, in the order answers give
// them, with where each is in a cairn.Quota and a cairn.Usage.
func quotaKeys(q *cairn.Quota, u *cairn.Usage) []struct {
	name  string
	limit *int64
	used  int64
} {
	return []struct {
		name  string
		limit *int64
		used  int64
	}{
		{"volumes", &q.Volumes, u.Volumes},
		{"gigabytes", &q.Gigabytes, u.Gigabytes},
		{"snapshots", &q.Snapshots, u.Snapshots},
		{"backups", &q.Backups, u.Backups},
		{"backup_gigabytes", &q.BackupGigabytes, u.BackupGigabytes},
		{"per_volume_gigabytes", &q.PerVolumeGigabytes, 0},
	}
}

// quotaSetJSON is a quota set's answer: id (when given), each limit, and
// groups; with usage, each as {limit, in_use, reserved, allocated}.
func quotaSetJSON(id string, q cairn.Quota, u cairn.Usage, usage bool) map[string]any {
	out := map[string]any{}
	if id != "" {
		out["id"] = id
	}
	for _, k := range quotaKeys(&q, &u) {
		if usage {
			out[k.name] = map[string]int64{"limit": *k.limit, "in_use": k.used, "reserved": 0, "allocated": 0}
		} else {
			out[k.name] = *k.limit
		}
	}
	if usage {
		out["groups"] = map[string]int64{"limit": 0, "in_use": 0, "reserved": 0, "allocated": 0}
	} else {
		out["groups"] = 0
	}
	return out
}

// quotaChange reads the limits a PUT sets: {member: {limit: N, ...}}.
// Numbers, or strings of them as the block storage API takes; -1 is
// unlimited. groups may only stay 0; anything else is refused.
func quotaChange(r *http.Request, member string) (service.QuotaChange, error) {
	var body map[string]map[string]json.RawMessage
	if err := decode(r, &body); err != nil {
		return service.QuotaChange{}, err
	}
	set, ok := body[member]
	if !ok || len(body) != 1 {
		return service.QuotaChange{}, fmt.Errorf("want {%q: {...}}: %w", member, cairn.ErrInvalid)
	}
	var ch service.QuotaChange
	fields := map[string]**int64{"volumes": &ch.Volumes, "gigabytes": &ch.Gigabytes, "snapshots": &ch.Snapshots,
		"backups": &ch.Backups, "backup_gigabytes": &ch.BackupGigabytes, "per_volume_gigabytes": &ch.PerVolumeGigabytes}
	for k, raw := range set {
		if member == "quota_set" && k == "tenant_id" {
			// cinderclient sends the project it updates in the body as
			// well as in the path (the block storage API ignores it);
			// one that names another project is a mistake.
			var p string
			if err := json.Unmarshal(raw, &p); err != nil || p != r.PathValue("target") {
				return service.QuotaChange{}, fmt.Errorf("%s.tenant_id %s: want the project of the path, %q: %w", member, raw, r.PathValue("target"), cairn.ErrInvalid)
			}
			continue
		}
		n, err := quotaValue(raw)
		if err != nil {
			return service.QuotaChange{}, fmt.Errorf("%s.%s: %w", member, k, err)
		}
		if k == "groups" {
			if n != 0 {
				return service.QuotaChange{}, fmt.Errorf("%s.groups: cairn has no groups: %w", member, cairn.ErrInvalid)
			}
			continue
		}
		dst, ok := fields[k]
		if !ok {
			return service.QuotaChange{}, fmt.Errorf("%s.%s: not a limit cairn has (volumes, gigabytes, snapshots, backups, backup_gigabytes, per_volume_gigabytes; no per-type quotas): %w", member, k, cairn.ErrInvalid)
		}
		*dst = &n
	}
	return ch, nil
}

// quotaValue is a limit: a JSON integer, or a string of one.
func quotaValue(raw json.RawMessage) (int64, error) {
	var s string
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte(`"`)) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("%w: %w", err, cairn.ErrInvalid)
		}
	} else {
		s = string(raw)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number: %w", s, cairn.ErrInvalid)
	}
	return n, nil
}

// usageParam reads ?usage=true|false.
func usageParam(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("usage")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("usage %q: want true or false: %w", v, cairn.ErrInvalid)
	}
	return b, nil
}

func (s *Server) showQuotaSet(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	usage, err := usageParam(r)
	if err != nil {
		return err
	}
	qs, err := s.svc.QuotaSet(r.Context(), c, r.PathValue("target"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_set": quotaSetJSON(qs.ProjectID, qs.Quota, qs.Usage, usage)})
	return nil
}

func (s *Server) showDefaultQuotaSet(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	qs, err := s.svc.DefaultQuotaSet(r.Context(), c, r.PathValue("target"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_set": quotaSetJSON(qs.ProjectID, qs.Quota, cairn.Usage{}, false)})
	return nil
}

func (s *Server) updateQuotaSet(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	// skip_validation=true lets the block storage API set a limit below
	// what the project uses; cairn always refuses one (a limit below use
	// only hides that the project is over it), so either value is read
	// and the check made.
	if v := r.URL.Query().Get("skip_validation"); v != "" {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("skip_validation %q: want true or false: %w", v, cairn.ErrInvalid)
		}
	}
	ch, err := quotaChange(r, "quota_set")
	if err != nil {
		return err
	}
	qs, err := s.svc.UpdateQuotaSet(r.Context(), c, r.PathValue("target"), ch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_set": quotaSetJSON("", qs.Quota, qs.Usage, false)})
	return nil
}

func (s *Server) deleteQuotaSet(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteQuotaSet(r.Context(), c, r.PathValue("target")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) showQuotaClass(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	name := r.PathValue("class")
	q, err := s.svc.QuotaClass(r.Context(), c, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_class_set": quotaSetJSON(name, q, cairn.Usage{}, false)})
	return nil
}

func (s *Server) updateQuotaClass(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	ch, err := quotaChange(r, "quota_class_set")
	if err != nil {
		return err
	}
	q, err := s.svc.UpdateQuotaClass(r.Context(), c, r.PathValue("class"), ch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota_class_set": quotaSetJSON("", q, cairn.Usage{}, false)})
	return nil
}
