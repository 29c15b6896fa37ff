package main

import (
	"strings"
	"testing"
)

func TestDriverVersion(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	if got := driverVersion(); got != "1.2.3" {
		t.Errorf("release v1.2.3: %q", got)
	}
	version = ""
	if got := driverVersion(); strings.Contains(got, " ") || strings.HasPrefix(got, "v") {
		t.Errorf("build of no release: %q", got)
	}
}
