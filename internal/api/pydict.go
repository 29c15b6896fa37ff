package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
)

// parsePythonDict reads the metadata list filter as the block storage
// API's clients send it: the Python repr of a dict of strings, such as
// {'a': 'b', 'c': "it's"} (the cinder command's `list --metadata a=b
// c=it's` puts str(dict) in the query). The block storage API hands it
// to Python's literal_eval; this takes only what repr writes:
//   - strings in single or double quotes (repr takes double ones for a
//     string with a single quote and no double one), with the escapes \\, \', \", \t, \n, \r, \xHH,
//     \uHHHH and \UHHHHHHHH (repr's, for characters it does not print),
//     each a Unicode scalar value;
//   - no raw control character, no string prefix (u or b), no
//     trailing comma, no key given twice, no value but a string;
//   - spaces (any number, or none) around the punctuation.
//
// Anything else is cairn.ErrInvalid, so a filter that was not understood
// is refused rather than read as some other filter (or none).
func parsePythonDict(s string) (map[string]string, error) {
	p := pyParser{s: s}
	m, err := p.dict()
	if err != nil {
		return nil, fmt.Errorf("metadata %q: %s; want a Python dict of strings, such as {'key': 'value'}: %w", s, err, cairn.ErrInvalid)
	}
	return m, nil
}

// pyParser reads s from i on.
type pyParser struct {
	s string
	i int
}

func (p *pyParser) spaces() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

// take consumes c, after spaces, or fails naming what it wanted.
func (p *pyParser) take(c byte, what string) error {
	p.spaces()
	if p.i >= len(p.s) {
		return fmt.Errorf("ends where %s should be", what)
	}
	if p.s[p.i] != c {
		return fmt.Errorf("%q at offset %d where %s should be", p.s[p.i], p.i, what)
	}
	p.i++
	return nil
}

func (p *pyParser) dict() (map[string]string, error) {
	if !utf8.ValidString(p.s) {
		return nil, errors.New("not UTF-8")
	}
	if err := p.take('{', "{"); err != nil {
		return nil, err
	}
	m := map[string]string{}
	p.spaces()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
	} else {
		for {
			k, err := p.str("a key")
			if err != nil {
				return nil, err
			}
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("key %q given twice", k)
			}
			if err := p.take(':', ": after a key"); err != nil {
				return nil, err
			}
			v, err := p.str("a string value")
			if err != nil {
				return nil, err
			}
			m[k] = v
			p.spaces()
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				break
			}
			if err := p.take(',', ", or }"); err != nil {
				return nil, err
			}
		}
	}
	p.spaces()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("data after the dict at offset %d", p.i)
	}
	return m, nil
}

// str reads a quoted string (what names it for errors).
func (p *pyParser) str(what string) (string, error) {
	p.spaces()
	if p.i >= len(p.s) {
		return "", fmt.Errorf("ends where %s should be", what)
	}
	q := p.s[p.i]
	if q != '\'' && q != '"' {
		return "", fmt.Errorf("%s at offset %d is not a quoted string", what, p.i)
	}
	start := p.i
	p.i++
	var b strings.Builder
	for {
		if p.i >= len(p.s) {
			return "", fmt.Errorf("the string at offset %d is not closed", start)
		}
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), nil
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("a raw control character at offset %d", p.i)
		case c != '\\':
			b.WriteByte(c)
			p.i++
			continue
		}
		// An escape.
		if p.i+1 >= len(p.s) {
			return "", fmt.Errorf("the string at offset %d is not closed", start)
		}
		e := p.s[p.i+1]
		p.i += 2
		switch e {
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'x', 'u', 'U':
			n := 2 // hex digits
			switch e {
			case 'u':
				n = 4
			case 'U':
				n = 8
			}
			if p.i+n > len(p.s) {
				return "", fmt.Errorf(`a short \%c escape at offset %d`, e, p.i-2)
			}
			code, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
			if err != nil || !utf8.ValidRune(rune(code)) {
				return "", fmt.Errorf(`a bad \%c escape at offset %d`, e, p.i-2)
			}
			b.WriteRune(rune(code))
			p.i += n
		default:
			return "", fmt.Errorf(`an escape \%c at offset %d that repr does not write`, e, p.i-2)
		}
	}
}
