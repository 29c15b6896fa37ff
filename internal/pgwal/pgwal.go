// Package pgwal reads PostgreSQL's write-ahead log as it streams past and
// reports where transactions end and when: the commit and abort records
// and their timestamps. The archive uses them to say which seconds a
// restore can reach, and to pick the WAL a target time needs.
//
// Only the page and record framing is decoded, and the main data of
// transaction records (PostgreSQL 15 and 16 lay both out alike, see
// access/xlogrecord.h and access/xlog_internal.h). Bytes that do not
// parse never stop the caller: the decoder counts the damage, skips to
// the next page that starts cleanly and goes on. WAL is archived whether
// or not it decodes; only the times are lost.
package pgwal

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

// Layout constants of PostgreSQL 15.
const (
	PageSize        = 8192 // XLOG_BLCKSZ
	shortPageHeader = 24   // MAXALIGN(sizeof(XLogPageHeaderData))
	longPageHeader  = 40   // MAXALIGN(sizeof(XLogLongPageHeaderData))
	recordHeader    = 24   // SizeOfXLogRecord
	align           = 8    // MAXALIGN

	xlpFirstIsContRecord = 0x0001
	xlpLongHeader        = 0x0002

	rmXLog = 0
	rmXact = 1

	xlogSwitch   = 0x40
	xactOpMask   = 0x70
	xactCommit   = 0x00
	xactAbort    = 0x20
	xactCommitPr = 0x30
	xactAbortPr  = 0x40

	blockIDDataShort   = 255
	blockIDDataLong    = 254
	blockIDOrigin      = 253
	blockIDTopLevelXID = 252
	maxBlockID         = 32
	bkpBlockHasImage   = 0x10
	bkpBlockSameRel    = 0x80
	bkpImageHasHole    = 0x01
	bkpImageCompressed = 0x04 | 0x08 | 0x10 // PGLZ, LZ4, ZSTD

	// maxXactRecord bounds the transaction records kept whole to decode;
	// a larger one (thousands of subtransactions) is skipped.
	maxXactRecord = 1 << 20
	// maxRecord is PostgreSQL's own bound (XLogRecordMaxSize, 1020 MiB).
	maxRecord = 1020 << 20
)

// pgEpoch is PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Kind says how a transaction ended.
type Kind uint8

const (
	Commit Kind = iota + 1
	Abort
)

func (k Kind) String() string {
	switch k {
	case Commit:
		return "commit"
	case Abort:
		return "abort"
	}
	return "?"
}

// End is one transaction's end record.
type End struct {
	Kind Kind
	// LSN is where the record starts, EndLSN where it ends: a restore that
	// replays up to EndLSN has the transaction's outcome.
	LSN, EndLSN uint64
	// Time is the transaction's end time as the server recorded it: what
	// recovery_target_time compares with.
	Time time.Time
}

// Stats count what the decoder saw.
type Stats struct {
	Records int
	// Damaged counts the places the decoder lost the record framing
	// (a bad page header, a record that does not check) and skipped to
	// the next clean page.
	Damaged int
	// Skipped counts the bytes passed over while not in step.
	Skipped int64
}

// Decoder decodes WAL fed to it in order. It is not safe for concurrent
// use.
type Decoder struct {
	segSize uint64
	pos     uint64 // LSN of the next byte fed

	// The page header being read: hdrSize bytes, hdrRead of them so
	// far (equal outside a header).
	hdr              [longPageHeader]byte
	hdrSize, hdrRead int

	synced bool   // records are being followed
	skip   uint64 // data bytes to pass over before the next record (alignment, a record not kept)
	// The record being read.
	rec      []byte
	recStart uint64
	recTotal uint64 // 0 before its length is known
	recKeep  bool   // its bytes are kept whole (a transaction record)
	recSeen  uint64 // its bytes seen so far
	// lastStart is where the last record read whole began.
	lastStart uint64
	// pages counts the page headers read.
	pages int
	// toSegment passes over the rest of the segment after a switch
	// record.
	toSegment bool

	stats Stats
	out   []End
}

// NewDecoder returns a decoder for WAL starting at LSN start, with
// segments of segSize bytes (a power of two, 1 MiB to 1 GiB). When
// atRecord is false the decoder starts out of step and gets in step at
// the first page that begins with a record, or whose continued record
// ends on it; when true, start must be where a record (or a page) begins,
// as Boundary reported it.
func NewDecoder(start, segSize uint64, atRecord bool) *Decoder {
	return &Decoder{segSize: segSize, pos: start, synced: atRecord}
}

// Pos is the LSN of the next byte to feed.
func (d *Decoder) Pos() uint64 { return d.pos }

// Boundary is where a decoder restarting in step must begin: the start
// of the record under way, or Pos when none is; ok is false while the
// decoder is out of step.
func (d *Decoder) Boundary() (lsn uint64, ok bool) {
	switch {
	case !d.synced:
		return 0, false
	case d.recSeen > 0:
		return d.recStart, true
	case d.skip > 0 || d.toSegment:
		// Between a record and the padding after it: the next record
		// begins past Pos, so a restart begins at the last one.
		return d.lastStart, d.lastStart != 0
	case d.hdrRead < d.hdrSize:
		// Inside a page header: the page begins before Pos.
		return d.pos - uint64(d.hdrRead), true
	}
	return d.pos, true
}

// Stats returns the counts so far.
func (d *Decoder) Stats() Stats { return d.stats }

// Write feeds the next bytes of WAL and returns the transaction ends
// whose records ended in them. The slice is reused by the next call.
func (d *Decoder) Write(p []byte) []End {
	d.out = d.out[:0]
	for len(p) > 0 {
		if d.pos%PageSize == 0 && d.hdrRead == d.hdrSize {
			d.hdrSize, d.hdrRead = shortPageHeader, 0
			if d.pos%d.segSize == 0 {
				d.hdrSize = longPageHeader
			}
		}
		if d.hdrRead < d.hdrSize {
			n := copy(d.hdr[d.hdrRead:d.hdrSize], p)
			d.hdrRead += n
			d.advance(n)
			p = p[n:]
			if d.hdrRead == d.hdrSize {
				d.pageHeader(d.hdr[:d.hdrSize])
			}
			continue
		}
		// Data bytes up to the end of this page.
		n := min(uint64(len(p)), PageSize-d.pos%PageSize)
		d.data(p[:n])
		p = p[n:]
	}
	return d.out
}

func (d *Decoder) advance(n int) { d.pos += uint64(n) }

// pageHeader checks a page's header and gets in step, or out of it.
func (d *Decoder) pageHeader(h []byte) {
	page := d.pos - uint64(len(h))
	if d.toSegment {
		if page%d.segSize != 0 {
			// The pages after a switch record: PostgreSQL zeroes their
			// headers.
			return
		}
		d.toSegment = false
	}
	info := binary.LittleEndian.Uint16(h[2:4])
	addr := binary.LittleEndian.Uint64(h[8:16])
	rem := uint64(binary.LittleEndian.Uint32(h[16:20]))
	long := info&xlpLongHeader != 0
	if addr != page || long != (page%d.segSize == 0) {
		d.lose()
		return
	}
	cont := info&xlpFirstIsContRecord != 0
	defer func() { d.pages++ }()
	if d.synced {
		midRecord := d.recSeen > 0
		switch {
		case midRecord && !cont:
			// The record was never finished (the server crashed while
			// writing it and began again here): drop it.
			d.endRecord()
		case !midRecord && cont && d.pages == 0 && d.stats.Records == 0:
			// Started in step where a page begins, but the page begins
			// with the rest of a record: find the first one after it.
			d.synced = false
		case !midRecord && cont:
			d.lose()
		case midRecord && d.recTotal > 0 && rem != d.recTotal-d.recSeen:
			d.lose()
		}
		if d.synced {
			return
		}
	}
	// Out of step: a page that starts with a record, or whose
	// continuation ends on it, puts the decoder in step.
	space := PageSize - uint64(len(h))
	switch {
	case !cont:
		d.synced, d.skip = true, 0
	case alignUp(rem) < space:
		d.synced, d.skip = true, alignUp(rem)
		d.stats.Skipped += int64(d.skip)
	default:
		d.stats.Skipped += int64(space)
	}
}

// lose drops out of step until a clean page.
func (d *Decoder) lose() {
	if d.synced {
		d.stats.Damaged++
	}
	d.synced = false
	d.toSegment = false
	d.skip = 0
	d.endRecord()
}

func (d *Decoder) endRecord() {
	d.rec = d.rec[:0]
	d.recTotal, d.recSeen, d.recKeep = 0, 0, false
}

// data takes bytes of one page past its header.
func (d *Decoder) data(p []byte) {
	for len(p) > 0 {
		if !d.synced || d.toSegment {
			if !d.synced {
				d.stats.Skipped += int64(len(p))
			}
			d.advance(len(p))
			return
		}
		if d.skip > 0 {
			n := min(d.skip, uint64(len(p)))
			d.skip -= n
			d.advance(int(n))
			p = p[n:]
			continue
		}
		if d.recSeen == 0 {
			d.recStart = d.pos
		}
		// The header first, whole, then the rest: kept for transaction
		// records, passed over otherwise.
		if d.recSeen < recordHeader {
			n := min(recordHeader-d.recSeen, uint64(len(p)))
			d.rec = append(d.rec, p[:n]...)
			d.recSeen += n
			d.advance(int(n))
			p = p[n:]
			if d.recSeen < recordHeader {
				continue
			}
			if !d.header() {
				continue
			}
		} else {
			n := min(d.recTotal-d.recSeen, uint64(len(p)))
			if d.recKeep {
				d.rec = append(d.rec, p[:n]...)
			}
			d.recSeen += n
			d.advance(int(n))
			p = p[n:]
		}
		if d.recSeen == d.recTotal {
			d.finish()
		}
	}
}

// header checks a record's header, now whole; false when it did not
// check and the decoder lost step.
func (d *Decoder) header() bool {
	total := uint64(binary.LittleEndian.Uint32(d.rec[0:4]))
	if total == 0 {
		// Zeros where a record should start: past the end of what the
		// server wrote, or padding this decoder did not expect.
		d.lose()
		return false
	}
	if total < recordHeader || total > maxRecord {
		d.lose()
		return false
	}
	d.recTotal = total
	rmid := d.rec[17]
	info := d.rec[16]
	d.recKeep = (rmid == rmXact && total <= maxXactRecord) || (rmid == rmXLog && info&0xf0 == xlogSwitch)
	return true
}

// finish handles a record read to its end.
func (d *Decoder) finish() {
	d.stats.Records++
	start, end := d.recStart, d.pos
	d.lastStart = start
	rec := d.rec
	keep := d.recKeep
	d.endRecord()
	d.skip = alignUp(end) - end
	if !keep {
		return
	}
	if binary.LittleEndian.Uint32(rec[20:24]) != recordCRC(rec) {
		d.lose()
		return
	}
	rmid, info := rec[17], rec[16]
	if rmid == rmXLog && info&0xf0 == xlogSwitch {
		// The rest of the segment is padding.
		d.toSegment = true
		d.skip = 0
		if end%d.segSize == 0 {
			d.toSegment = false
		}
		return
	}
	var kind Kind
	switch info & xactOpMask {
	case xactCommit, xactCommitPr:
		kind = Commit
	case xactAbort, xactAbortPr:
		kind = Abort
	default:
		return
	}
	main, ok := mainData(rec)
	if !ok || len(main) < 8 {
		d.stats.Damaged++
		return
	}
	us := int64(binary.LittleEndian.Uint64(main[:8]))
	d.out = append(d.out, End{Kind: kind, LSN: start, EndLSN: end, Time: pgEpoch.Add(time.Duration(us) * time.Microsecond)})
}

// recordCRC is the record's CRC-32C: its data after the header, then the
// header up to the CRC field.
func recordCRC(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[recordHeader:])
	return crc32.Update(c, castagnoli, rec[:20])
}

// mainData walks a whole record's block headers and returns its main
// data: the record's last bytes, after every block's data.
func mainData(rec []byte) ([]byte, bool) {
	pos := recordHeader
	var blockData, mainLen uint64
	for {
		if pos >= len(rec) {
			return nil, len(rec) == recordHeader
		}
		id := rec[pos]
		switch {
		case id == blockIDDataShort:
			if pos+2 > len(rec) {
				return nil, false
			}
			mainLen = uint64(rec[pos+1])
			pos += 2
		case id == blockIDDataLong:
			if pos+5 > len(rec) {
				return nil, false
			}
			mainLen = uint64(binary.LittleEndian.Uint32(rec[pos+1 : pos+5]))
			pos += 5
		case id == blockIDOrigin:
			pos += 3
			continue
		case id == blockIDTopLevelXID:
			pos += 5
			continue
		case id <= maxBlockID:
			if pos+4 > len(rec) {
				return nil, false
			}
			flags := rec[pos+1]
			blockData += uint64(binary.LittleEndian.Uint16(rec[pos+2 : pos+4]))
			pos += 4
			if flags&bkpBlockHasImage != 0 {
				if pos+5 > len(rec) {
					return nil, false
				}
				blockData += uint64(binary.LittleEndian.Uint16(rec[pos : pos+2]))
				bimg := rec[pos+4]
				pos += 5
				if bimg&bkpImageHasHole != 0 && bimg&bkpImageCompressed != 0 {
					pos += 2
				}
			}
			if flags&bkpBlockSameRel == 0 {
				pos += 12
			}
			pos += 4
			continue
		default:
			return nil, false
		}
		start := uint64(pos) + blockData
		if start+mainLen != uint64(len(rec)) {
			return nil, false
		}
		return rec[start:], true
	}
}

func alignUp(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
