package wire

import (
	"go/build"
	"strings"
	"testing"
)

// TestLayers holds the API's packages to their layers: wire needs only
// the root package and the standard library; the client needs wire and
// nothing of the server; the API reaches the catalog only through the
// service.
func TestLayers(t *testing.T) {
	const module = "github.com/cairnproject/cairn"
	cases := []struct {
		dir string
		may func(path string) bool
	}{
		{".", func(p string) bool { return p == module || !strings.Contains(p, ".") }},
		{"../client", func(p string) bool {
			return !strings.HasPrefix(p, module+"/internal/") || p == module+"/internal/wire"
		}},
		{"../api", func(p string) bool {
			return !strings.HasPrefix(p, module+"/internal/catalog")
		}},
	}
	for _, c := range cases {
		pkg, err := build.ImportDir(c.dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pkg.Imports {
			if !c.may(imp) {
				t.Errorf("package %s imports %s", pkg.Name, imp)
			}
		}
	}
}
