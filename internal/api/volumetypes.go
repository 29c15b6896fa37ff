package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// Volume types, in the block storage API's shapes and status codes:
//
//	GET    /types                                    list (is_public filter for admins)
//	POST   /types                                    create (admin), 200
//	GET    /types/default                            the default type
//	GET    /types/{id}                               show
//	PUT    /types/{id}                               name, description, is_public (admin), 200
//	DELETE /types/{id}                               (admin) 202; 400 while volumes are of it, and for the default type
//	GET    /types/{id}/extra_specs                   {"extra_specs": {...}}
//	POST   /types/{id}/extra_specs                   {"extra_specs": {...}} merged (admin); answers the body's
//	GET    /types/{id}/extra_specs/{key}             {key: value}
//	PUT    /types/{id}/extra_specs/{key}             {key: value}, the URL's key only (admin)
//	DELETE /types/{id}/extra_specs/{key}             (admin) 202
//	GET    /types/{id}/os-volume-type-access         (admin) the projects of a private type
//	POST   /types/{id}/action                        addProjectAccess, removeProjectAccess (admin) 202
//	GET    /types/{id}/encryption                    {}: no type is encrypted
//	POST   /types/{id}/encryption                    400: cairn's volumes are not encrypted at rest
//	GET    /types/{id}/encryption/{key}              404, as for any unencrypted type
//
// The service decides who may do and see what (service.VolumeTypes).

// volumeTypeUpdated, volumeTypeCreated and volumeTypeInfo are a type in
// the three shapes the block storage API answers.
func volumeTypeUpdated(vt cairn.VolumeType) wire.VolumeTypeUpdated {
	return wire.VolumeTypeUpdated{ID: vt.ID, Name: vt.Name, Description: optional(vt.Description),
		IsPublic: vt.IsPublic, ExtraSpecs: metadataJSON(vt.ExtraSpecs)}
}

func volumeTypeCreated(vt cairn.VolumeType) wire.VolumeTypeCreated {
	return wire.VolumeTypeCreated{VolumeTypeUpdated: volumeTypeUpdated(vt), AccessIsPublic: vt.IsPublic}
}

func volumeTypeInfo(vt cairn.VolumeType) wire.VolumeTypeInfo {
	return wire.VolumeTypeInfo{VolumeTypeCreated: volumeTypeCreated(vt)}
}

func (s *Server) listVolumeTypes(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var public *bool
	for k, vs := range r.URL.Query() {
		if k != "is_public" {
			return fmt.Errorf("query parameter %q: unknown here; the volume type list takes is_public: %w", k, cairn.ErrInvalid)
		}
		if len(vs) != 1 {
			return fmt.Errorf("query parameter is_public: given %d times: %w", len(vs), cairn.ErrInvalid)
		}
		// The cinder client sends is_public=None for every type.
		if strings.EqualFold(vs[0], "none") || !c.Admin {
			// Others see the public types and the private ones they
			// have access to, whatever they ask, as in the block
			// storage API.
			continue
		}
		v, ok, err := wire.Flag("is_public", json.RawMessage(quoteJSON(vs[0])))
		if err != nil || !ok {
			return fmt.Errorf("is_public %q: want true, false or none: %w", vs[0], cairn.ErrInvalid)
		}
		public = &v
	}
	list, err := s.svc.VolumeTypes(r.Context(), c, public)
	if err != nil {
		return err
	}
	items := make([]wire.VolumeTypeInfo, len(list))
	for i, vt := range list {
		items[i] = volumeTypeInfo(vt)
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_types": items})
	return nil
}

// quoteJSON is s as a JSON string.
func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (s *Server) showVolumeType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	vt, err := s.svc.VolumeType(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_type": volumeTypeInfo(vt)})
	return nil
}

func (s *Server) showDefaultVolumeType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	vt, err := s.svc.VolumeType(r.Context(), c, cairn.DefaultVolumeTypeID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_type": volumeTypeInfo(vt)})
	return nil
}

// flagOf reads an optional boolean member.
func flagOf(what string, b json.RawMessage) (*bool, error) {
	v, ok, err := wire.Flag(what, b)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, cairn.ErrInvalid)
	}
	if !ok {
		return nil, nil
	}
	return &v, nil
}

func (s *Server) createVolumeType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeTypeCreateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.VolumeType
	if in.Name == nil {
		return fmt.Errorf("volume_type.name is required: %w", cairn.ErrInvalid)
	}
	public, err := flagOf("volume_type.os-volume-type-access:is_public", in.AccessIsPublic)
	if err != nil {
		return err
	}
	create := service.VolumeTypeCreate{Name: *in.Name, IsPublic: public == nil || *public, ExtraSpecs: in.ExtraSpecs}
	if in.Description != nil {
		create.Description = *in.Description
	}
	vt, err := s.svc.CreateVolumeType(r.Context(), c, create)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_type": volumeTypeCreated(vt)})
	return nil
}

func (s *Server) updateVolumeType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeTypeUpdateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in := req.VolumeType
	public, err := flagOf("volume_type.is_public", in.IsPublic)
	if err != nil {
		return err
	}
	vt, err := s.svc.UpdateVolumeType(r.Context(), c, r.PathValue("id"),
		service.VolumeTypeUpdate{Name: in.Name, Description: in.Description, IsPublic: public})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_type": volumeTypeUpdated(vt)})
	return nil
}

func (s *Server) deleteVolumeType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteVolumeType(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) listExtraSpecs(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	vt, err := s.svc.VolumeType(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.ExtraSpecs{ExtraSpecs: metadataJSON(vt.ExtraSpecs)})
	return nil
}

func (s *Server) setExtraSpecs(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.ExtraSpecs
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ExtraSpecs == nil {
		return fmt.Errorf("extra_specs is required: give an object of strings: %w", cairn.ErrInvalid)
	}
	if err := s.svc.SetVolumeTypeExtraSpecs(r.Context(), c, r.PathValue("id"), req.ExtraSpecs); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) showExtraSpec(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	id, key := r.PathValue("id"), r.PathValue("key")
	vt, err := s.svc.VolumeType(r.Context(), c, id)
	if err != nil {
		return err
	}
	v, ok := vt.ExtraSpecs[key]
	if !ok {
		return fmt.Errorf("volume type %s: extra spec %q: %w", id, key, cairn.ErrNotFound)
	}
	writeJSON(w, http.StatusOK, map[string]string{key: v})
	return nil
}

// setExtraSpec sets one extra spec: the body is exactly {key: value}, of
// the URL's key.
func (s *Server) setExtraSpec(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	key := r.PathValue("key")
	var req map[string]string
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, ok := req[key]; !ok || len(req) != 1 {
		return fmt.Errorf("give exactly one extra spec, of the URL's key %q, as {%q: value}: %w", key, key, cairn.ErrInvalid)
	}
	if err := s.svc.SetVolumeTypeExtraSpecs(r.Context(), c, r.PathValue("id"), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) deleteExtraSpec(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if err := s.svc.DeleteVolumeTypeExtraSpec(r.Context(), c, r.PathValue("id"), r.PathValue("key")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) listVolumeTypeAccess(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	id := r.PathValue("id")
	projects, err := s.svc.VolumeTypeAccess(r.Context(), c, id)
	if err != nil {
		return err
	}
	out := wire.VolumeTypeAccessList{VolumeTypeAccess: make([]wire.VolumeTypeAccess, len(projects))}
	for i, p := range projects {
		out.VolumeTypeAccess[i] = wire.VolumeTypeAccess{VolumeTypeID: id, ProjectID: p}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) volumeTypeAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	var req wire.VolumeTypeActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	id := r.PathValue("id")
	var err error
	switch add, remove := req.AddProjectAccess, req.RemoveProjectAccess; {
	case (add == nil) == (remove == nil):
		return fmt.Errorf("give one action: addProjectAccess or removeProjectAccess: %w", cairn.ErrInvalid)
	case add != nil:
		err = s.svc.AddVolumeTypeAccess(r.Context(), c, id, add.Project)
	default:
		err = s.svc.RemoveVolumeTypeAccess(r.Context(), c, id, remove.Project)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Encryption types. cairn's volume engine does not encrypt volumes at
// rest (its backups are always encrypted), so no type is encrypted: the
// encryption of a type is {}, as the block storage API answers for an
// unencrypted type, and making one is refused rather than recorded and
// not done.

func (s *Server) showEncryptionType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if _, err := s.svc.VolumeType(r.Context(), c, r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Server) createEncryptionType(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	id := r.PathValue("id")
	if _, err := s.svc.VolumeType(r.Context(), c, id); err != nil {
		return err
	}
	if !c.Admin {
		return fmt.Errorf("volume type encryption is for admins: %w", cairn.ErrForbidden)
	}
	return fmt.Errorf("volume type %s: cairn's volumes are not encrypted at rest, so no volume type can be encrypted"+
		" (backups are always encrypted in the repository): %w", id, cairn.ErrInvalid)
}

func (s *Server) showEncryptionSpec(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	id := r.PathValue("id")
	if _, err := s.svc.VolumeType(r.Context(), c, id); err != nil {
		return err
	}
	return fmt.Errorf("volume type %s has no encryption (cairn's volumes are not encrypted at rest): %w", id, cairn.ErrNotFound)
}

// volumeTypeRef is a volume create's volume_type: a type's ID or name;
// null and "" are none (the clients send null with every create).
func volumeTypeRef(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
