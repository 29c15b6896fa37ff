package repo

import "bytes"

// isZero reports whether b holds only zero bytes. Comparing b with itself
// shifted by one byte is a single streaming pass the runtime vectorises.
func isZero(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if b[0] != 0 || b[len(b)-1] != 0 {
		return false
	}
	return bytes.Equal(b[1:], b[:len(b)-1])
}
