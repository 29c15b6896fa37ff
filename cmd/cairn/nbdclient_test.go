package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// nbdClient is the little of an NBD client (fixed newstyle, NBD_OPT_GO,
// simple replies) the tests need to hold requests in flight and see each
// one's answer, which a copying tool does not show.
type nbdClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	size uint64
}

const (
	nbdOptMagic      = 0x49484156454F5054 // IHAVEOPT
	nbdRepMagic      = 0x0003e889045565a9
	nbdRequestMagic  = 0x25609513
	nbdReplyMagic    = 0x67446698
	nbdOptGo         = 7
	nbdRepAck        = 1
	nbdRepInfo       = 3
	nbdInfoExport    = 0
	nbdCmdRead       = 0
	nbdCmdWrite      = 1
	nbdFlagFixedNS   = 1
	nbdFlagNoZeroes  = 2
	nbdRepErrorFlags = 1 << 31
)

// dialNBD connects to the export name on the unix socket.
func dialNBD(t *testing.T, socket, name string) *nbdClient {
	t.Helper()
	return dialNBDNet(t, "unix", socket, name)
}

// dialNBDNet connects to the export name at addr.
func dialNBDNet(t *testing.T, network, addr, name string) *nbdClient {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &nbdClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	if err := c.handshake(name); err != nil {
		t.Fatalf("nbd handshake for %s: %v", name, err)
	}
	return c
}

func (c *nbdClient) handshake(name string) error {
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.r, binary.BigEndian, &hello); err != nil {
		return err
	}
	if hello.Magic != 0x4e42444d41474943 || hello.Opt != nbdOptMagic || hello.Flags&nbdFlagFixedNS == 0 {
		return fmt.Errorf("not a fixed newstyle server: %+v", hello)
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0) // no information requests
	msg := binary.BigEndian.AppendUint32(nil, nbdFlagFixedNS|uint32(hello.Flags&nbdFlagNoZeroes))
	msg = binary.BigEndian.AppendUint64(msg, nbdOptMagic)
	msg = binary.BigEndian.AppendUint32(msg, nbdOptGo)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	if _, err := c.conn.Write(append(msg, data...)); err != nil {
		return err
	}
	for {
		var rep struct {
			Magic          uint64
			Opt, Type, Len uint32
		}
		if err := binary.Read(c.r, binary.BigEndian, &rep); err != nil {
			return err
		}
		body := make([]byte, rep.Len)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return err
		}
		switch {
		case rep.Magic != nbdRepMagic:
			return fmt.Errorf("option reply magic %#x", rep.Magic)
		case rep.Type&nbdRepErrorFlags != 0:
			return fmt.Errorf("option refused: reply %#x: %s", rep.Type, body)
		case rep.Type == nbdRepInfo && len(body) >= 10 && binary.BigEndian.Uint16(body) == nbdInfoExport:
			c.size = binary.BigEndian.Uint64(body[2:])
		case rep.Type == nbdRepAck:
			return nil
		}
	}
}

// sendWrite sends a write request; its reply is read by reply.
func (c *nbdClient) sendWrite(cookie uint64, off uint64, data []byte) {
	c.t.Helper()
	msg := binary.BigEndian.AppendUint32(nil, nbdRequestMagic)
	msg = binary.BigEndian.AppendUint16(msg, 0)
	msg = binary.BigEndian.AppendUint16(msg, nbdCmdWrite)
	msg = binary.BigEndian.AppendUint64(msg, cookie)
	msg = binary.BigEndian.AppendUint64(msg, off)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	if _, err := c.conn.Write(append(msg, data...)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one simple reply header: the request's cookie and error.
func (c *nbdClient) reply() (cookie uint64, errno uint32, err error) {
	var rep struct {
		Magic, Error uint32
		Cookie       uint64
	}
	if err := binary.Read(c.r, binary.BigEndian, &rep); err != nil {
		return 0, 0, err
	}
	if rep.Magic != nbdReplyMagic {
		return 0, 0, fmt.Errorf("reply magic %#x", rep.Magic)
	}
	return rep.Cookie, rep.Error, nil
}

// read reads length bytes at off, waiting for the answer.
func (c *nbdClient) read(off uint64, length uint32) []byte {
	c.t.Helper()
	msg := binary.BigEndian.AppendUint32(nil, nbdRequestMagic)
	msg = binary.BigEndian.AppendUint16(msg, 0)
	msg = binary.BigEndian.AppendUint16(msg, nbdCmdRead)
	msg = binary.BigEndian.AppendUint64(msg, 1)
	msg = binary.BigEndian.AppendUint64(msg, off)
	msg = binary.BigEndian.AppendUint32(msg, length)
	if _, err := c.conn.Write(msg); err != nil {
		c.t.Fatal(err)
	}
	_, errno, err := c.reply()
	if err != nil || errno != 0 {
		c.t.Fatalf("nbd read of %d bytes at %d: error %d, %v", length, off, errno, err)
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		c.t.Fatal(err)
	}
	return buf
}

// closed reports whether the server closed the connection: a read ends
// (within a bound, for a server that did not).
func (c *nbdClient) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
