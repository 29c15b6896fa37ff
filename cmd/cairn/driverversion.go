package main

import (
	"runtime/debug"
	"strings"
)

// driverVersion is the version the block storage API's pools and
// capabilities report (driver_version): the release this binary is,
// without its leading "v", or "" (the service's default) for a build of
// no release.
func driverVersion() string {
	info, ok := debug.ReadBuildInfo()
	v, _, _ := strings.Cut(versionString(version, info, ok), " ")
	if v == "devel" {
		return ""
	}
	return strings.TrimPrefix(v, "v")
}
