package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cairnproject/cairn"
)

// TestClientUnreachable: a request to a port nothing listens on fails
// with a message naming the URL, what happened and what to do, and wraps
// cairn.ErrUnavailable.
func TestClientUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	c := New(u+"/v3", "cairn_secret", nil)
	_, err = c.Whoami(t.Context())
	var ue *UnreachableError
	if !errors.Is(err, cairn.ErrUnavailable) || !errors.As(err, &ue) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("closed port: %#v", err)
	}
	for _, want := range []string{"cannot reach the cairn API at " + u + ":", "connection refused", "is cairn serve running", "--url or CAIRN_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	// The project's calls say the same.
	c.SetProject("p")
	if _, err := c.GetVolume(t.Context(), "v"); !errors.As(err, &ue) || ue.Reason != "connection refused" {
		t.Errorf("GetVolume: %v", err)
	}
}

// failingTransport fails every request with err.
type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// TestClientUnreachableReasons: each way of getting no answer is named.
func TestClientUnreachableReasons(t *testing.T) {
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	cases := []struct {
		err    error
		reason string
	}{
		{dial(&net.DNSError{Err: "no such host", Name: "cairn.invalid", IsNotFound: true}), "no such host cairn.invalid"},
		{dial(&net.DNSError{Err: "server misbehaving", Name: "cairn.example", IsTemporary: true}), "looking up cairn.example: server misbehaving"},
		{dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)), "connection refused"},
		{dial(os.ErrDeadlineExceeded), "timed out"},
		{context.DeadlineExceeded, "timed out"},
		{os.NewSyscallError("read", syscall.ECONNRESET), "the connection was closed without an answer"},
		{dial(errors.New("network is down")), "dial tcp: network is down"},
	}
	for _, tc := range cases {
		c := New("http://cairn.example:8776", "t", &http.Client{Transport: failingTransport{tc.err}})
		_, err := c.Whoami(t.Context())
		var ue *UnreachableError
		if !errors.As(err, &ue) || ue.Reason != tc.reason || !errors.Is(err, cairn.ErrUnavailable) || !errors.Is(err, tc.err) {
			t.Errorf("%v: %#v, want reason %q", tc.err, err, tc.reason)
			continue
		}
		if !strings.Contains(err.Error(), "http://cairn.example:8776: "+tc.reason) {
			t.Errorf("%v: message %q", tc.err, err)
		}
	}

	// A request the caller cancelled is not the API's absence.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c := New("http://cairn.example:8776", "t", &http.Client{Transport: failingTransport{context.Canceled}})
	if _, err := c.Whoami(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, cairn.ErrUnavailable) {
		t.Errorf("cancelled: %#v", err)
	}
}
