package dbagent

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/cairnproject/cairn"
)

func TestParseLSN(t *testing.T) {
	for _, c := range []struct {
		in   string
		want LSN
		ok   bool
	}{
		{"0/0", 0, true},
		{"0/2000028", 0x2000028, true},
		{"16/B374D848", 0x16_B374D848, true},
		{"ffffffff/ffffffff", ^LSN(0), true},
		{"", 0, false},
		{"0", 0, false},
		{"/1", 0, false},
		{"1/", 0, false},
		{"1/2/3", 0, false},
		{"123456789/0", 0, false},
		{"0/-1", 0, false},
		{"0/+1", 0, false},
		{"0x1/2", 0, false},
		{" 0/1", 0, false},
	} {
		got, err := ParseLSN(c.in)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v ok=%v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("ParseLSN(%q) error %v is not ErrInvalid", c.in, err)
		}
	}
	b, err := json.Marshal(struct{ L LSN }{0x16_B374D848})
	if err != nil || string(b) != `{"L":"16/B374D848"}` {
		t.Errorf("JSON = %s, %v", b, err)
	}
	var back struct{ L LSN }
	if err := json.Unmarshal(b, &back); err != nil || back.L != 0x16_B374D848 {
		t.Errorf("JSON back = %v, %v", back.L, err)
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "0/2000028", "16/B374D848", "ffffffff/ffffffff", "1/2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		again, err := ParseLSN(l.String())
		if err != nil || again != l {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, l, l.String(), again, err)
		}
	})
}
