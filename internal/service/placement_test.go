package service

import "testing"

// TestCapabilityMatches: each operator of the block storage API's
// capabilities filter, matching and not.
func TestCapabilityMatches(t *testing.T) {
	for _, tc := range []struct {
		have, req string
		want      bool
	}{
		{"nbd", "nbd", true},
		{"nbd", "NBD", false},
		{"nbd", " nbd ", true},
		{"nbd", "iSCSI", false},
		{"", "", true},
		{"True", "<is> True", true},
		{"True", "<is> true", true},
		{"False", "<is> True", false},
		{"True", "<is> maybe", false},
		{"cairn", "<in> air", true},
		{"cairn", "<in> lvm", false},
		{"nbd", "<or> iSCSI <or> nbd", true},
		{"nbd", "<or> iSCSI <or> FC", false},
		{"1.0", "s== 1.0", true},
		{"1.0", "s!= 1.0", false},
		{"1.0", "s!= 2.0", true},
		{"0", "== 0", true},
		{"0", "!= 0", false},
		{"0", "<= 10", true},
		{"0", ">= 10", false},
		{"20", "= 10", true},
		{"x", ">= 10", false},
		{"10", ">= ten", false},
	} {
		if got := capabilityMatches(tc.have, tc.req); got != tc.want {
			t.Errorf("capability %q, spec %q: %v, want %v", tc.have, tc.req, got, tc.want)
		}
	}
}
