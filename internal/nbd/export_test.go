package nbd

// ParseRequest exposes the request header parser to the external tests.
func ParseRequest(b []byte) (flags, typ uint16, cookie, offset uint64, length uint32, err error) {
	var h [requestHeaderLen]byte
	copy(h[:], b)
	r, err := parseRequest(&h)
	return r.flags, r.typ, r.cookie, r.offset, r.length, err
}
