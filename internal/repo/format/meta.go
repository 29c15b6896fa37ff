package format

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
)

// Object names and prefixes in a repository.
const (
	ConfigName      = "config"
	KeysPrefix      = "keys/"
	BackupsPrefix   = "backups/"
	IndexesPrefix   = "indexes/"
	ChunksPrefix    = "chunks/"
	SessionsPrefix  = "sessions/"
	CondemnedPrefix = "gc/condemned/"
	SweepingPrefix  = "gc/sweeping/"
	SweptPrefix     = "gc/swept/"
	HoldsPrefix     = "gc/holds/"
)

// Limits on chunk sizes.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
	// MaxMetadataSize bounds decoded metadata objects and index parts.
	MaxMetadataSize = 64 << 20
)

// ConfigFormat identifies a cairn repository config.
const ConfigFormat = "cairn-repository"

// Version is the repository format version this build writes and reads.
const Version = 1

// Config is the repository's plaintext description. It holds no secret;
// its MAC, keyed by the master key, lets an opener detect tampering.
type Config struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	ID          cairn.ID  `json:"id"`
	Created     time.Time `json:"created"`
	ChunkSize   int64     `json:"chunk_size"`
	Compression Level     `json:"compression"`
	GC          GCParams  `json:"gc"`
	// InitialKey names the key written by init, so an opener finds it by
	// name while a lagging listing does not show it yet.
	InitialKey cairn.ID `json:"initial_key"`
	MAC        string   `json:"mac,omitempty"`
}

// GCParams tune the concurrent garbage-collection protocol (docs/format.md).
type GCParams struct {
	// ConsistencyMargin is the longest a listing of the store may lag a
	// write or delete.
	ConsistencyMargin Duration `json:"consistency_margin"`
	// SessionTimeout: a backup session whose marker is older than this is
	// dead. Running sessions refresh their marker at a third of it and stop
	// before it runs out.
	SessionTimeout Duration `json:"session_timeout"`
}

// Duration is a time.Duration that marshals as a Go duration string.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, cairn.ErrCorrupt)
	}
	*d = Duration(v)
	return nil
}

// ValidateChunkSize checks a chunk size.
func ValidateChunkSize(n int64) error {
	if n < MinChunkSize || n > MaxChunkSize || n%4096 != 0 {
		return fmt.Errorf("chunk size %d: want a multiple of 4096 between %d and %d: %w", n, MinChunkSize, MaxChunkSize, cairn.ErrInvalid)
	}
	return nil
}

func (c *Config) macInput() []byte {
	cp := *c
	cp.MAC = ""
	b, _ := json.Marshal(cp)
	return b
}

// SetMAC authenticates the config with the master key.
func (c *Config) SetMAC(mk *crypto.MasterKey) {
	sum := mk.MAC(c.macInput())
	c.MAC = hex.EncodeToString(sum[:])
}

// VerifyMAC checks the config against the master key.
func (c *Config) VerifyMAC(mk *crypto.MasterKey) error {
	sum := mk.MAC(c.macInput())
	if c.MAC != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("config: authentication failed: %w", cairn.ErrCorrupt)
	}
	return nil
}

// DecodeConfig parses and validates a config.
func DecodeConfig(data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("config: %v: %w", err, cairn.ErrNotRepository)
	}
	if c.Format != ConfigFormat {
		return nil, fmt.Errorf("config: format %q: %w", c.Format, cairn.ErrNotRepository)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("config: repository version %d, this build reads %d: %w", c.Version, Version, cairn.ErrUnsupported)
	}
	if err := ValidateChunkSize(c.ChunkSize); err != nil {
		return nil, fmt.Errorf("config: %v: %w", err, cairn.ErrCorrupt)
	}
	if c.GC.ConsistencyMargin < 0 || c.GC.SessionTimeout <= 0 {
		return nil, fmt.Errorf("config: bad gc parameters: %w", cairn.ErrCorrupt)
	}
	return &c, nil
}

// Key kinds.
const (
	KeyKindPassword = "password"
	KeyKindFile     = "key-file"
)

// KeyFile wraps the master key under a secret.
type KeyFile struct {
	Version   int       `json:"version"`
	ID        cairn.ID  `json:"id"`
	Kind      string    `json:"kind"`
	Created   time.Time `json:"created"`
	Hostname  string    `json:"hostname,omitempty"`
	Username  string    `json:"username,omitempty"`
	KDF       KDF       `json:"kdf"`
	MasterKey []byte    `json:"master_key"`
}

// KDF names the key-derivation function and its parameters.
type KDF struct {
	Algorithm string `json:"algorithm"`
	crypto.KDFParams
	Salt []byte `json:"salt"`
}

// KeyAAD binds a wrapped master key to its repository and key file.
func KeyAAD(repo, key cairn.ID) []byte {
	return []byte("cairn key v1 " + repo.String() + " " + key.String())
}

// DecodeKeyFile parses and validates a key file.
func DecodeKeyFile(data []byte) (*KeyFile, error) {
	var k KeyFile
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("key file: %v: %w", err, cairn.ErrCorrupt)
	}
	if k.Version != 1 {
		return nil, fmt.Errorf("key file version %d: %w", k.Version, cairn.ErrUnsupported)
	}
	if k.KDF.Algorithm != "argon2id" {
		return nil, fmt.Errorf("key file: kdf %q: %w", k.KDF.Algorithm, cairn.ErrUnsupported)
	}
	if err := k.KDF.Validate(); err != nil {
		return nil, fmt.Errorf("key file: %v: %w", err, cairn.ErrCorrupt)
	}
	if len(k.KDF.Salt) < 16 || len(k.MasterKey) != crypto.NonceSize+crypto.MasterKeySize+crypto.TagSize {
		return nil, fmt.Errorf("key file: bad salt or wrapped key: %w", cairn.ErrCorrupt)
	}
	if k.Kind != KeyKindPassword && k.Kind != KeyKindFile {
		return nil, fmt.Errorf("key file: kind %q: %w", k.Kind, cairn.ErrCorrupt)
	}
	return &k, nil
}

// Backup kinds: what a manifest's index covers.
const (
	// KindVolume is a volume or image backup: the index maps the source's
	// byte offsets to fixed-size regions (chunk_size). Manifests of version
	// 1 without a kind are volume backups.
	KindVolume = "volume"
	// KindStream is a backup of a byte stream of unknown length (a
	// database dump, a tar stream), cut into content-defined chunks. Its
	// manifest is version 2 and carries Stream.
	KindStream = "stream"
)

// ManifestVersionStream is the manifest version of stream backups. A build
// that reads only version 1 refuses such a manifest (ErrUnsupported), so it
// never mistakes a stream's index for a volume's; volume backups keep
// version 1, which every build reads.
const ManifestVersionStream = 2

// ChunkerRabinKeyed names the stream chunker of docs/format.md: a Rabin
// fingerprint over a 64-byte window with a polynomial derived from the
// master key, cutting where the fingerprint's low AverageBits bits are
// zero, no chunk shorter than MinSize (but the last) or longer than
// MaxSize.
const ChunkerRabinKeyed = "rabin-keyed-v1"

// Manifest describes one backup. Its presence makes the backup visible; it
// is written last.
type Manifest struct {
	Version int      `json:"version"`
	ID      cairn.ID `json:"id"`
	// Kind is KindVolume or KindStream. DecodeManifest sets KindVolume for
	// a version-1 manifest without one.
	Kind        string            `json:"kind,omitempty"`
	Session     cairn.ID          `json:"session"`
	Time        time.Time         `json:"time"`
	DataTime    time.Time         `json:"data_time"`
	Source      string            `json:"source"`
	Hostname    string            `json:"hostname,omitempty"`
	Size        int64             `json:"size"`
	ChunkSize   int64             `json:"chunk_size"`
	Compression Level             `json:"compression"`
	Tags        map[string]string `json:"tags,omitempty"`
	Parent      *cairn.ID         `json:"parent,omitempty"`
	Index       []IndexPart       `json:"index"`
	// Stream describes a stream backup (KindStream only).
	Stream *StreamInfo `json:"stream,omitempty"`
	Stats  BackupStats `json:"stats"`
}

// IsStream reports whether m is a stream backup.
func (m *Manifest) IsStream() bool { return m.Kind == KindStream }

// StreamInfo is what a stream backup records beyond a volume backup's.
type StreamInfo struct {
	// Hash is the unkeyed BLAKE3-256 of the whole stream: a restore
	// checks what it wrote against it, and an operator can compare it
	// with b3sum's.
	Hash Hash `json:"blake3"`
	// Chunker is how the stream was cut. Restores do not need it; a later
	// backup dedups against this one only if it cuts the same way.
	Chunker ChunkerParams `json:"chunker"`
}

// ChunkerParams describe a content-defined chunker.
type ChunkerParams struct {
	Algorithm   string `json:"algorithm"`
	MinSize     int64  `json:"min_size"`
	MaxSize     int64  `json:"max_size"`
	AverageBits int    `json:"average_bits"`
}

// Hash is a 32-byte digest, written as 64 lower-case hex digits.
type Hash [32]byte

// String returns the hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: exactly 64 lower-case
// hex digits, so every hash has one encoding.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) || bytes.ContainsFunc(b, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }) {
		return fmt.Errorf("hash %q: want 64 lower-case hex digits: %w", b, cairn.ErrCorrupt)
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// IndexPart names one object of a backup's index and what it covers.
type IndexPart struct {
	Name    string `json:"name"`
	Entries int    `json:"entries"`
	Length  int64  `json:"length"`
}

// BackupStats records what a backup did.
type BackupStats struct {
	BytesRead      int64    `json:"bytes_read"`
	BytesZero      int64    `json:"bytes_zero"`
	BytesUnchanged int64    `json:"bytes_unchanged"`
	BytesDedup     int64    `json:"bytes_dedup"`
	BytesNew       int64    `json:"bytes_new"`
	BytesStored    int64    `json:"bytes_stored"`
	ChunksNew      int      `json:"chunks_new"`
	ChunksReused   int      `json:"chunks_reused"`
	Duration       Duration `json:"duration"`
}

// MaxIndexPartEntries bounds one index part (with 4 MiB chunks, 256 GiB).
const MaxIndexPartEntries = 1 << 16

// DecodeManifest parses and validates a manifest.
func DecodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, cairn.ErrCorrupt)
	}
	switch {
	case m.Version == 1 && (m.Kind == "" || m.Kind == KindVolume) && m.Stream == nil:
		m.Kind = KindVolume
	case m.Version == 1:
		return nil, fmt.Errorf("manifest: version 1 with kind %q or stream fields: %w", m.Kind, cairn.ErrCorrupt)
	case m.Version == ManifestVersionStream:
		if err := m.validateKind(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("manifest version %d: %w", m.Version, cairn.ErrUnsupported)
	}
	if m.Size < 0 || ValidateChunkSize(m.ChunkSize) != nil {
		return nil, fmt.Errorf("manifest: bad size or chunk size: %w", cairn.ErrCorrupt)
	}
	var total int64
	for _, p := range m.Index {
		if p.Entries < 0 || p.Entries > MaxIndexPartEntries || p.Length < 0 || p.Name == "" {
			return nil, fmt.Errorf("manifest: bad index part: %w", cairn.ErrCorrupt)
		}
		total += p.Length
	}
	if total != m.Size {
		return nil, fmt.Errorf("manifest: index covers %d bytes of %d: %w", total, m.Size, cairn.ErrCorrupt)
	}
	return &m, nil
}

// validateKind checks the kind-specific fields of a version-2 manifest.
func (m *Manifest) validateKind() error {
	bad := func(what string) error { return fmt.Errorf("manifest: %s: %w", what, cairn.ErrCorrupt) }
	switch m.Kind {
	case KindVolume:
		if m.Stream != nil {
			return bad("a volume backup with stream fields")
		}
	case KindStream:
		if m.Stream == nil {
			return bad("a stream backup without stream fields")
		}
		if m.Parent != nil {
			return bad("a stream backup with a parent")
		}
		c := m.Stream.Chunker
		// chunk_size bounds every entry of the index: for a stream it is
		// the chunker's largest chunk.
		if c.Algorithm == "" || c.MinSize <= 0 || c.MinSize > c.MaxSize || c.MaxSize != m.ChunkSize ||
			c.AverageBits <= 0 || c.AverageBits > 40 {
			return bad("bad chunker parameters")
		}
	default:
		return bad(fmt.Sprintf("unknown kind %q", m.Kind))
	}
	return nil
}

// Session marks a running (or crashed) backup for the garbage collector.
type Session struct {
	Version  int        `json:"version"`
	ID       cairn.ID   `json:"id"`
	Backup   cairn.ID   `json:"backup"`
	Hostname string     `json:"hostname,omitempty"`
	PID      int        `json:"pid,omitempty"`
	Started  time.Time  `json:"started"`
	Seen     []cairn.ID `json:"seen_condemned"`
	Finished bool       `json:"finished,omitempty"`
}

// DecodeSession parses a session marker.
func DecodeSession(data []byte) (*Session, error) {
	var s Session
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("session: %v: %w", err, cairn.ErrCorrupt)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("session version %d: %w", s.Version, cairn.ErrUnsupported)
	}
	return &s, nil
}
