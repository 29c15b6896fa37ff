package sqlstore

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cairnproject/cairn"
)

// TestMetadataColumn: metadataArg and metadataDest round-trip a volume's
// metadata; none (nil or empty) is the empty string and reads back nil;
// a column that holds anything but a JSON object of strings is damage
// (cairn.ErrCorrupt), not a row without metadata.
func TestMetadataColumn(t *testing.T) {
	for _, m := range []map[string]string{nil, {}, {"a": "b"}, {"ü": "✓", "": "x", "q\"": "\\\n"}} {
		arg := metadataArg(m)
		if len(m) == 0 && arg != "" {
			t.Errorf("metadataArg(%v) = %q, want the empty string", m, arg)
		}
		for _, col := range []any{arg, []byte(arg)} {
			got := map[string]string{"stale": "x"}
			if err := (metadataDest{&got}).Scan(col); err != nil {
				t.Errorf("Scan(%T %q): %v", col, arg, err)
				continue
			}
			want := m
			if len(m) == 0 {
				want = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Scan(%T %q) = %#v, want %#v", col, arg, got, want)
			}
		}
	}
	for _, col := range []any{nil, "", "{}", []byte("{}")} {
		got := map[string]string{"stale": "x"}
		if err := (metadataDest{&got}).Scan(col); err != nil || got != nil {
			t.Errorf("Scan(%#v) = %v, %v; want nil, nil", col, got, err)
		}
	}
	for _, col := range []any{"{", `{"a":1}`, `["a"]`, `"a"`, []byte(`{"a":null,`)} {
		var got map[string]string
		if err := (metadataDest{&got}).Scan(col); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("Scan(%#v): %v, want an error wrapping ErrCorrupt", col, err)
		}
	}
	var got map[string]string
	if err := (metadataDest{&got}).Scan(int64(1)); err == nil {
		t.Error("Scan(int64): no error")
	}
}
