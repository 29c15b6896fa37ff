package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The catalog's serve lease names its holder by host, the host's boot,
// PID and the process's start time (a PID alone is reused), so that a
// service restarted on the same host after a kill -9 sees that the
// holder is gone and takes the lease at once, instead of waiting for it
// to lapse. A holder on another host is never known gone.

// processHolder names this process for the lease.
func processHolder() string {
	host, _ := os.Hostname()
	pid := os.Getpid()
	return fmt.Sprintf("cairn serve host=%s pid=%d boot=%s start=%s", host, pid, bootID(), procStart(pid))
}

// holderGone reports that the process holder names ran on this host and
// no longer runs.
func holderGone(holder string) bool {
	f := map[string]string{}
	for _, field := range strings.Fields(holder) {
		if k, v, ok := strings.Cut(field, "="); ok {
			f[k] = v
		}
	}
	host, _ := os.Hostname()
	pid, err := strconv.Atoi(f["pid"])
	if f["host"] != host || err != nil || f["boot"] == "" || f["boot"] == "unknown" {
		return false
	}
	if f["boot"] != bootID() {
		return true // the host restarted since
	}
	start := procStart(pid)
	return start == "unknown" || start != f["start"]
}

// bootID identifies this boot of the host ("unknown" without /proc).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// procStart is process pid's start time in clock ticks since boot
// (/proc/PID/stat, field 22), "unknown" when no such process runs.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "unknown"
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "unknown"
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return "unknown"
	}
	return fields[19] // field 22: fields here start at field 3
}
