package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/wire"
)

// TestVersionDocument: GET / answers 300 and GET /v3/ 200 with the
// versions document the clients read: the version, the range of
// microversions, absolute links and the media type.
func TestVersionDocument(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/", http.StatusMultipleChoices},
		{"/v3/", http.StatusOK},
	} {
		resp, err := http.Get(e.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Versions []wire.APIVersion }
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.code || len(doc.Versions) != 1 {
			t.Fatalf("GET %s: %d %+v (%v), want %d and one version", tc.path, resp.StatusCode, doc, err, tc.code)
		}
		v := doc.Versions[0]
		if v.ID != "v3.0" || v.Status != "CURRENT" || v.MinVersion != "3.0" || v.Version != "3.10" || v.Updated == "" ||
			len(v.MediaTypes) != 1 || v.MediaTypes[0].Type != "application/vnd.openstack.volume+json;version=3" {
			t.Errorf("GET %s: version %+v", tc.path, v)
		}
		self := ""
		for _, l := range v.Links {
			if l.Rel == "self" {
				self = l.Href
			}
		}
		if self != e.srv.URL+"/v3/" {
			t.Errorf("GET %s: self link %q, want %q", tc.path, self, e.srv.URL+"/v3/")
		}
	}
}

// TestMicroversions: a call under /v3/{project} is served at the
// microversion its OpenStack-API-Version header asks for (the lowest
// without one; "latest" the highest), and says which, with Vary; outside
// the range it is answered 406, malformed 400, and nothing is done.
func TestMicroversions(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		headers []string
		code    int
		served  string
	}{
		{"none", nil, 200, "volume 3.0"},
		{"the lowest", []string{"volume 3.0"}, 200, "volume 3.0"},
		{"latest", []string{"volume latest"}, 200, "volume 3.10"},
		{"the highest", []string{"volume 3.10"}, 200, "volume 3.10"},
		{"between", []string{"volume 3.4"}, 200, "volume 3.4"},
		{"LATEST, service in capitals", []string{"Volume LATEST"}, 200, "volume 3.10"},
		{"another service's only", []string{"compute 2.79"}, 200, "volume 3.0"},
		{"among others", []string{"compute 2.79, volume 3.0"}, 200, "volume 3.0"},
		{"in a second header", []string{"compute 2.79", "volume 3.0"}, 200, "volume 3.0"},
		{"above the range", []string{"volume 3.999"}, 406, ""},
		{"just above the range", []string{"volume 3.11"}, 406, ""},
		{"another major", []string{"volume 2.0"}, 406, ""},
		{"garbage", []string{"volume garbage"}, 400, ""},
		{"a sign", []string{"volume 3.+1"}, 400, ""},
		{"no minor", []string{"volume 3"}, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", e.srv.URL+"/v3/alpha/volumes", nil)
			req.Header.Set("X-Auth-Token", e.tokA)
			for _, h := range tc.headers {
				req.Header.Add("OpenStack-API-Version", h)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || resp.Header.Get("OpenStack-API-Version") != tc.served {
				t.Fatalf("%d, served at %q: %v; want %d at %q", resp.StatusCode, resp.Header.Get("OpenStack-API-Version"), body, tc.code, tc.served)
			}
			if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "OpenStack-API-Version") {
				t.Errorf("Vary %q", resp.Header.Values("Vary"))
			}
			switch tc.code {
			case 406:
				// The block storage API names no fault for 406: its
				// generic computeFault, as its own answers.
				if f, ok := body["computeFault"].(map[string]any); !ok || !strings.Contains(f["message"].(string), "3.0 to 3.10") {
					t.Errorf("406 body %v: want a fault naming the range", body)
				}
			case 400:
				if _, ok := body["badRequest"]; !ok {
					t.Errorf("400 body %v", body)
				}
			}
		})
	}
	// Without a token, 401 comes first.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.srv.URL+"/v3/alpha/volumes", nil)
	req.Header.Set("OpenStack-API-Version", "volume 9.9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no token, a bad version: %d, want 401", resp.StatusCode)
	}
}
