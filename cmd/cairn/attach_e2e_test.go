package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/wire"
)

// TestAPIVolumeAttachShown: an attached volume's NBD address can always
// be found again: volume show prints it (and --json has it in the
// volume's attachments), and attaching the volume again prints it
// instead of failing.
func TestAPIVolumeAttachShown(t *testing.T) {
	e := newAPIEnv(t)
	e.serve()
	var v wire.Volume
	e.json(&v, "volume", "create", "--size", "1", "--name", "att", "--wait")

	type attached struct {
		wire.Attachment
		AlreadyAttached bool `json:"already_attached"`
	}
	var first attached
	e.json(&first, "volume", "attach", "att")
	uris := first.URIs
	if first.AlreadyAttached || first.VolumeID != v.ID || len(uris) != 1 || !strings.HasPrefix(uris[0], "nbd+unix:///"+v.ID+"?socket=") {
		t.Fatalf("first attach: %+v", first)
	}

	// Attached again: the same address, exit 0, and a word that it was.
	r := e.run("volume", "attach", "att")
	if r.code != 0 || !slices.Equal(strings.Fields(r.stdout), uris) || !strings.Contains(r.stderr, "already attached") {
		t.Fatalf("second attach: exit %d\nstdout: %s\nstderr: %s\nwant the URIs %q", r.code, r.stdout, r.stderr, uris)
	}
	var again attached
	e.json(&again, "volume", "attach", v.ID)
	if !again.AlreadyAttached || !slices.Equal(again.URIs, uris) || again.VolumeID != v.ID {
		t.Fatalf("second attach, --json: %+v", again)
	}

	// volume show says where, as text and as JSON.
	out := e.ok("volume", "show", "att")
	if !strings.Contains(out, "nbd:") || !strings.Contains(out, uris[0]) {
		t.Fatalf("volume show of an attached volume does not give its address %s:\n%s", uris[0], out)
	}
	var shown wire.Volume
	e.json(&shown, "volume", "show", "att")
	if len(shown.Attachments) != 1 || !slices.Equal(shown.Attachments[0].URIs(), uris) {
		t.Fatalf("volume show --json: attachments %+v, want the URIs %q", shown.Attachments, uris)
	}

	// Detached: no address any more; a new attach is a new one.
	e.ok("volume", "detach", "att")
	if out := e.ok("volume", "show", "att"); strings.Contains(out, "nbd:") {
		t.Fatalf("volume show of a detached volume:\n%s", out)
	}
	e.json(&shown, "volume", "show", "att")
	if len(shown.Attachments) != 0 {
		t.Fatalf("detached volume: %+v", shown)
	}
	var fresh attached
	e.json(&fresh, "volume", "attach", "att")
	if fresh.AlreadyAttached || !slices.Equal(fresh.URIs, uris) {
		t.Fatalf("attach after detach: %+v", fresh)
	}
}
