package api

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzRequestedVersion: whatever a client sends in OpenStack-API-Version,
// the negotiation answers a version or an error, never panics, and a
// version it answers prints back as what it read.
func FuzzRequestedVersion(f *testing.F) {
	for _, s := range []string{"volume 3.0", "volume latest", "compute 2.79, volume 3.5", "volume 3.", "volume .1",
		"volume 3.99999999999999999999", "volume -3.0", "VOLUME 3.0", "volume  3.0", "", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		h := http.Header{}
		h.Set(versionHeader, header)
		v, err := requestedVersion(h)
		if err != nil {
			return
		}
		if v.Major < 0 || v.Minor < 0 {
			t.Fatalf("%q read as %s", header, v)
		}
		if back, err := parseMicroversion(v.String()); err != nil || back != v {
			t.Fatalf("%q read as %s, which reads back as %s (%v)", header, v, back, err)
		}
		if strings.TrimSpace(header) == "" && v != minMicroversion() {
			t.Fatalf("no header read as %s", v)
		}
	})
}
