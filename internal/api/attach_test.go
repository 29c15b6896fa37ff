package api_test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// showVolume returns a volume as GET shows it, checking that its
// attachments are an array (never null), as the block storage API has
// them.
func (e *env) showVolume(token, project, id string) wire.Volume {
	e.t.Helper()
	var raw struct{ Volume json.RawMessage }
	e.must(200, token, "GET", "/v3/"+project+"/volumes/"+id, nil, &raw)
	var members map[string]json.RawMessage
	var v wire.Volume
	if err := json.Unmarshal(raw.Volume, &members); err != nil {
		e.t.Fatal(err)
	}
	if a := string(members["attachments"]); !strings.HasPrefix(a, "[") {
		e.t.Fatalf("volume %s: attachments %s, want an array", id, a)
	}
	if err := json.Unmarshal(raw.Volume, &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// TestVolumeShowsItsAttachment: an attached volume shows where it is
// exported, in the block storage API's attachments, in show and in
// lists, after a second attach is refused, and after a restart of the
// service; once detached it shows none.
func TestVolumeShowsItsAttachment(t *testing.T) {
	dir, store := t.TempDir(), filepath.Join(t.TempDir(), "backups")
	e := newEnvAt(t, dir, store)
	vol := e.createVolume(e.tokA, "alpha", 1, "shown")
	if v := e.showVolume(e.tokA, "alpha", vol); len(v.Attachments) != 0 {
		t.Fatalf("a volume never attached: %+v", v)
	}

	var att struct{ Attachment wire.Attachment }
	e.must(200, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
	uris := att.Attachment.URIs
	if len(uris) != 1 || uris[0] != "nbd+unix:///"+vol+"?socket="+filepath.Join(dir, "nbd.sock") {
		t.Fatalf("attach answered %+v", att.Attachment)
	}
	want := wire.VolumeAttachment{ID: vol, AttachmentID: vol, VolumeID: vol, Device: &uris[0]}
	check := func(when string, v wire.Volume) {
		t.Helper()
		if v.Status != "in-use" || len(v.Attachments) != 1 || !reflect.DeepEqual(v.Attachments[0], want) {
			t.Fatalf("%s: volume %+v, attachments %+v; want %+v", when, v, v.Attachments, want)
		}
		if got := strings.Fields(*v.Attachments[0].Device); !reflect.DeepEqual(got, uris) {
			t.Fatalf("%s: device %q holds %q, want the URIs attach gave, %q", when, *v.Attachments[0].Device, got, uris)
		}
	}
	check("after attach", e.showVolume(e.tokA, "alpha", vol))

	var list struct{ Volumes []wire.Volume }
	e.must(200, e.tokA, "GET", "/v3/alpha/volumes/detail?name=shown", nil, &list)
	if len(list.Volumes) != 1 {
		t.Fatalf("list: %+v", list.Volumes)
	}
	check("in the list", list.Volumes[0])

	// A second attach is refused; the volume still says where it is.
	e.must(409, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-attach": map[string]any{}}, nil)
	check("after a second attach", e.showVolume(e.tokA, "alpha", vol))

	// A restarted service exports the volume again, at the same place.
	e.close()
	e = newEnvAt(t, dir, store)
	check("after a restart", e.showVolume(e.tokA, "alpha", vol))
	if list := e.exports.All(); len(list) != 1 || list[vol].IsZero() {
		t.Fatalf("exports after a restart: %+v", list)
	}

	e.must(202, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
	if v := e.showVolume(e.tokA, "alpha", vol); len(v.Attachments) != 0 || v.Status != "available" {
		t.Fatalf("after detach: %+v", v)
	}
}

// TestVolumeAttachmentOverTCP: with a TCP endpoint too, the attachment's
// device holds both URIs, the unix socket's first.
func TestVolumeAttachmentOverTCP(t *testing.T) {
	dir := t.TempDir()
	e := newEnvAt(t, dir, filepath.Join(t.TempDir(), "backups"), func(c *service.Config) { c.NBDAddress = "127.0.0.1:10809" })
	vol := e.createVolume(e.tokA, "alpha", 1, "")
	var att struct{ Attachment wire.Attachment }
	e.must(200, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
	want := []string{"nbd+unix:///" + vol + "?socket=" + filepath.Join(dir, "nbd.sock"), "nbd://127.0.0.1:10809/" + vol}
	if !reflect.DeepEqual(att.Attachment.URIs, want) {
		t.Fatalf("attach answered %q, want %q", att.Attachment.URIs, want)
	}
	v := e.showVolume(e.tokA, "alpha", vol)
	if len(v.Attachments) != 1 || v.Attachments[0].Device == nil || *v.Attachments[0].Device != strings.Join(want, " ") {
		t.Fatalf("attachments %+v, want the device %q", v.Attachments, strings.Join(want, " "))
	}
}
