package api

import (
	"fmt"
	"net/http"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// An instance's metadata, in the shapes of Trove's metadata calls (what
// python-troveclient's Metadata manager and the trove CLI's metadata-*
// commands send and read):
//
//	GET    .../instances/{id}/metadata        200 {"metadata": {...}}: all of it
//	GET    .../instances/{id}/metadata/{key}  200 {"metadata": {key: value}}; 404 without it
//	POST   .../instances/{id}/metadata/{key}  {"metadata": {"value": V}}: a new item;
//	                                          409 when the key is there; 200 with the item
//	PUT    .../instances/{id}/metadata/{key}  {"metadata": {"key": NEW, "value": V}}: the
//	                                          item renamed and set; 404 without it; 200
//	PATCH  .../instances/{id}/metadata/{key}  {"metadata": {"value": V}}: the item's value;
//	                                          404 without it; 200 with the item
//	DELETE .../instances/{id}/metadata/{key}  202; 404 without it
//
// Values are text: a JSON string as it is, any other JSON value (the CLI
// parses its argument as JSON when it can, so `1` arrives as a number)
// as its compact JSON text. Each change is one catalog transaction
// (service.MetadataEdit), held to the bounds of volume metadata. A
// backup policy's tag (--instance-tag key=value) selects instances by it.

func (s *Server) listInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	v, err := s.db.Instance(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.InstanceMetadata{Metadata: metadataJSON(v.Metadata)})
	return nil
}

func (s *Server) showInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	id, key := r.PathValue("id"), r.PathValue("key")
	v, err := s.db.Instance(r.Context(), c, id)
	if err != nil {
		return err
	}
	value, ok := v.Metadata[key]
	if !ok {
		return fmt.Errorf("instance %s: metadata key %q: %w", id, key, cairn.ErrNotFound)
	}
	writeJSON(w, http.StatusOK, wire.InstanceMetadata{Metadata: map[string]string{key: value}})
	return nil
}

// metadataItem decodes an item request's body: its value as text, and
// its new key ("" when it names none).
func metadataItem(r *http.Request) (newKey, value string, err error) {
	var req wire.InstanceMetadataItemRequest
	if err := decode(r, &req); err != nil {
		return "", "", err
	}
	if value, err = req.Metadata.Text(); err != nil {
		return "", "", fmt.Errorf("%w: %w", err, cairn.ErrInvalid)
	}
	if req.Metadata.Key != nil {
		if *req.Metadata.Key == "" {
			return "", "", fmt.Errorf("metadata.key is empty: %w", cairn.ErrInvalid)
		}
		newKey = *req.Metadata.Key
	}
	return newKey, value, nil
}

func (s *Server) createInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	return s.editInstanceItem(w, r, c, false, func(key, value string) service.MetadataEdit {
		return service.MetadataEdit{Set: map[string]string{key: value}, New: true}
	})
}

func (s *Server) editInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	return s.editInstanceItem(w, r, c, false, func(key, value string) service.MetadataEdit {
		return service.MetadataEdit{Set: map[string]string{key: value}, Existing: true}
	})
}

// updateInstanceMetadata renames the item to the body's key (the URL's
// when the body names none) and sets its value.
func (s *Server) updateInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	return s.editInstanceItem(w, r, c, true, func(key, value string) service.MetadataEdit {
		return service.MetadataEdit{Delete: r.PathValue("key"), Set: map[string]string{key: value}}
	})
}

// editInstanceItem makes the edit of the URL's item (renamed to the
// body's key when rename allows one) and answers the item as it is then.
func (s *Server) editInstanceItem(w http.ResponseWriter, r *http.Request, c service.Caller, rename bool,
	edit func(key, value string) service.MetadataEdit) error {
	key := r.PathValue("key")
	newKey, value, err := metadataItem(r)
	if err != nil {
		return err
	}
	switch {
	case newKey == "":
		newKey = key
	case !rename && newKey != key:
		return fmt.Errorf("metadata.key %q: only an update (PUT) renames an item: %w", newKey, cairn.ErrInvalid)
	}
	if _, err := s.db.UpdateInstanceMetadata(r.Context(), c, r.PathValue("id"), edit(newKey, value)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.InstanceMetadata{Metadata: map[string]string{newKey: value}})
	return nil
}

func (s *Server) deleteInstanceMetadata(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	if _, err := s.db.UpdateInstanceMetadata(r.Context(), c, r.PathValue("id"), service.MetadataEdit{Delete: r.PathValue("key")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
