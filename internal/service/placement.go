package service

import (
	"slices"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
)

// Placement: whether the one backend can hold a volume of a type.
//
// The block storage API's scheduler places a volume on a backend whose
// capabilities satisfy its type's extra specs; a type that asks for what
// no backend has leaves the volume in error with a user message ("no
// valid backend"). cairn has one backend, whose capabilities are
// backendCapabilities. An extra spec asks for one when its key is the
// capability's name, bare or scoped "capabilities:NAME". A
// "capabilities:" key naming a capability cairn does not have cannot be
// satisfied. Other keys (another scope, or a bare name that is no
// capability of cairn's) describe the type and ask nothing: the block
// storage API's scheduler would refuse a bare unknown name, but cairn's
// types carry such descriptive specs, and a volume of them is placed.
//
// A spec's value is matched as that scheduler's capabilities filter
// does: a plain value must equal the capability; "<is> True|False"
// compares a boolean; "<in> S" holds when S is within the capability;
// "<or> A <or> B ..." when any alternative equals it; "s== S", "s!= S"
// compare strings; "== N", "!= N", ">= N", "<= N" and "= N" (at least)
// compare numbers.

// capabilityScope is the prefix of an extra spec that must match a
// capability.
const capabilityScope = "capabilities:"

// backendCapabilities are the backend's capabilities by the names extra
// specs use, as its pool reports them (Pools, BackendCapabilities).
func (s *Service) backendCapabilities() map[string]string {
	return map[string]string{
		"volume_backend_name":        BackendName,
		"vendor_name":                VendorName,
		"storage_protocol":           StorageProtocol,
		"driver_version":             s.hostInfoOf().version,
		"pool_name":                  BackendName,
		"thin_provisioning_support":  "True",
		"thick_provisioning_support": "False",
		"multiattach":                "False",
		"replication_enabled":        "False",
		"reserved_percentage":        "0",
	}
}

// placeVolume returns nil when the backend can hold a volume of type vt,
// else an ErrInvalid error naming the first extra spec (in key order)
// it cannot satisfy.
func (s *Service) placeVolume(vt cairn.VolumeType) error {
	caps := s.backendCapabilities()
	keys := make([]string, 0, len(vt.ExtraSpecs))
	for k := range vt.ExtraSpecs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		name, scoped := strings.CutPrefix(key, capabilityScope)
		have, ok := caps[name]
		if !ok {
			if scoped {
				return errorf(cairn.ErrInvalid, "no valid backend: volume type %s asks for %s, a capability cairn's backend does not have", vt.Name, key)
			}
			continue
		}
		if !capabilityMatches(have, vt.ExtraSpecs[key]) {
			return errorf(cairn.ErrInvalid, "no valid backend: volume type %s asks for %s %q; cairn's backend has %q", vt.Name, key, vt.ExtraSpecs[key], have)
		}
	}
	return nil
}

// capabilityMatches reports whether the capability value have satisfies
// the extra spec req (see the package comment above).
func capabilityMatches(have, req string) bool {
	words := strings.Fields(req)
	if len(words) == 0 {
		return have == req
	}
	arg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(req), words[0]))
	number := func(cmp func(h, r float64) bool) bool {
		h, err1 := strconv.ParseFloat(have, 64)
		r, err2 := strconv.ParseFloat(arg, 64)
		return err1 == nil && err2 == nil && cmp(h, r)
	}
	switch words[0] {
	case "<is>":
		h, err1 := strconv.ParseBool(have)
		r, err2 := strconv.ParseBool(arg)
		return err1 == nil && err2 == nil && h == r
	case "<in>":
		return strings.Contains(have, arg)
	case "<or>":
		for alt := range strings.SplitSeq(strings.TrimSpace(req), "<or>") {
			if strings.TrimSpace(alt) == have {
				return true
			}
		}
		return false
	case "s==":
		return have == arg
	case "s!=":
		return have != arg
	case "==":
		return number(func(h, r float64) bool { return h == r })
	case "!=":
		return number(func(h, r float64) bool { return h != r })
	case ">=", "=":
		return number(func(h, r float64) bool { return h >= r })
	case "<=":
		return number(func(h, r float64) bool { return h <= r })
	}
	return have == strings.TrimSpace(req)
}
