package binlog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Position is a GTID position, as @@gtid_binlog_pos prints it: the last
// GTID of each replication domain, by domain.
type Position map[uint32]GTID

// ParsePosition reads a GTID position: "" or comma-separated
// domain-server-sequence triples, one per domain.
func ParsePosition(s string) (Position, error) {
	p := Position{}
	if strings.TrimSpace(s) == "" {
		return p, nil
	}
	for _, f := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(f), "-")
		if len(parts) != 3 {
			return nil, fmt.Errorf("GTID %q: %w", f, ErrDamaged)
		}
		d, err1 := strconv.ParseUint(parts[0], 10, 32)
		srv, err2 := strconv.ParseUint(parts[1], 10, 32)
		seq, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("GTID %q: %w", f, ErrDamaged)
		}
		if _, dup := p[uint32(d)]; dup {
			return nil, fmt.Errorf("GTID position %q names domain %d twice: %w", s, d, ErrDamaged)
		}
		p[uint32(d)] = GTID{Domain: uint32(d), Server: uint32(srv), Seq: seq}
	}
	return p, nil
}

// String prints the position ordered by domain, as the server does.
func (p Position) String() string {
	domains := make([]uint32, 0, len(p))
	for d := range p {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	var b strings.Builder
	for i, d := range domains {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p[d].String())
	}
	return b.String()
}

// Clone returns a copy of p.
func (p Position) Clone() Position {
	out := make(Position, len(p))
	for d, g := range p {
		out[d] = g
	}
	return out
}

// Follow records g as its domain's last GTID when it is newer, and
// reports false when sequence numbers were skipped before it
// (transactions missing). A domain p does not know yet is followed by
// anything, and an older GTID (one read again) changes nothing.
func (p Position) Follow(g GTID) bool {
	prev, known := p[g.Domain]
	if known && g.Seq <= prev.Seq {
		return true
	}
	p[g.Domain] = g
	return !known || g.Seq == prev.Seq+1
}
