// Package extents reads and writes changed-extents files and does
// arithmetic on sorted extent lists.
//
// A changed-extents file tells a backup which byte ranges of its source
// may differ from its parent backup. Text form:
//
//	# cairn changed-extents v1
//	size 4294967296
//	0 65536
//	1048576 4096
//
// The first line is the header. "size N" is optional and, when present,
// must equal the source size. Every other non-blank line that does not
// start with '#' is "OFFSET LENGTH" in decimal bytes. Extents may come in
// any order and may overlap. The JSON form is
// {"size": N, "extents": [{"offset": O, "length": L}, ...]}.
package extents

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
)

// Header is the first line of the text form.
const Header = "# cairn changed-extents v1"

// MaxExtents bounds a file, so a hostile file cannot exhaust memory.
const MaxExtents = 1 << 24

// List is a changed-extents file's content.
type List struct {
	// Size is the source size the list was made for; -1 when not stated.
	Size    int64          `json:"size"`
	Extents []cairn.Extent `json:"extents"`
}

// Parse reads either form. Extents are returned normalised (sorted, merged).
func Parse(r io.Reader) (*List, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("changed extents: %w", err)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSON(trimmed)
	}
	return parseText(data)
}

func parseJSON(data []byte) (*List, error) {
	l := List{Size: -1}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("changed extents: %v: %w", err, cairn.ErrInvalid)
	}
	if len(l.Extents) > MaxExtents {
		return nil, fmt.Errorf("changed extents: more than %d extents: %w", MaxExtents, cairn.ErrInvalid)
	}
	for i, e := range l.Extents {
		if err := check(e); err != nil {
			return nil, fmt.Errorf("changed extents: extent %d: %w", i, err)
		}
	}
	if l.Size < -1 {
		return nil, fmt.Errorf("changed extents: size %d: %w", l.Size, cairn.ErrInvalid)
	}
	l.Extents = Normalize(l.Extents)
	return &l, nil
}

func check(e cairn.Extent) error {
	if e.Offset < 0 || e.Length <= 0 || e.Offset > math.MaxInt64-e.Length {
		return fmt.Errorf("offset %d length %d: %w", e.Offset, e.Length, cairn.ErrInvalid)
	}
	return nil
}

func parseText(data []byte) (*List, error) {
	l := &List{Size: -1}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 4096)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			if text != Header {
				return nil, fmt.Errorf("changed extents: first line must be %q: %w", Header, cairn.ErrInvalid)
			}
			continue
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("changed extents: line %d: want \"OFFSET LENGTH\": %w", line, cairn.ErrInvalid)
		}
		if fields[0] == "size" {
			if l.Size != -1 {
				return nil, fmt.Errorf("changed extents: line %d: size given twice: %w", line, cairn.ErrInvalid)
			}
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("changed extents: line %d: bad size: %w", line, cairn.ErrInvalid)
			}
			l.Size = n
			continue
		}
		off, err1 := strconv.ParseInt(fields[0], 10, 64)
		length, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("changed extents: line %d: bad number: %w", line, cairn.ErrInvalid)
		}
		e := cairn.Extent{Offset: off, Length: length}
		if err := check(e); err != nil {
			return nil, fmt.Errorf("changed extents: line %d: %w", line, err)
		}
		if len(l.Extents) == MaxExtents {
			return nil, fmt.Errorf("changed extents: more than %d extents: %w", MaxExtents, cairn.ErrInvalid)
		}
		l.Extents = append(l.Extents, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("changed extents: line %d: %v: %w", line+1, err, cairn.ErrInvalid)
	}
	if line == 0 {
		return nil, fmt.Errorf("changed extents: empty file: %w", cairn.ErrInvalid)
	}
	l.Extents = Normalize(l.Extents)
	return l, nil
}

// WriteText writes l in the text form.
func WriteText(w io.Writer, l *List) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, Header)
	if l.Size >= 0 {
		fmt.Fprintf(bw, "size %d\n", l.Size)
	}
	for _, e := range l.Extents {
		fmt.Fprintf(bw, "%d %d\n", e.Offset, e.Length)
	}
	return bw.Flush()
}

// Normalize sorts extents and merges overlapping and adjacent ones. It
// reuses the input's storage.
func Normalize(in []cairn.Extent) []cairn.Extent {
	if len(in) == 0 {
		return in
	}
	slices.SortFunc(in, func(a, b cairn.Extent) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	out := in[:1]
	for _, e := range in[1:] {
		last := &out[len(out)-1]
		if e.Offset <= last.End() {
			if e.End() > last.End() {
				last.Length = e.End() - last.Offset
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// Total returns the number of bytes the (normalised) extents cover.
func Total(list []cairn.Extent) int64 {
	var n int64
	for _, e := range list {
		n += e.Length
	}
	return n
}

// Blocks returns, for normalised extents, the sorted indexes of the
// blockSize-aligned blocks they touch, limited to blocks below nblocks.
func Blocks(list []cairn.Extent, blockSize, nblocks int64) []int64 {
	var out []int64
	for _, e := range list {
		first := e.Offset / blockSize
		last := (e.End() - 1) / blockSize
		if len(out) > 0 && first <= out[len(out)-1] {
			first = out[len(out)-1] + 1
		}
		for b := first; b <= last && b < nblocks; b++ {
			out = append(out, b)
		}
	}
	return out
}
