// Package binlog reads MariaDB's binary log as it streams past: the
// events' boundaries, times and server IDs, the GTIDs that begin
// transactions and the events that end them. The archive uses it to cut
// pieces at event boundaries, to say which seconds a restore can reach,
// and to check that the GTIDs follow one another.
//
// Only the common event header (19 bytes), the format description event
// (which says whether events carry a CRC-32), GTID events, XID events and
// the query events that commit are decoded (MariaDB's log-event.h,
// binary log version 4). Bytes that do not parse are an error: a binary
// log has no resynchronisation point short of the next file.
package binlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Magic begins every binary log file.
var Magic = [4]byte{0xfe, 'b', 'i', 'n'}

// Event types this package looks into (MariaDB's Log_event_type).
const (
	TypeQuery             = 2
	TypeStop              = 3
	TypeRotate            = 4
	TypeFormatDescription = 15
	TypeXID               = 16
	TypeBinlogCheckpoint  = 161
	TypeGTID              = 162
	TypeGTIDList          = 163
)

const (
	headerSize = 19
	// maxEvent bounds an event (max_allowed_packet's ceiling, 1 GiB).
	maxEvent = 1 << 30
	// gtidStandalone marks a GTID event whose transaction is its one
	// following event (DDL).
	gtidStandalone = 1
	// checksumCRC32 is the format description's checksum algorithm byte
	// for CRC-32.
	checksumCRC32 = 1
	// logInUse is the format description's flag of a file being written.
	logInUse = 1
)

// GTID is a MariaDB global transaction ID: domain-server-sequence.
type GTID struct {
	Domain, Server uint32
	Seq            uint64
}

func (g GTID) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

// Event is one event of a binary log.
type Event struct {
	// Pos is where the event starts in its file, End where it ends.
	Pos, End uint64
	Type     byte
	// Time is the event's timestamp (seconds): what mariadb-binlog's
	// --stop-datetime compares with.
	Time     time.Time
	ServerID uint32
	// GTID is set on a GTID event: the transaction it begins.
	GTID *GTID
	// Commit says the event ends a transaction (an XID event, a COMMIT
	// query, or the one event of a standalone GTID's transaction).
	Commit bool
	// NextFile is a rotate event's next file.
	NextFile string
}

// ErrDamaged is the error of bytes that are not a binary log.
var ErrDamaged = errors.New("not a MariaDB binary log")

// Decoder decodes a binary log file fed to it in order, from its start
// (the magic) or, with NewDecoderAt, from an event boundary. It is not
// safe for concurrent use.
type Decoder struct {
	pos      uint64 // position of the next byte fed
	magic    int    // magic bytes still expected
	checksum bool   // events end with a CRC-32 (known from the format description)
	known    bool   // whether checksum is known
	buf      []byte // the event being read
	need     int    // its size once its header is read; 0 before
	// standalone: the next event ends a standalone GTID's transaction.
	standalone bool
	out        []Event
}

// NewDecoder returns a decoder for a file from its start.
func NewDecoder() *Decoder { return &Decoder{magic: len(Magic)} }

// NewDecoderAt returns a decoder for a file from pos, an event boundary,
// whose events carry a CRC-32 when checksum is set (as the file's
// format description said).
func NewDecoderAt(pos uint64, checksum bool) *Decoder {
	return &Decoder{pos: pos, checksum: checksum, known: true}
}

// Pos is the position of the next byte to feed; Boundary whether it is
// between events.
func (d *Decoder) Pos() uint64     { return d.pos }
func (d *Decoder) Boundary() bool  { return d.magic == 0 && len(d.buf) == 0 }
func (d *Decoder) Checksums() bool { return d.checksum }

// Write feeds the next bytes and returns the events that ended in them
// (the slice is reused by the next call). After an error the decoder is
// of no further use.
func (d *Decoder) Write(p []byte) ([]Event, error) {
	d.out = d.out[:0]
	for len(p) > 0 {
		if d.magic > 0 {
			i := len(Magic) - d.magic
			if p[0] != Magic[i] {
				return d.out, fmt.Errorf("binary log: bad magic at %d: %w", d.pos, ErrDamaged)
			}
			d.magic--
			d.pos++
			p = p[1:]
			continue
		}
		if d.need == 0 {
			n := min(headerSize-len(d.buf), len(p))
			d.buf = append(d.buf, p[:n]...)
			p = p[n:]
			if len(d.buf) < headerSize {
				continue
			}
			size := binary.LittleEndian.Uint32(d.buf[9:13])
			if size < headerSize || size > maxEvent {
				return d.out, fmt.Errorf("binary log: event of %d bytes at %d: %w", size, d.pos, ErrDamaged)
			}
			d.need = int(size)
		}
		n := min(d.need-len(d.buf), len(p))
		d.buf = append(d.buf, p[:n]...)
		p = p[n:]
		if len(d.buf) < d.need {
			continue
		}
		if err := d.event(); err != nil {
			return d.out, err
		}
	}
	return d.out, nil
}

// event decodes the whole event in d.buf.
func (d *Decoder) event() error {
	b := d.buf
	pos := d.pos
	end := pos + uint64(len(b))
	d.pos, d.buf, d.need = end, d.buf[:0], 0
	e := Event{Pos: pos, End: end, Type: b[4],
		Time:     time.Unix(int64(binary.LittleEndian.Uint32(b[0:4])), 0).UTC(),
		ServerID: binary.LittleEndian.Uint32(b[5:9])}
	if !d.known && e.Type != TypeFormatDescription {
		return fmt.Errorf("binary log: the first event, at %d, is of type %d, not a format description: %w", pos, e.Type, ErrDamaged)
	}
	logPos := binary.LittleEndian.Uint32(b[13:17])
	if logPos != 0 && uint64(logPos) != end&0xffffffff {
		return fmt.Errorf("binary log: event at %d says it ends at %d, not %d: %w", pos, logPos, end, ErrDamaged)
	}
	if e.Type == TypeFormatDescription {
		// binlog_version(2) server_version(50) create_timestamp(4)
		// header_length(1) post-header lengths; then, since 5.6.1, the
		// checksum algorithm (1) and a CRC-32 (4).
		if len(b) < headerSize+57 {
			return fmt.Errorf("binary log: format description of %d bytes: %w", len(b), ErrDamaged)
		}
		if binary.LittleEndian.Uint16(b[headerSize:]) != 4 || b[headerSize+56] != headerSize {
			return fmt.Errorf("binary log: not version 4: %w", ErrDamaged)
		}
		alg := b[len(b)-5]
		if alg != 0 && alg != checksumCRC32 {
			return fmt.Errorf("binary log: checksum algorithm %d: %w", alg, ErrDamaged)
		}
		d.checksum, d.known = alg == checksumCRC32, true
	}
	body := b[headerSize:]
	if d.checksum {
		if len(body) < 4 {
			return fmt.Errorf("binary log: event at %d too short for its checksum: %w", pos, ErrDamaged)
		}
		want := binary.LittleEndian.Uint32(b[len(b)-4:])
		sum := crc32.ChecksumIEEE(b[:len(b)-4])
		if e.Type == TypeFormatDescription && b[17]&logInUse != 0 {
			// The server sets and clears "in use" in place, without
			// the checksum: it is computed with the flag clear.
			c := crc32.Update(0, crc32.IEEETable, b[:17])
			c = crc32.Update(c, crc32.IEEETable, []byte{b[17] &^ logInUse})
			sum = crc32.Update(c, crc32.IEEETable, b[18:len(b)-4])
		}
		if sum != want {
			return fmt.Errorf("binary log: event at %d fails its checksum: %w", pos, ErrDamaged)
		}
		body = body[:len(body)-4]
	}
	wasStandalone := d.standalone
	d.standalone = false
	switch e.Type {
	case TypeGTID:
		// seq_no(8) domain_id(4) flags2(1) ...
		if len(body) < 13 {
			return fmt.Errorf("binary log: GTID event of %d bytes: %w", len(body), ErrDamaged)
		}
		e.GTID = &GTID{Seq: binary.LittleEndian.Uint64(body[0:8]), Domain: binary.LittleEndian.Uint32(body[8:12]), Server: e.ServerID}
		d.standalone = body[12]&gtidStandalone != 0
	case TypeXID:
		e.Commit = true
	case TypeQuery:
		q, err := queryText(body)
		if err != nil {
			return fmt.Errorf("binary log: query event at %d: %w", pos, err)
		}
		e.Commit = q == "COMMIT" || wasStandalone
	case TypeRotate:
		if len(body) < 8 {
			return fmt.Errorf("binary log: rotate event of %d bytes: %w", len(body), ErrDamaged)
		}
		e.NextFile = string(body[8:])
	default:
		e.Commit = wasStandalone
	}
	d.out = append(d.out, e)
	return nil
}

// queryText returns a query event's statement: after thread_id(4)
// exec_time(4) db_len(1) error_code(2) status_vars_len(2), the status
// variables, the database name and its NUL.
func queryText(body []byte) (string, error) {
	if len(body) < 13 {
		return "", ErrDamaged
	}
	dbLen := int(body[8])
	varsLen := int(binary.LittleEndian.Uint16(body[11:13]))
	start := 13 + varsLen + dbLen + 1
	if start > len(body) {
		return "", ErrDamaged
	}
	return string(body[start:]), nil
}
