package nbd

// ParseRequest exposes the request header parser to the external tests.
func ParseRequest(b []byte) (flags, typ uint16, cookie, offset uint64, length uint32, err error) {
	var h [requestHeaderLen]byte
	copy(h[:], b)
	r, err := parseRequest(&h)
	return r.flags, r.typ, r.cookie, r.offset, r.length, err
}

// Clock is the server's time source, for tests that drive time themselves.
type Clock = clock

// SetClock makes s take time from c; call it before Serve. Deadlines s
// sets on connections are then times of c, so the listener given to Serve
// must return connections that measure their deadlines by c.
func SetClock(s *Server, c Clock) { s.clock = c }
