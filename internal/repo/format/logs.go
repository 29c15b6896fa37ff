package format

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// A log archive holds a database server's logs as the server writes
// them: PostgreSQL's write-ahead log, one log per timeline, and MariaDB's
// binary log files. A log is a named sequence of bytes addressed by
// position (an LSN, a file offset); it is archived as pieces, each a
// contiguous range [start, end) of one log, written whole and never
// changed. Pieces of one log may overlap (an archiver that restarts sends
// again what it was not sure was stored); the bytes at a position are the
// same in every piece that holds it.
const (
	// LogsPrefix holds every archive: logs/<archive id>/...
	LogsPrefix = "logs/"
	// TypeLogPiece seals a piece; TypeArchive an archive's description.
	TypeLogPiece byte = 'L'
	TypeArchive  byte = 'A'
	// MaxLogPiece bounds the bytes of one piece.
	MaxLogPiece = 64 << 20
	// logHeaderLimit bounds a piece's header.
	logHeaderLimit = 64 << 10
)

// ArchiveInfoName is the object describing archive id.
func ArchiveInfoName(id cairn.ID) string { return LogsPrefix + id.String() + "/info" }

// ArchivePrefix is the prefix of every object of archive id.
func ArchivePrefix(id cairn.ID) string { return LogsPrefix + id.String() + "/" }

// LogPieceName names the piece [start, end) of log in archive id. The
// positions are 16 hex digits, so a listing sorts the pieces of a log by
// start.
func LogPieceName(id cairn.ID, log string, start, end uint64) string {
	return fmt.Sprintf("%s%s/%016x-%016x", ArchivePrefix(id), log, start, end)
}

// ParseLogPieceName splits a piece's name into archive, log and range.
func ParseLogPieceName(name string) (id cairn.ID, log string, start, end uint64, err error) {
	bad := func(why string) error {
		return fmt.Errorf("log piece name %q: %s: %w", name, why, cairn.ErrCorrupt)
	}
	rest, ok := strings.CutPrefix(name, LogsPrefix)
	if !ok {
		return id, "", 0, 0, bad("not under " + LogsPrefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return id, "", 0, 0, bad("want logs/<archive>/<log>/<start>-<end>")
	}
	// Only the ID as LogPieceName prints it (lower case): one piece, one
	// name.
	if id, err = cairn.ParseID(parts[0]); err != nil || id.String() != parts[0] {
		return id, "", 0, 0, bad("archive id")
	}
	if err := ValidateLogName(parts[1]); err != nil {
		return id, "", 0, 0, bad(err.Error())
	}
	s, e, ok := strings.Cut(parts[2], "-")
	if !ok || len(s) != 16 || len(e) != 16 {
		return id, "", 0, 0, bad("range")
	}
	start, err1 := strconv.ParseUint(s, 16, 64)
	end, err2 := strconv.ParseUint(e, 16, 64)
	if err1 != nil || err2 != nil || strings.ToLower(parts[2]) != parts[2] || end <= start || end-start > MaxLogPiece {
		return id, "", 0, 0, bad("range")
	}
	return id, parts[1], start, end, nil
}

// ValidateLogName checks a log's name: 1 to 64 of [a-z0-9._-], not
// "info", not starting with a dot.
func ValidateLogName(log string) error {
	if log == "" || len(log) > 64 || log == "info" || log[0] == '.' {
		return fmt.Errorf("log name %q", log)
	}
	for _, c := range []byte(log) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("log name %q", log)
		}
	}
	return nil
}

// ArchiveInfo describes an archive, so that a deployment that has only
// the store knows whose logs these are.
type ArchiveInfo struct {
	Version int      `json:"version"`
	ID      cairn.ID `json:"id"`
	// Datastore is "postgresql" or "mariadb"; Instance the database
	// instance the archive belongs to.
	Datastore string    `json:"datastore"`
	Instance  string    `json:"instance"`
	Created   time.Time `json:"created"`
	// SystemID identifies the database cluster: PostgreSQL's system
	// identifier, MariaDB's server_id.
	SystemID string            `json:"system_id,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	// Abandoned are the timelines (PostgreSQL) or binary log
	// generations (MariaDB) that a recover in place began and an undo
	// left: their logs are kept, but they are not the server's history,
	// so a restore that names no timeline does not follow them.
	Abandoned []uint32 `json:"abandoned,omitempty"`
}

// DecodeArchiveInfo parses an archive's description.
func DecodeArchiveInfo(data []byte) (*ArchiveInfo, error) {
	var a ArchiveInfo
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("archive info: %v: %w", err, cairn.ErrCorrupt)
	}
	if a.Version != 1 {
		return nil, fmt.Errorf("archive info version %d: %w", a.Version, cairn.ErrUnsupported)
	}
	if a.ID.IsZero() || a.Datastore == "" {
		return nil, fmt.Errorf("archive info: no id or datastore: %w", cairn.ErrCorrupt)
	}
	if slices.Contains(a.Abandoned, 0) {
		return nil, fmt.Errorf("archive info: abandoned timeline 0: %w", cairn.ErrCorrupt)
	}
	return &a, nil
}

// LogPiece describes one piece: what its name says, repeated inside the
// sealed payload so a piece renamed is caught twice, and what the
// archiver learned of the bytes.
type LogPiece struct {
	Version int      `json:"version"`
	Archive cairn.ID `json:"archive"`
	Log     string   `json:"log"`
	Start   uint64   `json:"start"`
	End     uint64   `json:"end"`
	// FirstTime and LastTime are the earliest and latest transaction end
	// times (commits and aborts; MariaDB: event times) recorded in the
	// piece, zero when it ends none.
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	// Transactions counts the transaction ends in the piece.
	Transactions int `json:"transactions,omitempty"`
	// ServerTime is the server's clock when it had written the piece's
	// last byte and nothing after it, zero when unknown: the archive is
	// complete up to that moment when no piece follows.
	ServerTime time.Time `json:"server_time,omitzero"`
	// Archived is the archiver's clock when it stored the piece.
	Archived time.Time `json:"archived"`
	// Position is the server's own name for the piece's end where it has
	// one (MariaDB's GTID position after the piece).
	Position string `json:"position,omitempty"`
}

// logMagic begins every piece's payload.
var logMagic = [4]byte{'C', 'L', 'O', 'G'}

// EncodeLogPiece lays out a piece's payload: magic, the header's length
// (4 bytes little endian), the header as JSON, then the log's bytes.
func EncodeLogPiece(h LogPiece, data []byte) ([]byte, error) {
	if err := h.check(len(data)); err != nil {
		return nil, fmt.Errorf("log piece: %w: %w", err, cairn.ErrInvalid)
	}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 8+len(js)+len(data))
	out = append(out, logMagic[:]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(js)))
	out = append(out, js...)
	return append(out, data...), nil
}

// DecodeLogPiece splits a piece's payload into its header and its bytes,
// which alias payload.
func DecodeLogPiece(payload []byte) (LogPiece, []byte, error) {
	var h LogPiece
	if len(payload) < 8 || [4]byte(payload[:4]) != logMagic {
		return h, nil, fmt.Errorf("log piece: bad magic: %w", cairn.ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(payload[4:8])
	if n > logHeaderLimit || uint64(n) > uint64(len(payload)-8) {
		return h, nil, fmt.Errorf("log piece: header of %d bytes: %w", n, cairn.ErrCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(payload[8 : 8+n]))
	if err := dec.Decode(&h); err != nil || dec.More() {
		return h, nil, fmt.Errorf("log piece header: %v: %w", err, cairn.ErrCorrupt)
	}
	if h.Version != 1 {
		return h, nil, fmt.Errorf("log piece version %d: %w", h.Version, cairn.ErrUnsupported)
	}
	data := payload[8+n:]
	if err := h.check(len(data)); err != nil {
		return h, nil, fmt.Errorf("log piece: %w: %w", err, cairn.ErrCorrupt)
	}
	return h, data, nil
}

// Name is the piece's object name.
func (h LogPiece) Name() string { return LogPieceName(h.Archive, h.Log, h.Start, h.End) }

// check says what is wrong with a header for n bytes of log.
func (h LogPiece) check(n int) error {
	bad := errors.New
	switch {
	case h.Archive.IsZero():
		return bad("no archive id")
	case ValidateLogName(h.Log) != nil:
		return ValidateLogName(h.Log)
	case h.End <= h.Start || h.End-h.Start > MaxLogPiece:
		return fmt.Errorf("range [%d, %d)", h.Start, h.End)
	case uint64(n) != h.End-h.Start:
		return fmt.Errorf("%d bytes for the range [%d, %d)", n, h.Start, h.End)
	case h.LastTime.Before(h.FirstTime):
		return bad("last time before first")
	case h.Transactions < 0:
		return bad("negative transaction count")
	}
	return nil
}
