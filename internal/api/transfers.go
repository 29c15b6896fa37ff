package api

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// transferJSON is a transfer as the block storage API shows it, with
// created_at when withTime.
func transferJSON(r *http.Request, tr cairn.VolumeTransfer, withTime bool) wire.Transfer {
	href := baseURL(r) + (&url.URL{Path: "/v3/" + r.PathValue("project_id") + "/os-volume-transfer/" + tr.ID}).EscapedPath()
	out := wire.Transfer{ID: tr.ID, VolumeID: tr.VolumeID, Name: optional(tr.Name),
		Links: []wire.Link{{Rel: "self", Href: href}, {Rel: "bookmark", Href: href}}}
	if withTime {
		at := tr.CreatedAt
		out.CreatedAt = &at
	}
	return out
}

func (s *Server) createTransfer(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.TransferCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Transfer.VolumeID == "" {
		return fmt.Errorf("transfer.volume_id: missing: %w", cairn.ErrInvalid)
	}
	tr, key, err := s.svc.CreateTransfer(r.Context(), c, req.Transfer.VolumeID, deref(req.Transfer.Name))
	if err != nil {
		return err
	}
	out := transferJSON(r, tr, true)
	out.AuthKey = key
	writeJSON(w, http.StatusAccepted, map[string]any{"transfer": out})
	return nil
}

func (s *Server) listTransfers(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		if err := noQuery(r, "all_tenants"); err != nil {
			return err
		}
		all, err := allTenants(r, c)
		if err != nil {
			return err
		}
		list, err := s.svc.Transfers(r.Context(), c, all)
		if err != nil {
			return err
		}
		out := []wire.Transfer{}
		for _, tr := range list {
			out = append(out, transferJSON(r, tr, detail))
		}
		writeJSON(w, http.StatusOK, map[string]any{"transfers": out})
		return nil
	}
}

func (s *Server) showTransfer(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	tr, err := s.svc.Transfer(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"transfer": transferJSON(r, tr, true)})
	return nil
}

func (s *Server) deleteTransfer(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteTransfer(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) acceptTransfer(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.TransferAcceptRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Accept.AuthKey == "" {
		return fmt.Errorf("accept.auth_key: missing: %w", cairn.ErrInvalid)
	}
	tr, err := s.svc.AcceptTransfer(r.Context(), c, r.PathValue("id"), req.Accept.AuthKey)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"transfer": transferJSON(r, tr, false)})
	return nil
}
