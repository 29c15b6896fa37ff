package dbhost

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn/internal/dbagent"
)

// Check runs the datastore's consistency check on a ready instance's
// server, then req's query (see dbagent.Instance.Check). It holds no
// lock on the instance while the check runs: a check reads, and may
// take minutes.
func (h *Host) Check(ctx context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	ai, _, err := h.agent(ctx, id)
	if err != nil {
		return dbagent.CheckReport{}, err
	}
	rep, err := ai.Check(ctx, req)
	if err != nil {
		return rep, fmt.Errorf("instance %s: %w", id, err)
	}
	return rep, nil
}
