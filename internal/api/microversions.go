package api

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// The APIs the block storage API added in the microversions cairn
// serves (3.1 to maxMinor), each answering 404 below its own, as that
// API answers a method its version lacks:
//
//	3.3  user messages (GET /messages, GET and DELETE /messages/{id});
//	     3.5 pages them (limit, marker, offset)
//	3.4  the glance_metadata filter of volume lists (listVolumes)
//	3.7  clusters (none: one service, in no cluster; a cluster's path
//	     is not found); os-services show "cluster"
//	3.8  manageable volumes and snapshots (none: cairn's backend holds
//	     only cairn's)
//	3.9  backup update (updateBackup)
//	3.10 the group_id filter of volume lists (listVolumes)
//
// 3.1, 3.2 and 3.6 change calls cairn does not have (image upload,
// consistency groups) or already behave as from then (bootable filter
// values are read as booleans at any version).

// Microversions at which the block storage API changed what cairn
// serves.
const (
	messagesMinor       = 3
	messagePagesMinor   = 5
	glanceMetadataMinor = 4
	clustersMinor       = 7
	manageableMinor     = 8
	backupUpdateMinor   = 9
	groupFilterMinor    = 10
)

// since serves h from microversion 3.minor on; below, it answers 404
// naming what and the version it needs.
func since(minor int, what string, h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		if !atLeast(r, minor) {
			return fmt.Errorf("API version %s is not supported on this method (%s: from 3.%d): %w",
				requestMicroversion(r), what, minor, cairn.ErrNotFound)
		}
		return h(w, r, c)
	}
}

func messageJSON(r *http.Request, m service.Message) wire.Message {
	href := baseURL(r) + (&url.URL{Path: "/v3/" + r.PathValue("project_id") + "/messages/" + m.ID}).EscapedPath()
	return wire.Message{ID: m.ID, RequestID: m.RequestID, EventID: m.EventID, UserMessage: m.UserMessage,
		MessageLevel: m.Level, ResourceType: m.ResourceType, ResourceUUID: m.ResourceID,
		CreatedAt: m.CreatedAt, GuaranteedUntil: m.GuaranteedUntil,
		Links: []wire.Link{{Rel: "self", Href: href}, {Rel: "bookmark", Href: href}}}
}

// listMessages is GET /messages: the project's messages, newest first;
// from 3.5 a page of them.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var allowed []string
	lq, err := listQuery(r, c, allowed...)
	if err != nil {
		return err
	}
	if !atLeast(r, messagePagesMinor) {
		for _, p := range []string{"limit", "marker", "offset", "sort", "sort_key", "sort_dir"} {
			if r.URL.Query().Has(p) {
				return fmt.Errorf("query parameter %q: messages are paged from microversion 3.%d: %w", p, messagePagesMinor, cairn.ErrInvalid)
			}
		}
	}
	list, err := s.svc.Messages(r.Context(), c, r.PathValue("project_id"), lq)
	if err != nil {
		return err
	}
	out := wire.MessageList{Messages: []wire.Message{}}
	for _, m := range list {
		out.Messages = append(out.Messages, messageJSON(r, m))
	}
	if len(list) > 0 {
		out.MessagesLinks = nextLink(r, len(list), lq, list[len(list)-1].ID)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) showMessage(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	m, err := s.svc.Message(r.Context(), c, r.PathValue("project_id"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.MessageShow{Message: messageJSON(r, m)})
	return nil
}

func (s *Server) deleteMessage(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteMessage(r.Context(), c, r.PathValue("project_id"), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listClusters is GET /clusters[/detail] (admins): none.
func (s *Server) listClusters(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if !c.Admin {
		return fmt.Errorf("clusters are for admins: %w", cairn.ErrForbidden)
	}
	if err := noQuery(r, "binary", "name", "is_up", "disabled", "num_hosts", "num_down_hosts"); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.ClusterList{Clusters: []struct{}{}})
	return nil
}

// listManageable is GET /manageable_volumes|snapshots[/detail] (admins):
// none.
func listManageable(key string) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		if !c.Admin {
			return fmt.Errorf("%s are for admins: %w", key, cairn.ErrForbidden)
		}
		if err := noQuery(r, "host", "cluster", "limit", "marker", "offset", "sort", "sort_key", "sort_dir"); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.ManageableList{key: {}})
		return nil
	}
}

// noQuery refuses query parameters other than allowed, and repeated
// ones.
func noQuery(r *http.Request, allowed ...string) error {
	for k, v := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return fmt.Errorf("query parameter %q: unknown here: %w", k, cairn.ErrInvalid)
		}
		if len(v) != 1 {
			return fmt.Errorf("query parameter %q: given %d times: %w", k, len(v), cairn.ErrInvalid)
		}
	}
	return nil
}
