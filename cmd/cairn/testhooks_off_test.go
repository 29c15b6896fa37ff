//go:build !cairn_testhooks

package main

import "testing"

// TestNoHooksInProductionBuilds: a build without the cairn_testhooks tag
// reads no hook setting and wraps nothing.
func TestNoHooksInProductionBuilds(t *testing.T) {
	h, err := newTestHooks(func(k string) string {
		t.Errorf("a production build read %s", k)
		return "store.put chunks/#1"
	})
	if h != nil || err != nil {
		t.Fatalf("newTestHooks = %v, %v; want none", h, err)
	}
}
