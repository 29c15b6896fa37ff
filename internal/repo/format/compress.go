package format

import (
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/cairnproject/cairn"
)

// Level is a compression level. The zero value is LevelFastest, which is
// zstd level 1 (as Proxmox Backup Server uses); LevelDefault is zstd level
// 3, restic's default.
type Level int

// Compression levels.
const (
	LevelFastest Level = iota
	LevelDefault
	LevelBetter
	LevelBest
	LevelOff
)

var levelNames = []string{"fastest", "default", "better", "best", "off"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// ParseLevel parses a level name.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if strings.EqualFold(s, n) {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("compression %q: want one of %s: %w", s, strings.Join(levelNames, ", "), cairn.ErrInvalid)
}

// MarshalText implements encoding.TextMarshaler.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	*l = v
	return err
}

func (l Level) zstd() zstd.EncoderLevel {
	switch l {
	case LevelDefault:
		return zstd.SpeedDefault
	case LevelBetter:
		return zstd.SpeedBetterCompression
	case LevelBest:
		return zstd.SpeedBestCompression
	default:
		return zstd.SpeedFastest
	}
}

// Codec compresses and decompresses payloads. It is safe for concurrent
// use; it keeps one encoder per level and recycles buffers.
type Codec struct {
	mu       sync.Mutex
	encoders map[Level]*zstd.Encoder
	decoder  *zstd.Decoder
	bufs     sync.Pool
}

// NewCodec returns a Codec.
func NewCodec() *Codec {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		panic(err) // only fails for invalid options
	}
	return &Codec{encoders: map[Level]*zstd.Encoder{}, decoder: dec}
}

func (c *Codec) encoder(l Level) *zstd.Encoder {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.encoders[l]; ok {
		return e
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l.zstd()), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithEncoderCRC(false))
	if err != nil {
		panic(err)
	}
	c.encoders[l] = e
	return e
}

func (c *Codec) buffer(n int) []byte {
	if b, ok := c.bufs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, n)
}

// Release returns a buffer from Compress to the pool.
func (c *Codec) Release(b []byte) {
	b = b[:0]
	c.bufs.Put(&b)
}

const (
	minCompressInput = 1024
	sampleSize       = 16 << 10
	sampleMinInput   = 256 << 10
	// keepRatio: compressed output larger than this share of the input is
	// not worth decompressing later; the payload is stored raw.
	keepRatio = 0.97
)

// Compress returns data compressed at level and true, or false when the
// data does not compress (it should be stored raw). The result must be
// handed back with Release.
func (c *Codec) Compress(data []byte, level Level) ([]byte, bool) {
	// Tiny payloads do not pay for a frame header, and the encoder omits
	// the content size Decompress relies on for them.
	if len(data) < minCompressInput {
		return nil, false
	}
	if len(data) >= sampleMinInput && !c.samplesCompress(data) {
		return nil, false
	}
	out := c.encoder(level).EncodeAll(data, c.buffer(len(data)+len(data)/256+64))
	if float64(len(out)) > keepRatio*float64(len(data)) {
		c.Release(out)
		return nil, false
	}
	return out, true
}

// samplesCompress compresses three small samples (start, middle, end) at
// the fastest level: when none of them compresses, the whole input almost
// certainly does not, and trying would cost as much as hashing it twice.
func (c *Codec) samplesCompress(data []byte) bool {
	enc := c.encoder(LevelFastest)
	buf := c.buffer(sampleSize + 256)
	defer c.Release(buf)
	for _, off := range []int{0, len(data)/2 - sampleSize/2, len(data) - sampleSize} {
		out := enc.EncodeAll(data[off:off+sampleSize], buf[:0])
		if float64(len(out)) <= keepRatio*sampleSize {
			return true
		}
	}
	return false
}

// Decompress appends the decompression of src to dst, refusing output
// larger than maxPlain.
func (c *Codec) Decompress(dst, src []byte, maxPlain int) ([]byte, error) {
	hdr := zstd.Header{}
	if err := hdr.Decode(src); err != nil {
		return nil, fmt.Errorf("zstd header: %w", cairn.ErrCorrupt)
	}
	if !hdr.HasFCS || hdr.FrameContentSize > uint64(maxPlain) {
		return nil, fmt.Errorf("compressed payload declares %d bytes, limit %d: %w", hdr.FrameContentSize, maxPlain, cairn.ErrCorrupt)
	}
	if cap(dst)-len(dst) < int(hdr.FrameContentSize) {
		grown := make([]byte, len(dst), len(dst)+int(hdr.FrameContentSize))
		copy(grown, dst)
		dst = grown
	}
	start := len(dst)
	out, err := c.decoder.DecodeAll(src, dst)
	if err != nil {
		return nil, fmt.Errorf("zstd: %v: %w", err, cairn.ErrCorrupt)
	}
	if len(out)-start != int(hdr.FrameContentSize) || len(out)-start > maxPlain {
		return nil, fmt.Errorf("decompressed %d bytes, header says %d: %w", len(out)-start, hdr.FrameContentSize, cairn.ErrCorrupt)
	}
	return out, nil
}
