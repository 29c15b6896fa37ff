package extents_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
)

func TestParseText(t *testing.T) {
	in := extents.Header + "\n# a comment\nsize 100\n\n50 10\n0 5\n5 5\n55 20\n"
	l, err := extents.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []cairn.Extent{{Offset: 0, Length: 10}, {Offset: 50, Length: 25}}
	if l.Size != 100 || !reflect.DeepEqual(l.Extents, want) {
		t.Fatalf("got size %d extents %v", l.Size, l.Extents)
	}
	var buf bytes.Buffer
	if err := extents.WriteText(&buf, l); err != nil {
		t.Fatal(err)
	}
	again, err := extents.Parse(&buf)
	if err != nil || !reflect.DeepEqual(again, l) {
		t.Fatalf("round trip: %v, %+v", err, again)
	}
}

func TestParseJSON(t *testing.T) {
	l, err := extents.Parse(strings.NewReader(`{"size": 10, "extents": [{"offset": 4, "length": 2}, {"offset": 0, "length": 1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.Size != 10 || len(l.Extents) != 2 || l.Extents[0].Offset != 0 {
		t.Fatalf("%+v", l)
	}
	l, err = extents.Parse(strings.NewReader(`{"extents": []}`))
	if err != nil || l.Size != -1 {
		t.Fatalf("no size: %+v %v", l, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"0 10\n",
		extents.Header + "\n0\n",
		extents.Header + "\n-1 10\n",
		extents.Header + "\n0 0\n",
		extents.Header + "\n0 x\n",
		extents.Header + "\n9223372036854775807 10\n",
		extents.Header + "\nsize 1\nsize 2\n",
		extents.Header + "\n" + strings.Repeat("1", 5000) + " 1\n",
		`{"extents": [{"offset": -1, "length": 1}]}`,
		`{"extents": [], "bogus": 1}`,
		`{"extents": [`,
	} {
		if _, err := extents.Parse(strings.NewReader(in)); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%.40q: %v, want ErrInvalid", in, err)
		}
	}
}

func TestBlocks(t *testing.T) {
	list := []cairn.Extent{{Offset: 0, Length: 1}, {Offset: 10, Length: 1}, {Offset: 15, Length: 20}, {Offset: 95, Length: 100}}
	got := extents.Blocks(list, 10, 10)
	if fmt.Sprint(got) != "[0 1 2 3 9]" {
		t.Fatalf("got %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(extents.Header + "\nsize 100\n0 10\n50 5\n"))
	f.Add([]byte(`{"size": 10, "extents": [{"offset": 4, "length": 2}]}`))
	f.Add([]byte(extents.Header + "\n# c\n\n1 1\n1 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := extents.Parse(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		for i, e := range l.Extents {
			if e.Length <= 0 || e.Offset < 0 || (i > 0 && e.Offset <= l.Extents[i-1].End()) {
				t.Fatalf("not normalised: %v", l.Extents)
			}
		}
		var buf bytes.Buffer
		if err := extents.WriteText(&buf, l); err != nil {
			t.Fatal(err)
		}
		again, err := extents.Parse(&buf)
		if err != nil || !reflect.DeepEqual(again.Extents, l.Extents) && len(l.Extents) > 0 || again.Size != l.Size {
			t.Fatalf("round trip: %v", err)
		}
	})
}
