package wire

import "github.com/cairnproject/cairn"

// cairn's backup policies (/v3/{project_id}/backup-policies), an
// extension of the block storage API: schedules, retention and their
// runs. Answers carry cairn.Policy, cairn.PolicySlot and
// cairn.RetentionReport as they are.

// PolicyRequest is the body of POST /backup-policies and of PUT
// /backup-policies/{id}, which replaces the whole definition.
type PolicyRequest struct {
	Policy PolicyBody `json:"policy"`
}

// PolicyBody is a policy's definition; Enabled absent is true on
// create and unchanged on update.
type PolicyBody struct {
	Name    string `json:"name"`
	Enabled *bool  `json:"enabled,omitempty"`
	cairn.PolicySpec
}

// RetentionRequest is the body of POST /backup-policies/{id}/retention.
type RetentionRequest struct {
	Retention struct {
		DryRun bool `json:"dry_run"`
	} `json:"retention"`
}
