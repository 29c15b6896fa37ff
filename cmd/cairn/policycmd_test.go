package main

import (
	"errors"
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// TestPolicyTargetFlags: the target flags make the policy's target, and
// volumes and instances are not mixed in one policy.
func TestPolicyTargetFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want cairn.PolicyTarget
		bad  bool
	}{
		{"volumes", []string{"--volume", "a,b"}, cairn.PolicyTarget{Kind: cairn.TargetVolume, IDs: []string{"a", "b"}}, false},
		{"a volume tag", []string{"--tag", "tier=gold"}, cairn.PolicyTarget{Kind: cairn.TargetVolume, Tag: "tier=gold"}, false},
		{"instances", []string{"--instance", "i1", "--instance", "i2"}, cairn.PolicyTarget{Kind: cairn.TargetInstance, IDs: []string{"i1", "i2"}}, false},
		{"an instance tag", []string{"--instance-tag", "tier=gold"}, cairn.PolicyTarget{Kind: cairn.TargetInstance, Tag: "tier=gold"}, false},
		{"instances and a tag", []string{"--instance", "i1", "--instance-tag", "tier=gold"},
			cairn.PolicyTarget{Kind: cairn.TargetInstance, IDs: []string{"i1"}, Tag: "tier=gold"}, false},
		{"a volume and an instance", []string{"--volume", "a", "--instance", "i1"}, cairn.PolicyTarget{}, true},
		{"a volume tag and an instance tag", []string{"--tag", "a=b", "--instance-tag", "c=d"}, cairn.PolicyTarget{}, true},
		{"a volume and an instance tag", []string{"--volume", "a", "--instance-tag", "c=d"}, cairn.PolicyTarget{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("policy", pflag.ContinueOnError)
			var f policyFlags
			addPolicyFlags(fs, &f)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var b wire.PolicyBody
			err := f.apply(fs, &b)
			var usage usageError
			switch {
			case tc.bad && !errors.As(err, &usage):
				t.Fatalf("%v: %v, want a usage error", tc.args, err)
			case !tc.bad && err != nil:
				t.Fatalf("%v: %v", tc.args, err)
			case !tc.bad && !reflect.DeepEqual(b.Target, tc.want):
				t.Fatalf("%v: target %+v, want %+v", tc.args, b.Target, tc.want)
			}
		})
	}
}
