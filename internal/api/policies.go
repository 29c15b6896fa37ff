package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// Backup policies (/backup-policies): cairn's own resource beside the
// block storage API's, in its style: a JSON object under one key, 202
// for what acts later, 400 naming the field.

func policyRequest(r *http.Request) (service.PolicyRequest, error) {
	var req wire.PolicyRequest
	if err := decode(r, &req); err != nil {
		return service.PolicyRequest{}, err
	}
	return service.PolicyRequest{Name: req.Policy.Name, Enabled: req.Policy.Enabled, Spec: req.Policy.PolicySpec}, nil
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	req, err := policyRequest(r)
	if err != nil {
		return err
	}
	p, err := s.svc.CreatePolicy(r.Context(), c, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"policy": p})
	return nil
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := noQuery(r, "all_tenants"); err != nil {
		return err
	}
	all, err := allTenants(r, c)
	if err != nil {
		return err
	}
	list, err := s.svc.Policies(r.Context(), c, all)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policies": list})
	return nil
}

func (s *Server) showPolicy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	p, err := s.svc.Policy(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": p})
	return nil
}

func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	req, err := policyRequest(r)
	if err != nil {
		return err
	}
	p, err := s.svc.UpdatePolicy(r.Context(), c, r.PathValue("id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": p})
	return nil
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeletePolicy(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxSlotsListed bounds a slot list's limit.
const maxSlotsListed = 10000

func (s *Server) listPolicySlots(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := noQuery(r, "limit"); err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSlotsListed {
			return fmt.Errorf("limit %q: want 1 to %d: %w", v, maxSlotsListed, cairn.ErrInvalid)
		}
		limit = n
	}
	slots, err := s.svc.PolicySlots(r.Context(), c, r.PathValue("id"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"slots": slots})
	return nil
}

// runRetention applies a policy's retention now, or (dry_run) says what
// it would do: each backup's keep or remove and the rules that decided.
func (s *Server) runRetention(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.RetentionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	rep, err := s.svc.ApplyRetention(r.Context(), c, r.PathValue("id"), req.Retention.DryRun)
	if err != nil {
		return err
	}
	code := http.StatusAccepted // deletions queued
	if req.Retention.DryRun {
		code = http.StatusOK
	}
	writeJSON(w, code, map[string]any{"retention": rep})
	return nil
}
