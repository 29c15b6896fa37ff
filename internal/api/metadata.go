package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// The metadata sub-resources of volumes and snapshots, in the block
// storage API's shapes and status codes (every answer 200):
//
//	GET    .../{id}/metadata        {"metadata": {...}}: all of it
//	POST   .../{id}/metadata        {"metadata": {...}} added (keys overwritten); answers all
//	PUT    .../{id}/metadata        {"metadata": {...}} replaces all; answers all
//	GET    .../{id}/metadata/{key}  {"meta": {key: value}}; 404 without the key
//	PUT    .../{id}/metadata/{key}  {"meta": {key: value}}, the URL's key only; answers it
//	DELETE .../{id}/metadata/{key}  no body; 404 without the key
//
// The service makes each change in one transaction of the catalog.

// metadataOwner is what a metadata sub-resource belongs to: volumes or
// snapshots, and the service's calls that read and change theirs.
type metadataOwner struct {
	noun string // volume, snapshot
	get  func(ctx context.Context, c service.Caller, id string) (map[string]string, error)
	edit func(ctx context.Context, c service.Caller, id string, e service.MetadataEdit) (map[string]string, error)
}

func (s *Server) volumeMetadata() metadataOwner {
	return metadataOwner{noun: "volume",
		get: func(ctx context.Context, c service.Caller, id string) (map[string]string, error) {
			v, err := s.svc.Volume(ctx, c, id)
			return v.Metadata, err
		},
		edit: s.svc.UpdateVolumeMetadata}
}

func (s *Server) snapshotMetadata() metadataOwner {
	return metadataOwner{noun: "snapshot",
		get: func(ctx context.Context, c service.Caller, id string) (map[string]string, error) {
			v, err := s.svc.Snapshot(ctx, c, id)
			return v.Metadata, err
		},
		edit: s.svc.UpdateSnapshotMetadata}
}

// showMetadata answers all of a resource's metadata.
func showMetadata(o metadataOwner) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		md, err := o.get(r.Context(), c, r.PathValue("id"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.AllMetadata{Metadata: metadataJSON(md)})
		return nil
	}
}

// setMetadata adds the body's items to a resource's metadata (POST), or
// replaces all of it with them (PUT, replace), and answers all it has
// then.
func setMetadata(o metadataOwner, replace bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		var req wire.AllMetadata
		if err := decode(r, &req); err != nil {
			return err
		}
		if req.Metadata == nil {
			return fmt.Errorf("metadata is required: give an object of strings ({} for none): %w", cairn.ErrInvalid)
		}
		md, err := o.edit(r.Context(), c, r.PathValue("id"), service.MetadataEdit{Set: req.Metadata, Replace: replace})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.AllMetadata{Metadata: metadataJSON(md)})
		return nil
	}
}

// showMetadataItem answers one item of a resource's metadata.
func showMetadataItem(o metadataOwner) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		id, key := r.PathValue("id"), r.PathValue("key")
		md, err := o.get(r.Context(), c, id)
		if err != nil {
			return err
		}
		v, ok := md[key]
		if !ok {
			return fmt.Errorf("%s %s: metadata key %q: %w", o.noun, id, key, cairn.ErrNotFound)
		}
		writeJSON(w, http.StatusOK, wire.MetadataItem{Meta: map[string]string{key: v}})
		return nil
	}
}

// setMetadataItem sets one item of a resource's metadata, the URL's key,
// which must be the body's one key, and answers the item.
func setMetadataItem(o metadataOwner) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		key := r.PathValue("key")
		var req wire.MetadataItem
		if err := decode(r, &req); err != nil {
			return err
		}
		if _, ok := req.Meta[key]; !ok || len(req.Meta) != 1 {
			return fmt.Errorf("meta: give exactly one item, of the URL's key %q: %w", key, cairn.ErrInvalid)
		}
		if _, err := o.edit(r.Context(), c, r.PathValue("id"), service.MetadataEdit{Set: req.Meta}); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.MetadataItem{Meta: req.Meta})
		return nil
	}
}

// deleteMetadataItem removes one item of a resource's metadata. The
// answer is 200 without a body, as the block storage API's.
func deleteMetadataItem(o metadataOwner) handler {
	return func(w http.ResponseWriter, r *http.Request, c service.Caller) error {
		if _, err := o.edit(r.Context(), c, r.PathValue("id"), service.MetadataEdit{Delete: r.PathValue("key")}); err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
}
