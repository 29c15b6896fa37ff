package nbd_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

// BenchmarkServer measures reads and writes through the server over a unix
// socket, with 16 requests in flight on one connection (structured
// replies), against an in-memory export.
func BenchmarkServer(b *testing.B) {
	for _, op := range []string{"read", "write"} {
		for _, size := range []int{4 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", op, size>>10), func(b *testing.B) {
				benchIO(b, op == "write", size, 16)
			})
		}
	}
}

func benchIO(b *testing.B, write bool, size, depth int) {
	const exportSize = 64 << 20
	m := nbdtest.NewMem(exportSize, nbdtest.MemOptions{})
	m.Fill(randomBytes(1, exportSize), 0)
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	sock := nbdtest.Serve(b, cat, nbd.Options{Logger: slog.New(slog.DiscardHandler)})
	c := connect(b, sock, "disk", true, false)
	slots := exportSize / size

	credits := make(chan struct{}, depth)
	errc := make(chan error, 1)
	payload := randomBytes(2, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		typ := uint16(cmdRead)
		if write {
			typ = cmdWrite
		}
		req := make([]byte, 28, 28+size)
		binary.BigEndian.PutUint32(req, cRequestMagic)
		binary.BigEndian.PutUint16(req[6:], typ)
		binary.BigEndian.PutUint32(req[24:], uint32(size))
		if write {
			req = append(req, payload...)
		}
		for i := range b.N {
			credits <- struct{}{}
			binary.BigEndian.PutUint64(req[8:], uint64(i))
			binary.BigEndian.PutUint64(req[16:], uint64(i%slots*size))
			if _, err := c.nc.Write(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	buf := make([]byte, 28+size)
	for range b.N {
		if write {
			if _, err := io.ReadFull(c.br, buf[:16]); err != nil {
				b.Fatal(err)
			}
			if binary.BigEndian.Uint32(buf) != cSimpleMagic || binary.BigEndian.Uint32(buf[4:]) != 0 {
				b.Fatalf("bad write reply %x", buf[:16])
			}
		} else {
			if _, err := io.ReadFull(c.br, buf[:28+size]); err != nil {
				b.Fatal(err)
			}
			if binary.BigEndian.Uint32(buf) != cStructMagic || binary.BigEndian.Uint16(buf[6:]) != chunkOffsetData {
				b.Fatalf("bad read reply %x", buf[:20])
			}
		}
		<-credits
	}
	b.StopTimer()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	c.disconnect()
}
