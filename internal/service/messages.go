package service

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// User messages: the block storage API's record of what failed in the
// background (from microversion 3.3). A task of a volume, snapshot or
// backup that ended failed is one: its ID is the message's, its error
// the message's text, and the request that made it the message's
// request. Deleting a message marks the task; the task stays, for
// cairn's task history.

// MessageTTL is how long a message is kept at least (guaranteed_until),
// as the block storage API's default message_ttl: 30 days. cairn keeps
// failed tasks, and so their messages, until they are deleted.
const MessageTTL = 30 * 24 * time.Hour

// Message is a user message.
type Message struct {
	ID, ProjectID string
	// RequestID is the request that made the task ("" when unknown).
	RequestID string
	// EventID names what failed: VOLUME_ and the task's kind, e.g.
	// VOLUME_VOLUME_CREATE.
	EventID     string
	UserMessage string
	// Level is always ERROR: cairn records failures only.
	Level string
	// ResourceType is VOLUME, SNAPSHOT or BACKUP; ResourceID the one it
	// was about.
	ResourceType, ResourceID   string
	CreatedAt, GuaranteedUntil time.Time
}

// messageActions are the task kinds that are user messages, with the
// resource type and what was being done.
var messageActions = map[string]struct{ resource, action string }{
	"volume.create":   {"VOLUME", "create volume"},
	"volume.delete":   {"VOLUME", "delete volume"},
	"volume.extend":   {"VOLUME", "extend volume"},
	"snapshot.create": {"SNAPSHOT", "create snapshot"},
	"snapshot.delete": {"SNAPSHOT", "delete snapshot"},
	"backup.create":   {"BACKUP", "create backup"},
	"backup.delete":   {"BACKUP", "delete backup"},
	"backup.restore":  {"VOLUME", "restore backup"},
}

// messageOf returns the message a task is, and whether it is one: a
// failed task of a message kind whose message was not deleted.
func messageOf(t cairn.Task) (Message, bool) {
	a, ok := messageActions[t.Kind]
	if !ok || t.State != cairn.TaskFailed || t.MessageDeleted {
		return Message{}, false
	}
	created := t.FinishedAt
	if created.IsZero() {
		created = t.UpdatedAt
	}
	return Message{ID: t.ID, ProjectID: t.ProjectID, RequestID: t.RequestID,
		EventID:     "VOLUME_" + strings.ToUpper(strings.ReplaceAll(t.Kind, ".", "_")),
		UserMessage: a.action + ": " + t.Error, Level: "ERROR", ResourceType: a.resource, ResourceID: t.ResourceID,
		CreatedAt: created, GuaranteedUntil: created.Add(MessageTTL)}, true
}

// Messages lists project's messages, newest first, a page of them
// (q.Limit, from after q.Marker and q.Offset more; sorting is not
// offered).
func (s *Service) Messages(ctx context.Context, c Caller, project string, q ListQuery) ([]Message, error) {
	if !c.may(project) {
		return nil, errorf(cairn.ErrNotFound, "project %s: not found", project)
	}
	if len(q.Sort) > 0 {
		return nil, errorf(cairn.ErrInvalid, "messages are listed newest first: sort is not offered")
	}
	tasks, err := readRows(ctx, s.cat, func(tx catalog.Tx) ([]cairn.Task, error) {
		return tx.Tasks(ctx, catalog.Filter{ProjectID: project, TaskStates: []cairn.TaskState{cairn.TaskFailed}})
	})
	if err != nil {
		return nil, err
	}
	var out []Message
	for _, t := range slices.Backward(tasks) {
		if m, ok := messageOf(t); ok {
			out = append(out, m)
		}
	}
	if q.Marker != "" {
		i := slices.IndexFunc(out, func(m Message) bool { return m.ID == q.Marker })
		if i < 0 {
			return nil, errorf(cairn.ErrInvalid, "marker %s: no such message", shorten(q.Marker))
		}
		out = out[i+1:]
	}
	out = out[min(q.Offset, len(out)):]
	limit := q.Limit
	if limit == 0 && !q.Empty {
		limit = DefaultLimit
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Message returns one of project's messages.
func (s *Service) Message(ctx context.Context, c Caller, project, id string) (Message, error) {
	t, err := s.messageTask(ctx, c, project, id)
	if err != nil {
		return Message{}, err
	}
	m, _ := messageOf(t)
	return m, nil
}

// DeleteMessage deletes one of project's messages (the task stays).
func (s *Service) DeleteMessage(ctx context.Context, c Caller, project, id string) error {
	if c.ReadOnly {
		return errorf(cairn.ErrForbidden, "a reader may not delete messages")
	}
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		t, err := messageTaskIn(ctx, tx, c, project, id)
		if err != nil {
			return err
		}
		t.MessageDeleted = true
		return tx.UpdateTask(ctx, t)
	})
}

func (s *Service) messageTask(ctx context.Context, c Caller, project, id string) (cairn.Task, error) {
	var t cairn.Task
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		t, err = messageTaskIn(ctx, tx, c, project, id)
		return err
	})
	return t, err
}

// messageTaskIn returns the task that is message id of project, which c
// may see; anything else is ErrNotFound.
func messageTaskIn(ctx context.Context, tx catalog.Tx, c Caller, project, id string) (cairn.Task, error) {
	notFound := errorf(cairn.ErrNotFound, "message %s: not found", shorten(id))
	if !c.may(project) {
		return cairn.Task{}, notFound
	}
	t, err := tx.Task(ctx, id)
	if err != nil {
		if errors.Is(err, cairn.ErrNotFound) {
			return cairn.Task{}, notFound
		}
		return cairn.Task{}, err
	}
	if _, ok := messageOf(t); !ok || t.ProjectID != project {
		return cairn.Task{}, notFound
	}
	return t, nil
}

// requestIDKey carries the API request's ID in a context.
type requestIDKey struct{}

// WithRequestID returns ctx carrying the ID of the API request it
// serves: the tasks queued under it record it (a message's request_id).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// requestIDOf is the request ID ctx carries, or "".
func requestIDOf(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
