package volumectl

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A reader or device opened on the control socket belongs to the process
// that opened it: the peer of the unix socket connection. When that
// process dies without closing it (a control plane killed in the middle of
// a backup), the handle would keep its volume or snapshot in use until it
// went idle; ReleaseOrphans closes such handles at once, and the next
// control plane calls it when it starts.

// peer identifies a process: its ID, and its start time so that a reused
// ID is not taken for the same process.
type peer struct {
	pid   int
	start string
}

type peerKey struct{}

// ConnContext is the http.Server's ConnContext of a control socket: it
// records the connecting process, which then owns what it opens.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil || cred.Pid <= 0 {
		return ctx
	}
	p := peer{pid: int(cred.Pid), start: processStart(int(cred.Pid))}
	if p.start == "" {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerOf returns the process that sent r, if known.
func peerOf(r *http.Request) (peer, bool) {
	p, ok := r.Context().Value(peerKey{}).(peer)
	return p, ok
}

// alive reports whether p still runs (the same process, not one that
// reused its ID).
func (p peer) alive() bool {
	return processStart(p.pid) == p.start
}

// processStart returns the start time of process pid (field 22 of
// /proc/PID/stat, in clock ticks since boot), or "" if there is none.
func processStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}
