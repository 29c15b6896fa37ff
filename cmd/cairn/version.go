package main

import (
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"
)

// version names a release. A release build sets it:
//
//	go build -ldflags "-X main.version=v0.4.0" ./cmd/cairn
//
// Without it, a build of a tagged module version (go install …@v0.4.0)
// reports that version, and any other build "devel".
var version string

// pseudoVersion matches the versions Go makes up for untagged commits
// (v0.0.0-20261205101112-8cea331abcde): they say nothing the revision
// does not.
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}$`)

// versionString is what cairn --version prints after "cairn ": the version
// and, when the build stamped it (go build in a git checkout does), the
// commit the binary was built from, the commit's date, and whether the
// checkout had uncommitted changes:
//
//	v0.4.0 (rev 8cea331abcde, 2026-12-05)
//	devel (rev 8cea331abcde, 2026-12-05, modified)
func versionString(set string, info *debug.BuildInfo, ok bool) string {
	v := set
	if v == "" && ok {
		if mv := strings.TrimSuffix(info.Main.Version, "+dirty"); mv != "" && mv != "(devel)" && !pseudoVersion.MatchString(mv) {
			v = mv
		}
	}
	if v == "" {
		v = "devel"
	}
	if !ok {
		return v
	}
	var rev, date string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			date, _, _ = strings.Cut(s.Value, "T")
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		if v == "devel" {
			// go build stamps the commit in a git checkout unless told
			// not to (GOFLAGS=-buildvcs=false, set on some machines).
			return v + " (no revision stamped: build in a git checkout with -buildvcs=auto)"
		}
		return v
	}
	parts := []string{"rev " + rev[:min(12, len(rev))]}
	if date != "" {
		parts = append(parts, date)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return fmt.Sprintf("%s (%s)", v, strings.Join(parts, ", "))
}
