package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/testenv"
)

// TestParsePythonDict: the forms repr writes are read, with every escape
// it uses; anything else is ErrInvalid with a message saying where.
func TestParsePythonDict(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{`{}`, map[string]string{}},
		{`{'a': 'b'}`, map[string]string{"a": "b"}},
		{`{'a': 'b', 'c': 'd'}`, map[string]string{"a": "b", "c": "d"}},
		{`{'a':'b','c':'d'}`, map[string]string{"a": "b", "c": "d"}},
		{`  {  'a'  :  'b'  }  `, map[string]string{"a": "b"}},
		{`{'': ''}`, map[string]string{"": ""}}, // the service refuses the empty key
		{`{"it's": 'x'}`, map[string]string{"it's": "x"}},
		{`{'both \' and "': "x"}`, map[string]string{`both ' and "`: "x"}},
		{`{"a\"b": 'x'}`, map[string]string{`a"b`: "x"}},
		{`{'back\\slash': 'tab\there'}`, map[string]string{`back\slash`: "tab\there"}},
		{`{'nl': 'a\nb\rc'}`, map[string]string{"nl": "a\nb\rc"}},
		{`{'ctl': '\x00\x1f\x7f\xa0'}`, map[string]string{"ctl": "\x00\x1f\u007f\u00a0"}},
		{`{'u': '\u200b\U0001f600'}`, map[string]string{"u": "\u200b\U0001f600"}},
		{`{'日本': 'ünïcode ✓'}`, map[string]string{"日本": "ünïcode ✓"}},
		{`{'a': '{', '}': ','}`, map[string]string{"a": "{", "}": ","}},
	} {
		got, err := parsePythonDict(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %q %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, says string }{
		{``, "ends where { should be"},
		{`a=b`, `'a' at offset 0 where { should be`},
		{`{'a': 'b'`, "ends where , or } should be"},
		{`{'a': 'b',}`, "a key at offset 10 is not a quoted string"},
		{`{'a': 'b'} x`, "data after the dict"},
		{`{'a': 'b'}{}`, "data after the dict"},
		{`{'a' 'b'}`, ": after a key"},
		{`{'a': 1}`, "a string value at offset 6 is not a quoted string"},
		{`{'a': None}`, "not a quoted string"},
		{`{'a': ['b']}`, "not a quoted string"},
		{`{a: 'b'}`, "a key at offset 1 is not a quoted string"},
		{`{u'a': 'b'}`, "not a quoted string"},
		{`{'a': 'b' 'c'}`, ", or }"},
		{`{'a': 'b', 'a': 'c'}`, `key "a" given twice`},
		{`{'a: 'b'}`, ": after a key"},
		{`{'a': 'b}`, "not closed"},
		{`{'a': 'b\`, "not closed"},
		{"{'a': 'b\tc'}", "raw control character"},
		{"{'a': 'b\nc'}", "raw control character"},
		{`{'a': '\q'}`, `an escape \q`},
		{`{'a': '\0'}`, `an escape \0`},
		{`{'a': '\N{DASH}'}`, `an escape \N`},
		{`{'a': '\x4'}`, `a bad \x escape`},
		{`{'a': '\x4`, `a short \x escape`},
		{`{'a': '\u12g4'}`, `a bad \u escape`},
		{`{'a': '\ud800'}`, `a bad \u escape`},
		{`{'a': '\U00110000'}`, `a bad \U escape`},
		{`{'a': '\x+1'}`, `a bad \x escape`},
		{"{'a': '\xff'}", "not UTF-8"},
		{`{'a', 'b'}`, ": after a key"},
		{`['a', 'b']`, "where { should be"},
	} {
		got, err := parsePythonDict(tc.in)
		if !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %q %v; want ErrInvalid saying %q", tc.in, got, err, tc.says)
		}
	}
}

// TestParsePythonDictFromPython: what Python itself writes for the
// block storage clients, str(dict) put in a query by urlencode as the
// cinder command does, reads back as the dict, for strings that need
// each of repr's quotes and escapes.
func TestParsePythonDictFromPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		testenv.SkipOrFail(t, "python3 is missing: apt-get install python3")
	}
	dicts := []map[string]string{
		{"a": "b"},
		{"tier": "gold", "owner": "team a", "empty": ""},
		{"it's": "x", `"quoted"`: `both ' and "`},
		{`back\slash`: "tab\tnew\nline\rret", "ctl": "\x00\x01\x1b\x7f", "c1": "\u0085\u00a0\u00ad"},
		{"日本": "語", "emoji": "\U0001f600", "zw": "\u200b\u2028\ufeff", "ünïcode ✓": "ok"},
		{"braces{}": "[list]", "colon: comma,": "= & ? # %"},
	}
	in, _ := json.Marshal(dicts)
	// One query string a line, as cinderclient's build_query_param
	// encodes a search option holding a dict.
	script := `import json, sys, urllib.parse
for d in json.loads(sys.argv[1]):
    print(urllib.parse.urlencode([('metadata', d)]))`
	out, err := exec.CommandContext(t.Context(), "python3", "-c", script, string(in)).Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(dicts) {
		t.Fatalf("python3 printed %d lines for %d dicts:\n%s", len(lines), len(dicts), out)
	}
	for i, line := range lines {
		q, err := url.ParseQuery(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		got, err := parsePythonDict(q.Get("metadata"))
		if err != nil || !reflect.DeepEqual(got, dicts[i]) {
			t.Errorf("python's %s (%s): %q %v; want %q", q.Get("metadata"), line, got, err, dicts[i])
		}
	}
}

// pyRepr writes m as Python's repr would, near enough for a round trip:
// its quotes, and escapes for backslashes, quotes and ASCII controls.
func pyRepr(m map[string]string) string {
	str := func(s string) string {
		q := byte('\'')
		if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
			q = '"'
		}
		var b strings.Builder
		b.WriteByte(q)
		for _, r := range s {
			switch {
			case r == '\\' || r == rune(q):
				b.WriteByte('\\')
				b.WriteRune(r)
			case r == '\t':
				b.WriteString(`\t`)
			case r == '\n':
				b.WriteString(`\n`)
			case r == '\r':
				b.WriteString(`\r`)
			case r < 0x20 || r == 0x7f:
				fmt.Fprintf(&b, `\x%02x`, r)
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte(q)
		return b.String()
	}
	var items []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		items = append(items, str(k)+": "+str(m[k]))
	}
	return "{" + strings.Join(items, ", ") + "}"
}

// FuzzParsePythonDict: any input is read or refused with ErrInvalid,
// never a panic; what is read is valid UTF-8 and reads back the same
// from its repr.
func FuzzParsePythonDict(f *testing.F) {
	for _, s := range []string{`{}`, `{'a': 'b'}`, `{"it's": 'x\n\x00\u200b\U0001f600'}`, `{'a': 'b', 'c': 'd'}`,
		`{'a': 1}`, `{'a': 'b',}`, "{'\\", `{'a': '\ud800'}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parsePythonDict(s)
		if err != nil {
			if !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("%q: %v, not ErrInvalid", s, err)
			}
			return
		}
		back, err := parsePythonDict(pyRepr(m))
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("%q read as %q; its repr %s reads as %q %v", s, m, pyRepr(m), back, err)
		}
	})
}
