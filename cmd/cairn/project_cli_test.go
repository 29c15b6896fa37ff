package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/catalog/sqlite"
)

// TestProjectTokenByName: the project and token commands name a project
// by its ID or by its name when one project alone has it; an ambiguous
// name is refused with the IDs that have it.
func TestProjectTokenByName(t *testing.T) {
	e := newAPIEnv(t)
	// The catalog cairn serve would have made.
	if err := os.MkdirAll(e.data, 0o700); err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(t.Context(), filepath.Join(e.data, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	_ = cat.Close()

	var acme projectJSON
	e.json(&acme, "project", "create", "acme", "--quota-volumes", "4")
	var tok tokenJSON
	e.json(&tok, "token", "create", "--project", "acme", "--name", "ci")
	if tok.ProjectID != acme.ID || tok.Secret == "" {
		t.Fatalf("token create --project acme: %+v, want a token of %s", tok, acme.ID)
	}
	var tokens []tokenJSON
	e.json(&tokens, "token", "list", "--project", "acme")
	if len(tokens) != 1 || tokens[0].ID != tok.ID {
		t.Fatalf("token list --project acme: %+v", tokens)
	}
	var shown projectJSON
	e.json(&shown, "project", "show", "acme")
	if shown.ID != acme.ID || shown.Quota.Volumes != 4 {
		t.Fatalf("project show acme: %+v", shown)
	}
	e.json(&shown, "project", "set-quota", "acme", "--quota-volumes", "6")
	if shown.ID != acme.ID || shown.Quota.Volumes != 6 {
		t.Fatalf("project set-quota acme: %+v", shown)
	}

	// A second project of the same name: the name no longer says which.
	var acme2 projectJSON
	e.json(&acme2, "project", "create", "acme")
	r := e.fails(exitError, "ambiguous", "token", "create", "--project", "acme")
	for _, id := range []string{acme.ID, acme2.ID} {
		if !strings.Contains(r.stderr, id) {
			t.Errorf("the ambiguous name's error does not list %s: %s", id, r.stderr)
		}
	}
	e.fails(exitError, "ambiguous", "project", "delete", "acme")
	e.fails(exitError, "not found", "token", "create", "--project", "nosuch")
	e.json(&tok, "token", "create", "--project", acme2.ID)
	if tok.ProjectID != acme2.ID {
		t.Fatalf("token create --project ID: %+v", tok)
	}
	if out := e.ok("project", "delete", acme.ID); !strings.Contains(out, "deleted project "+acme.ID) {
		t.Fatalf("project delete ID: %s", out)
	}
	// Unique again.
	if out := e.ok("project", "delete", "acme"); !strings.Contains(out, "deleted project "+acme2.ID) {
		t.Fatalf("project delete acme: %s", out)
	}
	var left []projectJSON
	e.json(&left, "project", "list")
	if len(left) != 0 {
		t.Fatalf("projects left: %+v", left)
	}
}
