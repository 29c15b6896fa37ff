package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// A recover in place's phases, read from the logs of the run: the
// service's (JSON lines), the data plane's (text) and the instance's
// server log (PostgreSQL's stderr). Each mark is the first line at or
// after the recover began that matches it; the phases are the spans
// between consecutive marks.
type logMark struct {
	name string // the phase that ends at this mark
	file string // "service", "dataplane" or "server"
	// match tells the line of the mark; for the service's JSON lines,
	// msg prefix and the instance in resource or instance.
	match func(line string) bool
}

// recoverMarks are a PostgreSQL recover in place's marks, in order.
func recoverMarks(instance string) []logMark {
	svc := func(msgPrefix string) func(string) bool {
		return func(line string) bool {
			var l struct {
				Msg      string `json:"msg"`
				Kind     string `json:"kind"`
				Resource string `json:"resource"`
				Instance string `json:"instance"`
			}
			if json.Unmarshal([]byte(line), &l) != nil || !strings.HasPrefix(l.Msg, msgPrefix) {
				return false
			}
			return l.Resource == instance && l.Kind == "instance.recover" || l.Instance == instance
		}
	}
	dataPlane := func(msg string) func(string) bool {
		return func(l string) bool {
			return strings.Contains(l, `msg="`+msg+`"`) && strings.Contains(l, "instance="+instance)
		}
	}
	contains := func(s string) func(string) bool {
		return func(line string) bool { return strings.Contains(line, s) }
	}
	return []logMark{
		{"", "service", svc("task started")},
		{"server stop, unmount, detach", "service", svc("recover: instance stopped")},
		{"safety snapshot, revert", "service", func(l string) bool {
			return svc("recover: volume reverted")(l) || svc("recover: backup written")(l)
		}},
		{"plan, attach, mount", "dataplane", dataPlane("recovering instance's volume mounted")},
		{"overlay, log files to the volume", "dataplane", dataPlane("recovery's log files written")},
		{"server start to redo", "server", contains("LOG:  redo starts at")},
		{"replay to the instant", "server", contains("LOG:  pausing at the end of recovery")},
		{"promotion", "server", contains("LOG:  database system is ready to accept connections")},
		{"settings cleared, recorded, task done", "service", svc("task done")},
	}
}

var (
	dataPlaneTime = regexp.MustCompile(`^time=(\S+)`)
	serverTime    = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC`)
)

// lineTime reads the time a line of one of the logs was written.
func lineTime(file, line string) (time.Time, bool) {
	switch file {
	case "service":
		var l struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Time.IsZero() {
			return time.Time{}, false
		}
		return l.Time, true
	case "dataplane":
		m := dataPlaneTime.FindStringSubmatch(line)
		if m == nil {
			return time.Time{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		return t, err == nil
	default:
		m := serverTime.FindStringSubmatch(line)
		if m == nil {
			return time.Time{}, false
		}
		t, err := time.Parse("2006-01-02 15:04:05.999999999", m[1])
		return t.UTC(), err == nil
	}
}

// recoverPhaseTimes reads the phases of the recover of instance that
// began at or after from, in seconds by phase, in order. A mark not
// found ends the list there, with an error naming it.
func recoverPhaseTimes(c config, instance string, from time.Time) ([]string, []float64, error) {
	files := map[string]string{
		"service":   c.serveLog,
		"dataplane": filepath.Join(c.dataDir, "data-plane.log"),
		"server":    filepath.Join(c.dataDir, "instances", "logs", instance+".log"),
	}
	var names []string
	var secs []float64
	prev := time.Time{}
	for _, m := range recoverMarks(instance) {
		after := from
		if prev.After(from) {
			after = prev
		}
		at, err := firstMark(files[m.file], m, after, prev.IsZero())
		if err != nil {
			return names, secs, fmt.Errorf("phase %q: %w", m.name, err)
		}
		if !prev.IsZero() {
			names = append(names, m.name)
			secs = append(secs, at.Sub(prev).Seconds())
		}
		prev = at
	}
	return names, secs, nil
}

// firstMark finds the time of the first line of path at or after from
// that m matches. The server log's times have millisecond precision:
// a mark there may read up to a millisecond before the one it follows,
// so unless first, from is taken a millisecond early.
func firstMark(path string, m logMark, from time.Time, first bool) (time.Time, error) {
	if !first && m.file == "server" {
		from = from.Add(-time.Millisecond)
	}
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		at, ok := lineTime(m.file, line)
		if !ok || at.Before(from) || !m.match(line) {
			continue
		}
		return at, nil
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, err
	}
	return time.Time{}, fmt.Errorf("no line in %s", path)
}
