package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// Backup policies (/backup-policies).

// CreatePolicy creates a policy.
func (c *Client) CreatePolicy(ctx context.Context, body wire.PolicyBody) (cairn.Policy, error) {
	var out struct {
		Policy cairn.Policy `json:"policy"`
	}
	err := c.call(ctx, "POST", nil, wire.PolicyRequest{Policy: body}, &out, "backup-policies")
	return out.Policy, err
}

// ListPolicies lists the project's policies (every project's with all,
// for an admin).
func (c *Client) ListPolicies(ctx context.Context, all bool) ([]cairn.Policy, error) {
	var q url.Values
	if all {
		q = url.Values{"all_tenants": {"1"}}
	}
	var out struct {
		Policies []cairn.Policy `json:"policies"`
	}
	err := c.call(ctx, "GET", q, nil, &out, "backup-policies")
	return out.Policies, err
}

// GetPolicy reads a policy.
func (c *Client) GetPolicy(ctx context.Context, id string) (cairn.Policy, error) {
	var out struct {
		Policy cairn.Policy `json:"policy"`
	}
	err := c.call(ctx, "GET", nil, nil, &out, "backup-policies", id)
	return out.Policy, err
}

// PolicyRef finds a policy by ID, else by name (which must be unique
// among the project's).
func (c *Client) PolicyRef(ctx context.Context, ref string) (cairn.Policy, error) {
	p, err := c.GetPolicy(ctx, ref)
	if err == nil || !errors.Is(err, cairn.ErrNotFound) {
		return p, err
	}
	list, lerr := c.ListPolicies(ctx, false)
	if lerr != nil {
		return cairn.Policy{}, lerr
	}
	for _, p := range list {
		if p.Name == ref {
			return p, nil
		}
	}
	return cairn.Policy{}, fmt.Errorf("policy %q: no policy has that ID or name: %w", ref, cairn.ErrNotFound)
}

// UpdatePolicy replaces a policy's definition.
func (c *Client) UpdatePolicy(ctx context.Context, id string, body wire.PolicyBody) (cairn.Policy, error) {
	var out struct {
		Policy cairn.Policy `json:"policy"`
	}
	err := c.call(ctx, "PUT", nil, wire.PolicyRequest{Policy: body}, &out, "backup-policies", id)
	return out.Policy, err
}

// DeletePolicy deletes a policy (its backups stay).
func (c *Client) DeletePolicy(ctx context.Context, id string) error {
	return c.call(ctx, "DELETE", nil, nil, nil, "backup-policies", id)
}

// PolicySlots lists a policy's newest slots, at most limit.
func (c *Client) PolicySlots(ctx context.Context, id string, limit int) ([]cairn.PolicySlot, error) {
	var out struct {
		Slots []cairn.PolicySlot `json:"slots"`
	}
	err := c.call(ctx, "GET", url.Values{"limit": {strconv.Itoa(limit)}}, nil, &out, "backup-policies", id, "slots")
	return out.Slots, err
}

// ApplyRetention runs a policy's retention, or says what it would do.
func (c *Client) ApplyRetention(ctx context.Context, id string, dryRun bool) (cairn.RetentionReport, error) {
	var req wire.RetentionRequest
	req.Retention.DryRun = dryRun
	var out struct {
		Retention cairn.RetentionReport `json:"retention"`
	}
	err := c.call(ctx, "POST", nil, req, &out, "backup-policies", id, "retention")
	return out.Retention, err
}

// ProtectBackup protects a backup from deletion, or stops protecting it.
func (c *Client) ProtectBackup(ctx context.Context, id string, protected bool) error {
	return c.call(ctx, "POST", nil, wire.BackupActionRequest{Protect: &wire.ProtectAction{Protected: protected}}, nil, "backups", id, "action")
}
