package dbagent

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
)

func writeDump(t testing.TB, sections ...[2]string) []byte {
	var b bytes.Buffer
	dw, err := NewDumpWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sections {
		w, err := dw.Section(s[0])
		if err != nil {
			t.Fatal(err)
		}
		// Several writes, one of them empty.
		half := len(s[1]) / 2
		for _, part := range []string{s[1][:half], "", s[1][half:]} {
			if _, err := io.WriteString(w, part); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readDump(r io.Reader) ([][2]string, error) {
	dr, err := NewDumpReader(r)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for {
		name, err := dr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(dr)
		if err != nil {
			return out, err
		}
		out = append(out, [2]string{name, string(b)})
	}
}

func TestDumpFileRoundTrip(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", MaxDumpChunk/16*2+3) // three chunks
	sections := [][2]string{{"roles", "CREATE ROLE x;\n"}, {"database:app", big}, {"empty", ""}}
	b := writeDump(t, sections...)
	got, err := readDump(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sections) {
		t.Fatalf("%d sections, want %d", len(got), len(sections))
	}
	for i := range got {
		if got[i] != sections[i] {
			t.Errorf("section %d: %q (%d bytes), want %q (%d bytes)", i, got[i][0], len(got[i][1]), sections[i][0], len(sections[i][1]))
		}
	}
	// Next skips what is not read.
	dr, err := NewDumpReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		name, err := dr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if strings.Join(names, ",") != "roles,database:app,empty" {
		t.Errorf("names %v", names)
	}
	// Every cut of the stream fails as corrupt, never as a clean end.
	for _, n := range []int{0, 5, len(dumpMagic), len(dumpMagic) + 3, len(b) / 2, len(b) - 1} {
		if _, err := readDump(bytes.NewReader(b[:n])); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("cut at %d: %v, want ErrCorrupt", n, err)
		}
	}
}

func TestDumpWriterMisuse(t *testing.T) {
	dw, err := NewDumpWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dw.Section(""); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := dw.Section(strings.Repeat("n", 256)); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("long name: %v", err)
	}
	w, err := dw.Section("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dw.Section("b"); err == nil {
		t.Error("a second section while one is open")
	}
	if err := dw.Close(); err == nil {
		t.Error("closing with a section open")
	}
	w.Close()
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dw.Section("c"); err == nil {
		t.Error("a section after Close")
	}
}

// FuzzDumpReader: any input reads to an end or fails as corrupt, and a
// file that reads cleanly writes back to the same bytes.
func FuzzDumpReader(f *testing.F) {
	f.Add(writeDump(f, [2]string{"roles", "CREATE ROLE x;"}, [2]string{"database:app", "PGDMP"}))
	f.Add([]byte(dumpMagic + "E"))
	f.Add([]byte(dumpMagic + "S\x01a\x03abc\x00E"))
	f.Add([]byte(dumpMagic + "S\x01a\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readDump(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, cairn.ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		again, err := readDump(bytes.NewReader(writeDump(t, got...)))
		if err != nil || len(again) != len(got) {
			t.Fatalf("rewritten: %v, %d sections, want %d", err, len(again), len(got))
		}
		for i := range got {
			if again[i] != got[i] {
				t.Fatalf("section %d differs after rewriting", i)
			}
		}
	})
}
