package dbagent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
)

// A dump file holds several named streams in one, for a logical backup
// made by several programs (PostgreSQL: the roles, then one pg_dump
// archive per database), written as they run without knowing their
// lengths:
//
//	file    = magic section* 'E'
//	magic   = "CAIRNDUMP1\n"
//	section = 'S' uvarint(len(name)) name chunk* uvarint(0)
//	chunk   = uvarint(n) n bytes, 1 <= n <= MaxDumpChunk
//
// Names are UTF-8 of 1 to 255 bytes.
const dumpMagic = "CAIRNDUMP1\n"

// MaxDumpChunk is the largest chunk a dump file holds.
const MaxDumpChunk = 1 << 20

// DumpWriter writes a dump file. It is not safe for concurrent use.
type DumpWriter struct {
	w       io.Writer
	section bool
	err     error
}

// NewDumpWriter starts a dump file on w.
func NewDumpWriter(w io.Writer) (*DumpWriter, error) {
	if _, err := io.WriteString(w, dumpMagic); err != nil {
		return nil, err
	}
	return &DumpWriter{w: w}, nil
}

// Section starts the named section; write its content to the returned
// writer and close it before the next section.
func (d *DumpWriter) Section(name string) (io.WriteCloser, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.section {
		return nil, errors.New("dump file: previous section not closed")
	}
	if name == "" || len(name) > 255 || !utf8.ValidString(name) {
		return nil, fmt.Errorf("dump file: section name %q: %w", name, cairn.ErrInvalid)
	}
	hdr := append([]byte{'S'}, binary.AppendUvarint(nil, uint64(len(name)))...)
	if _, err := d.w.Write(append(hdr, name...)); err != nil {
		d.err = err
		return nil, err
	}
	d.section = true
	return &dumpSection{d: d}, nil
}

// Close ends the dump file.
func (d *DumpWriter) Close() error {
	if d.err != nil {
		return d.err
	}
	if d.section {
		return errors.New("dump file: section not closed")
	}
	_, err := d.w.Write([]byte{'E'})
	d.err = errors.New("dump file closed")
	return err
}

type dumpSection struct{ d *DumpWriter }

func (s *dumpSection) Write(p []byte) (int, error) {
	if s.d.err != nil {
		return 0, s.d.err
	}
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxDumpChunk)
		if _, err := s.d.w.Write(binary.AppendUvarint(nil, uint64(c))); err != nil {
			s.d.err = err
			return n, err
		}
		m, err := s.d.w.Write(p[:c])
		n += m
		if err != nil {
			s.d.err = err
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

func (s *dumpSection) Close() error {
	if !s.d.section {
		return nil
	}
	s.d.section = false
	if s.d.err != nil {
		return s.d.err
	}
	_, err := s.d.w.Write([]byte{0})
	if err != nil {
		s.d.err = err
	}
	return err
}

// DumpReader reads a dump file: Next moves to the next section, Read
// reads the current one.
type DumpReader struct {
	r       *bufio.Reader
	left    int  // bytes left in the current chunk
	inSect  bool // inside a section whose end was not read
	sectEnd bool // the current section's end was read
	done    bool
}

// NewDumpReader checks the magic of the dump file r.
func NewDumpReader(r io.Reader) (*DumpReader, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(dumpMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != dumpMagic {
		return nil, fmt.Errorf("dump file: no magic: %w", cairn.ErrCorrupt)
	}
	return &DumpReader{r: br}, nil
}

func corruptDump(what string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("dump file: %s: %v: %w", what, err, cairn.ErrCorrupt)
}

// Next skips what is left of the current section and returns the next
// section's name, or io.EOF after the last.
func (d *DumpReader) Next() (string, error) {
	if d.done {
		return "", io.EOF
	}
	for d.inSect && !d.sectEnd {
		if _, err := io.Copy(io.Discard, d); err != nil {
			return "", err
		}
	}
	tag, err := d.r.ReadByte()
	if err != nil {
		return "", corruptDump("section tag", err)
	}
	switch tag {
	case 'E':
		d.done = true
		return "", io.EOF
	case 'S':
	default:
		return "", corruptDump("section tag", fmt.Errorf("byte %#x", tag))
	}
	n, err := binary.ReadUvarint(d.r)
	if err != nil {
		return "", corruptDump("section name", err)
	}
	if n == 0 || n > 255 {
		return "", corruptDump("section name", fmt.Errorf("length %d", n))
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(d.r, name); err != nil {
		return "", corruptDump("section name", err)
	}
	if !utf8.Valid(name) {
		return "", corruptDump("section name", errors.New("not UTF-8"))
	}
	d.inSect, d.sectEnd, d.left = true, false, 0
	return string(name), nil
}

// Read reads the current section; it returns io.EOF at the section's end.
func (d *DumpReader) Read(p []byte) (int, error) {
	if !d.inSect || d.sectEnd {
		return 0, io.EOF
	}
	if d.left == 0 {
		n, err := binary.ReadUvarint(d.r)
		if err != nil {
			return 0, corruptDump("chunk length", err)
		}
		if n > MaxDumpChunk {
			return 0, corruptDump("chunk length", fmt.Errorf("%d bytes", n))
		}
		if n == 0 {
			d.sectEnd = true
			return 0, io.EOF
		}
		d.left = int(n)
	}
	if len(p) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.left -= n
	if err != nil {
		return n, corruptDump("chunk", err)
	}
	return n, nil
}
