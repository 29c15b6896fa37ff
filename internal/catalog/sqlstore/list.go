package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// where is a conjunction of conditions written with ? and their
// arguments. Conditions hold only column names from this package and
// placeholders, never values.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// placeholders returns "?, ?, …" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// resourceFilter applies the Filter fields volumes, snapshots and backups
// share: ProjectID, Name, Status, Since.
func resourceFilter(d *Dialect, f catalog.Filter) where {
	var w where
	if f.ProjectID != "" {
		w.add("project_id = ?", f.ProjectID)
	}
	if f.Name != "" {
		w.add("name = ?", f.Name)
	}
	if f.Status != "" {
		w.add("status = ?", string(f.Status))
	}
	if !f.Since.IsZero() {
		w.add("created_at >= ?", d.Time(f.Since))
	}
	return w
}

// orderKey is one column of an order.
type orderKey struct {
	col  string
	desc bool
}

// order resolves f.Sort against tb: every key must be one
// catalog.ValidSortKey accepts and tb has, or the error wraps
// cairn.ErrInvalid. The order ends with id in the last key's direction,
// which makes it total. oldestFirst replaces the order (after checking
// f.Sort) with created_at, id ascending.
func order(tb *table, f catalog.Filter, oldestFirst bool) ([]orderKey, error) {
	keys := make([]orderKey, 0, len(f.Sort)+1)
	for _, k := range f.Sort {
		col, ok := tb.sorts[k.Key]
		if !catalog.ValidSortKey(k.Key) || !ok {
			return nil, fmt.Errorf("sort key %q for %ss: %w", k.Key, tb.noun, cairn.ErrInvalid)
		}
		keys = append(keys, orderKey{col, k.Desc})
	}
	if oldestFirst {
		keys = []orderKey{{"created_at", false}}
	}
	if len(keys) == 0 {
		keys = append(keys, orderKey{"created_at", true})
	}
	if last := keys[len(keys)-1]; last.col != "id" {
		keys = append(keys, orderKey{"id", last.desc})
	}
	return keys, nil
}

// list runs tb's query with w, f's order, Marker and Limit, calling scan
// for each row.
// sel, when not empty, replaces the table's SELECT of every column.
func (t *tx) list(ctx context.Context, tb *table, sel string, f catalog.Filter, w where, oldestFirst bool, scan func(*sql.Rows) error) error {
	keys, err := order(tb, f, oldestFirst)
	if err != nil {
		return err
	}
	if f.Limit < 0 {
		return fmt.Errorf("limit %d: %w", f.Limit, cairn.ErrInvalid)
	}
	if f.Offset < 0 {
		return fmt.Errorf("offset %d: %w", f.Offset, cairn.ErrInvalid)
	}
	if f.Marker != "" {
		if err := t.afterMarker(ctx, tb, keys, f.Marker, f.ProjectID, &w); err != nil {
			return err
		}
	}
	var q strings.Builder
	if sel == "" {
		sel = tb.sel
	}
	q.WriteString(sel)
	q.WriteString(w.sql())
	q.WriteString(" ORDER BY ")
	for i, k := range keys {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(k.col)
		if k.desc {
			q.WriteString(" DESC")
		}
	}
	args := w.args
	switch {
	case f.Limit > 0:
		q.WriteString(" LIMIT ?")
		args = append(args, int64(f.Limit))
	case f.Offset > 0:
		// SQLite takes an OFFSET only after a LIMIT: no limit is the
		// largest.
		q.WriteString(" LIMIT ?")
		args = append(args, int64(math.MaxInt64))
	}
	if f.Offset > 0 {
		q.WriteString(" OFFSET ?")
		args = append(args, int64(f.Offset))
	}
	return t.all(ctx, tb.name, t.d.rebind(q.String()), args, scan)
}

// afterMarker adds to w the condition that a row comes after the row
// marker in keys' order (keyset paging). A marker naming no row of tb is
// cairn.ErrNotFound, and so is, for a list of one project's rows, a
// marker naming another project's: a list must not tell that another
// project's ID exists.
func (t *tx) afterMarker(ctx context.Context, tb *table, keys []orderKey, marker, project string, w *where) error {
	cols := make([]string, len(keys))
	vals := make([]any, len(keys))
	dest := make([]any, len(keys))
	for i, k := range keys {
		cols[i] = k.col
		dest[i] = &vals[i]
	}
	mq, margs := "SELECT "+strings.Join(cols, ", ")+" FROM "+tb.name+" WHERE id = ?", []any{marker}
	if project != "" {
		mq += " AND project_id = ?"
		margs = append(margs, project)
	}
	err := t.scanRow(ctx, t.d.rebind(mq), margs, dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("marker %s: %w", marker, cairn.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("marker %s: %w", marker, err)
	}
	same := true
	for _, k := range keys[1:] {
		same = same && k.desc == keys[0].desc
	}
	op := func(desc bool) string {
		if desc {
			return " < "
		}
		return " > "
	}
	if same {
		// A row value comparison, which both databases answer from an
		// index on the columns.
		w.add("("+strings.Join(cols, ", ")+")"+op(keys[0].desc)+"("+placeholders(len(cols))+")", vals...)
		return nil
	}
	// Mixed directions: (a > ?) OR (a = ? AND b < ?) OR …
	var ors []string
	var args []any
	for i, k := range keys {
		var and []string
		for j := range i {
			and = append(and, cols[j]+" = ?")
			args = append(args, vals[j])
		}
		and = append(and, k.col+op(k.desc)+"?")
		args = append(args, vals[i])
		ors = append(ors, "("+strings.Join(and, " AND ")+")")
	}
	w.add("("+strings.Join(ors, " OR ")+")", args...)
	return nil
}
