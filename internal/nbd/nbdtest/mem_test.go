package nbdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
)

func extents(t *testing.T, m *Mem, off, length int64) string {
	t.Helper()
	es, err := m.BlockStatus(t.Context(), off, length)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, "%d", e.Length)
		switch {
		case e.Hole && e.Zero:
			b.WriteString("h ")
		case e.Zero:
			b.WriteString("z ")
		default:
			b.WriteString("d ")
		}
	}
	return b.String()
}

func TestMem(t *testing.T) {
	ctx := t.Context()
	m := NewMem(10*PageSize+100, MemOptions{})
	if got := extents(t, m, 0, m.Size()); got != "41060h " {
		t.Errorf("fresh: %s", got)
	}
	if err := m.WriteAt(ctx, []byte("abc"), PageSize+10); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(ctx, []byte("z"), m.Size()-1); err != nil {
		t.Fatal(err)
	}
	if got := extents(t, m, 0, m.Size()); got != "4096h 4096d 32768h 100d " {
		t.Errorf("after writes: %s", got)
	}
	if got := extents(t, m, PageSize+5, 10); got != "4091d " {
		t.Errorf("mid-page: %s", got)
	}
	if m.Synced(PageSize, 1) || !m.Synced(0, PageSize) {
		t.Errorf("dirty tracking")
	}
	if err := m.Flush(ctx); err != nil || !m.Synced(0, m.Size()) || m.Flushes() != 1 {
		t.Errorf("flush: %v", err)
	}

	// Trim keeps partial pages, frees whole ones (and the partial last page
	// when the range reaches the end).
	if err := m.Trim(ctx, PageSize+1, 2*PageSize); err != nil {
		t.Fatal(err)
	}
	if got := extents(t, m, 0, 2*PageSize); got != "4096h 4096d " {
		t.Errorf("trim of a partial page freed it: %s", got)
	}
	if err := m.Trim(ctx, 10*PageSize, 100); err != nil || m.Allocated() != PageSize {
		t.Errorf("trim of the tail: %v, %d allocated", err, m.Allocated())
	}

	// Zero: holes without noHole, allocated zeros with it.
	if err := m.Zero(ctx, 0, 3*PageSize, true); err != nil {
		t.Fatal(err)
	}
	if got := extents(t, m, 0, 4*PageSize); got != "12288z 4096h " {
		t.Errorf("zero noHole: %s", got)
	}
	if err := m.Zero(ctx, PageSize, PageSize, false); err != nil {
		t.Fatal(err)
	}
	if got := extents(t, m, 0, 3*PageSize); got != "4096z 4096h 4096z " {
		t.Errorf("zero: %s", got)
	}
	m.Fill([]byte{1, 2, 3, 4}, 0)
	if err := m.Zero(ctx, 1, 2, false); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if err := m.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, []byte{1, 0, 0, 4}) {
		t.Errorf("partial zero: %v %v", p, err)
	}

	// Out of range.
	for _, err := range []error{
		m.ReadAt(ctx, p, m.Size()-3),
		m.WriteAt(ctx, p, -1),
		m.Zero(ctx, 0, m.Size()+1, false),
	} {
		if !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("out of range: %v", err)
		}
	}
}

func TestMemHookAndReadOnly(t *testing.T) {
	ctx := t.Context()
	m := NewMem(PageSize, MemOptions{ReadOnly: true})
	m.Fill([]byte("data"), 0)
	if !m.ReadOnly() || !m.MultiConn() || m.FastZero() {
		t.Errorf("options not reflected")
	}
	if err := m.WriteAt(ctx, []byte("x"), 0); err == nil {
		t.Errorf("write to a read-only export succeeded")
	}
	boom := errors.New("boom")
	m.SetHook(func(ctx context.Context, op Op, off, length int64) error {
		if op == OpRead && off == 1 {
			return boom
		}
		return nil
	})
	if err := m.ReadAt(ctx, make([]byte, 1), 1); err != boom {
		t.Errorf("hook error not returned: %v", err)
	}
	if err := m.ReadAt(ctx, make([]byte, 1), 0); err != nil {
		t.Errorf("hook failed the wrong read: %v", err)
	}
	if m.Count(OpRead) != 2 {
		t.Errorf("count %d", m.Count(OpRead))
	}
}

func TestCatalog(t *testing.T) {
	ctx := t.Context()
	c := NewCatalog()
	c.Add("b", "second", NewMem(1, MemOptions{}))
	c.Add("a", "first", NewMem(1, MemOptions{}))
	list, _ := c.List(ctx)
	if fmt.Sprint(list) != "[{b second} {a first}]" {
		t.Errorf("list %v", list)
	}
	if _, _, err := c.Open(ctx, "nope"); !errors.Is(err, cairn.ErrNotFound) {
		t.Errorf("missing export: %v", err)
	}
	_, release, err := c.Open(ctx, "a")
	if err != nil || c.InUse("a") != 1 {
		t.Fatalf("open: %v", err)
	}
	release()
	release()
	if c.InUse("a") != 0 {
		t.Errorf("release not idempotent: %d", c.InUse("a"))
	}
	var _ nbd.Catalog = c
}

// TestCatalogWaitReleased: WaitReleased returns once the last connection
// released the export, and not while one still holds it.
func TestCatalogWaitReleased(t *testing.T) {
	ctx := t.Context()
	c := NewCatalog()
	c.Add("a", "", NewMem(1, MemOptions{}))
	if err := c.WaitReleased(ctx, "a"); err != nil {
		t.Fatalf("nothing open: %v", err)
	}
	if err := c.WaitReleased(ctx, "nope"); err != nil {
		t.Fatalf("missing export: %v", err)
	}
	_, release1, err := c.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, release2, err := c.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.WaitReleased(ctx, "a") }()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	release1()
	// One connection still holds the export: a wait whose context has
	// ended reports that instead of returning nil.
	if err := c.WaitReleased(ended, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("with the export still open: %v, want context.Canceled", err)
	}
	release2()
	if err := <-waited; err != nil {
		t.Errorf("waiting for the last release: %v", err)
	}
	if n := c.InUse("a"); n != 0 {
		t.Errorf("in use %d after both releases", n)
	}
}
