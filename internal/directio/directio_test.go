package directio_test

import (
	"testing"

	"github.com/cairnproject/cairn/internal/directio"
)

func TestAligned(t *testing.T) {
	buf := directio.Buffer(8192)
	tests := []struct {
		name string
		buf  []byte
		off  int64
		want bool
	}{
		{"aligned", buf, 4096, true},
		{"offset", buf, 100, false},
		{"length", buf[:100], 0, false},
		{"address", buf[1:4097], 0, false},
		{"empty", buf[:0], 0, false},
	}
	for _, tc := range tests {
		if got := directio.Aligned(tc.buf, tc.off); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
	var p directio.Pool
	p.Size = 4096
	b := p.Get()
	if len(b) != 4096 || !directio.Aligned(b, 0) {
		t.Fatal("pool buffer not aligned")
	}
	p.Put(b)
}
