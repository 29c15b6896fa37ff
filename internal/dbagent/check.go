package dbagent

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// checkOutputLines is how much of a check tool's output a report keeps.
const checkOutputLines = 8

// RunCheckTool runs a datastore's check tool (made with
// exec.CommandContext), its standard output and error into out (a
// buffer of its own when nil): passed when it exits 0, the output's last
// lines either way. An error is for a tool that could not run or was cut
// short by its context, not for the damage it reports with its exit
// status.
func RunCheckTool(cmd *exec.Cmd, out *TailBuffer) (passed bool, output string, err error) {
	if out == nil {
		out = &TailBuffer{Max: stderrKept}
	}
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 10 * time.Second
	}
	err = cmd.Run()
	output = LastLines(out.String(), checkOutputLines)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, output, nil
	case errors.As(err, &exit) && exit.Exited():
		return false, output, nil
	default:
		// It did not start, or a signal (a cancelled context's kill)
		// ended it: no verdict.
		return false, output, ToolError(cmd, err, out.String())
	}
}

// LastLines returns the last n non-empty lines of s, joined by " / ".
func LastLines(s string, n int) string {
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// CheckQuery ends a check whose tool gave rep: with req's query (none
// when empty) run by query, which returns the first column of the first
// row as text, and whether there was a row. A query that failed or
// returned no row fails the check; ctx ending is an error, no verdict.
func CheckQuery(ctx context.Context, rep CheckReport, req CheckRequest,
	query func(context.Context, CheckRequest) (result string, row bool, err error)) (CheckReport, error) {
	if req.Query == "" {
		return rep, nil
	}
	result, row, err := query(ctx, req)
	switch {
	case ctx.Err() != nil:
		return rep, fmt.Errorf("check: %w", ctx.Err())
	case err != nil:
		rep.Passed = false
		rep.Detail = appendDetail(rep.Detail, fmt.Sprintf("query in %s failed: %v", req.Database, err))
	case !row:
		rep.Passed = false
		rep.Detail = appendDetail(rep.Detail, "query in "+req.Database+" returned no row")
	default:
		rep.Result = result
		rep.Detail = appendDetail(rep.Detail, fmt.Sprintf("query in %s returned %q", req.Database, result))
	}
	return rep, nil
}

func appendDetail(d, s string) string {
	if d == "" {
		return s
	}
	return d + "; " + s
}
