package service

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// Volume types, as the block storage API has them: an admin defines
// named sets of extra specs; every project may use the public ones, and
// a private one only the projects given access to it (and admins). cairn
// has one backend, so a type decides nothing about a volume's storage:
// the service stores types, shows them, and records on each volume the
// type it was created with.
//
// Who sees what follows the block storage API's default policy: admins
// see every type and all of its extra specs; other callers see the types
// they may use, with only the extra specs meant for users
// (UserVisibleExtraSpecs), and change nothing.

// Bounds of a volume type. Names are 1 to 255 characters, descriptions
// at most 255, as the block storage API's; extra spec keys are 1 to 255
// of its characters (letters, digits, "-_:. /"), values 1 to 255
// characters. That API does not bound how many extra specs a type has;
// cairn takes MaxExtraSpecs, as many as a volume's metadata items.
const (
	MaxVolumeTypeNameLen        = 255
	MaxVolumeTypeDescriptionLen = 255
	MaxExtraSpecs               = MaxMetadataItems
	MaxExtraSpecKeyLen          = 255
	MaxExtraSpecValueLen        = 255
)

// UserVisibleExtraSpecs are the extra specs callers other than admins
// see, as the block storage API shows them: what tells a user how a
// volume of the type behaves, not how the deployment is configured.
var UserVisibleExtraSpecs = []string{"RESKEY:availability_zones", "multiattach", "sharetype", "replication_enabled"}

// VolumeTypeCreate is a new volume type.
type VolumeTypeCreate struct {
	Name, Description string
	IsPublic          bool
	ExtraSpecs        map[string]string
}

// VolumeTypeUpdate changes a volume type: each field that is not nil.
type VolumeTypeUpdate struct {
	Name, Description *string
	IsPublic          *bool
}

func adminOnly(c Caller, what string) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "%s is for admins", what)
	}
	return nil
}

func validTypeName(name string) error {
	switch n := utf8.RuneCountInString(name); {
	case !utf8.ValidString(name):
		return errorf(cairn.ErrInvalid, "volume type name: not UTF-8")
	case strings.TrimFunc(name, unicode.IsSpace) == "":
		return errorf(cairn.ErrInvalid, "volume type name: empty; want 1 to %d characters, not all spaces", MaxVolumeTypeNameLen)
	case n > MaxVolumeTypeNameLen:
		return errorf(cairn.ErrInvalid, "volume type name: %d characters; want at most %d", n, MaxVolumeTypeNameLen)
	}
	return nil
}

func validTypeDescription(d string) error {
	switch n := utf8.RuneCountInString(d); {
	case !utf8.ValidString(d):
		return errorf(cairn.ErrInvalid, "volume type description: not UTF-8")
	case n > MaxVolumeTypeDescriptionLen:
		return errorf(cairn.ErrInvalid, "volume type description: %d characters; want at most %d", n, MaxVolumeTypeDescriptionLen)
	}
	return nil
}

// validExtraSpecKey checks a key as the block storage API's schema does.
func validExtraSpecKey(k string) error {
	if k == "" {
		return errorf(cairn.ErrInvalid, "extra spec key: empty; want 1 to %d characters", MaxExtraSpecKeyLen)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_:. /", r)) {
			return errorf(cairn.ErrInvalid, "extra spec key %q: %q is not allowed; want letters, digits and -_:. /", shorten(k), r)
		}
	}
	if n := len(k); n > MaxExtraSpecKeyLen { // ASCII only: bytes are characters
		return errorf(cairn.ErrInvalid, "extra spec key %q: %d characters; want at most %d", shorten(k), n, MaxExtraSpecKeyLen)
	}
	return nil
}

// validExtraSpecs checks extra specs to set, in key order, so an error
// names the first bad one.
func validExtraSpecs(specs map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(specs)) {
		if err := validExtraSpecKey(k); err != nil {
			return err
		}
		v := specs[k]
		switch n := utf8.RuneCountInString(v); {
		case !utf8.ValidString(v):
			return errorf(cairn.ErrInvalid, "extra spec %q: value not UTF-8", k)
		case n == 0 || n > MaxExtraSpecValueLen:
			return errorf(cairn.ErrInvalid, "extra spec %q: value of %d characters; want 1 to %d", k, n, MaxExtraSpecValueLen)
		}
	}
	return nil
}

// mergeExtraSpecs returns old with add over it, as the catalog stores it
// (nil for none), held to MaxExtraSpecs.
func mergeExtraSpecs(old, add map[string]string) (map[string]string, error) {
	m := maps.Clone(old)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, add)
	if len(m) > MaxExtraSpecs {
		return nil, errorf(cairn.ErrInvalid, "extra specs: %d; want at most %d", len(m), MaxExtraSpecs)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// mayUse reports whether c may see and use vt.
func mayUse(ctx context.Context, tx catalog.Tx, c Caller, vt cairn.VolumeType) (bool, error) {
	if c.Admin || vt.IsPublic {
		return true, nil
	}
	projects, err := tx.VolumeTypeProjects(ctx, vt.ID)
	return slices.Contains(projects, c.ProjectID), err
}

// getVolumeType reads a type c may see; a private type c has no access
// to is not found, exactly like a missing one.
func getVolumeType(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.VolumeType, error) {
	vt, err := tx.VolumeType(ctx, id)
	if err != nil {
		return vt, err
	}
	if ok, err := mayUse(ctx, tx, c, vt); err != nil || !ok {
		if err == nil {
			err = errorf(cairn.ErrNotFound, "volume type %s", id)
		}
		return cairn.VolumeType{}, err
	}
	return vt, nil
}

// shownTo is vt as c may see it: with only the extra specs meant for
// users unless c is an admin.
func shownTo(c Caller, vt cairn.VolumeType) cairn.VolumeType {
	if c.Admin || vt.ExtraSpecs == nil {
		return vt
	}
	specs := map[string]string{}
	for _, k := range UserVisibleExtraSpecs {
		if v, ok := vt.ExtraSpecs[k]; ok {
			specs[k] = v
		}
	}
	vt.ExtraSpecs = nil
	if len(specs) > 0 {
		vt.ExtraSpecs = specs
	}
	return vt
}

// VolumeTypes lists the types c may use, by name (an admin: every type),
// only public (public true) or private (false) ones when public is not
// nil.
func (s *Service) VolumeTypes(ctx context.Context, c Caller, public *bool) ([]cairn.VolumeType, error) {
	project := c.ProjectID
	if c.Admin {
		project = ""
	}
	var list []cairn.VolumeType
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.VolumeTypes(ctx, project)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := list[:0]
	for _, vt := range list {
		if public == nil || vt.IsPublic == *public {
			out = append(out, shownTo(c, vt))
		}
	}
	return out, nil
}

// VolumeType returns a type c may use.
func (s *Service) VolumeType(ctx context.Context, c Caller, id string) (cairn.VolumeType, error) {
	var vt cairn.VolumeType
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		vt, err = getVolumeType(ctx, tx, c, id)
		return err
	})
	return shownTo(c, vt), err
}

// CreateVolumeType makes a type (admins only). A name another type has is
// cairn.ErrExists.
func (s *Service) CreateVolumeType(ctx context.Context, c Caller, req VolumeTypeCreate) (cairn.VolumeType, error) {
	if err := adminOnly(c, "creating volume types"); err != nil {
		return cairn.VolumeType{}, err
	}
	if err := validTypeName(req.Name); err != nil {
		return cairn.VolumeType{}, err
	}
	if err := validTypeDescription(req.Description); err != nil {
		return cairn.VolumeType{}, err
	}
	if err := validExtraSpecs(req.ExtraSpecs); err != nil {
		return cairn.VolumeType{}, err
	}
	specs, err := mergeExtraSpecs(nil, req.ExtraSpecs)
	if err != nil {
		return cairn.VolumeType{}, err
	}
	now := s.nowUTC()
	vt := cairn.VolumeType{ID: cairn.NewUUID(), Name: req.Name, Description: req.Description,
		IsPublic: req.IsPublic, ExtraSpecs: specs, CreatedAt: now, UpdatedAt: now}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error {
		if _, err := tx.VolumeTypeByName(ctx, req.Name); err == nil {
			return errorf(cairn.ErrExists, "volume type %q exists already", req.Name)
		} else if !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
		return tx.InsertVolumeType(ctx, vt)
	})
	s.typeNames.forget()
	if err != nil {
		return cairn.VolumeType{}, err
	}
	s.event(ctx, "volume_type.create", c.ProjectID, volumeTypePayload(vt))
	return vt, nil
}

// UpdateVolumeType changes a type's name, description or visibility
// (admins only). The default type keeps its name and stays public: it
// is what every volume created without a type gets.
func (s *Service) UpdateVolumeType(ctx context.Context, c Caller, id string, req VolumeTypeUpdate) (cairn.VolumeType, error) {
	if err := adminOnly(c, "updating volume types"); err != nil {
		return cairn.VolumeType{}, err
	}
	if req.Name == nil && req.Description == nil && req.IsPublic == nil {
		return cairn.VolumeType{}, errorf(cairn.ErrInvalid, "nothing to update: give name, description or is_public")
	}
	if req.Name != nil {
		if err := validTypeName(*req.Name); err != nil {
			return cairn.VolumeType{}, err
		}
	}
	if req.Description != nil {
		if err := validTypeDescription(*req.Description); err != nil {
			return cairn.VolumeType{}, err
		}
	}
	var vt cairn.VolumeType
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if vt, err = tx.VolumeType(ctx, id); err != nil {
			return err
		}
		if vt.ID == cairn.DefaultVolumeTypeID {
			if req.Name != nil && *req.Name != vt.Name {
				return errorf(cairn.ErrInvalid, "volume type %s is the default type; it keeps its name %s", vt.ID, vt.Name)
			}
			if req.IsPublic != nil && !*req.IsPublic {
				return errorf(cairn.ErrInvalid, "volume type %s is the default type; it stays public", vt.ID)
			}
		}
		if req.Name != nil {
			vt.Name = *req.Name
		}
		if req.Description != nil {
			vt.Description = *req.Description
		}
		if req.IsPublic != nil {
			vt.IsPublic = *req.IsPublic
		}
		vt.UpdatedAt = s.nowUTC()
		return tx.UpdateVolumeType(ctx, vt)
	})
	s.typeNames.forget()
	if err != nil {
		return cairn.VolumeType{}, err
	}
	s.event(ctx, "volume_type.update", c.ProjectID, volumeTypePayload(vt))
	return vt, nil
}

// DeleteVolumeType removes a type (admins only); not the default type,
// nor one a volume is of (cairn.ErrInvalid, as the block storage API
// answers 400 for both).
func (s *Service) DeleteVolumeType(ctx context.Context, c Caller, id string) error {
	if err := adminOnly(c, "deleting volume types"); err != nil {
		return err
	}
	var vt cairn.VolumeType
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if vt, err = tx.VolumeType(ctx, id); err != nil {
			return err
		}
		if vt.ID == cairn.DefaultVolumeTypeID {
			return errorf(cairn.ErrInvalid, "volume type %s is the default type; it cannot be deleted", vt.ID)
		}
		err = tx.DeleteVolumeType(ctx, id)
		if errors.Is(err, cairn.ErrConflict) {
			return errorf(cairn.ErrInvalid, "volume type %s (%s) is in use by volumes; delete them first", vt.ID, vt.Name)
		}
		return err
	})
	s.typeNames.forget()
	if err != nil {
		return err
	}
	s.event(ctx, "volume_type.delete", c.ProjectID, volumeTypePayload(vt))
	return nil
}

// SetVolumeTypeExtraSpecs adds specs to a type's extra specs, overwriting
// the values of keys it has (admins only).
func (s *Service) SetVolumeTypeExtraSpecs(ctx context.Context, c Caller, id string, specs map[string]string) error {
	if err := adminOnly(c, "changing extra specs"); err != nil {
		return err
	}
	if err := validExtraSpecs(specs); err != nil {
		return err
	}
	return s.editExtraSpecs(ctx, id, func(vt *cairn.VolumeType) error {
		var err error
		vt.ExtraSpecs, err = mergeExtraSpecs(vt.ExtraSpecs, specs)
		return err
	})
}

// DeleteVolumeTypeExtraSpec removes one of a type's extra specs, which
// must exist (admins only).
func (s *Service) DeleteVolumeTypeExtraSpec(ctx context.Context, c Caller, id, key string) error {
	if err := adminOnly(c, "changing extra specs"); err != nil {
		return err
	}
	return s.editExtraSpecs(ctx, id, func(vt *cairn.VolumeType) error {
		if _, ok := vt.ExtraSpecs[key]; !ok {
			return errorf(cairn.ErrNotFound, "volume type %s: extra spec %q", vt.ID, shorten(key))
		}
		delete(vt.ExtraSpecs, key)
		var err error
		vt.ExtraSpecs, err = mergeExtraSpecs(vt.ExtraSpecs, nil)
		return err
	})
}

// editExtraSpecs reads type id, changes it by fn and writes it, in one
// transaction.
func (s *Service) editExtraSpecs(ctx context.Context, id string, fn func(*cairn.VolumeType) error) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		vt, err := tx.VolumeType(ctx, id)
		if err != nil {
			return err
		}
		vt.ExtraSpecs = maps.Clone(vt.ExtraSpecs)
		if err := fn(&vt); err != nil {
			return err
		}
		vt.UpdatedAt = s.nowUTC()
		return tx.UpdateVolumeType(ctx, vt)
	})
}

// VolumeTypeAccess lists the projects with access to a type (admins
// only): none for a public type.
func (s *Service) VolumeTypeAccess(ctx context.Context, c Caller, id string) ([]string, error) {
	if err := adminOnly(c, "listing volume type access"); err != nil {
		return nil, err
	}
	var list []string
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		if _, err := tx.VolumeType(ctx, id); err != nil {
			return err
		}
		var err error
		list, err = tx.VolumeTypeProjects(ctx, id)
		return err
	})
	return list, err
}

// AddVolumeTypeAccess lets project use a private type (admins only). A
// project that has access is cairn.ErrExists; a public type
// cairn.ErrInvalid (everyone has access). The project is not looked up:
// a Keystone project may be given access before its first call.
func (s *Service) AddVolumeTypeAccess(ctx context.Context, c Caller, id, project string) error {
	return s.editAccess(ctx, c, id, project, func(tx catalog.Tx) error {
		return tx.AddVolumeTypeProject(ctx, id, project)
	})
}

// RemoveVolumeTypeAccess takes a project's access to a private type away
// (admins only); one without it is cairn.ErrNotFound. Its volumes of the
// type keep it.
func (s *Service) RemoveVolumeTypeAccess(ctx context.Context, c Caller, id, project string) error {
	return s.editAccess(ctx, c, id, project, func(tx catalog.Tx) error {
		return tx.RemoveVolumeTypeProject(ctx, id, project)
	})
}

func (s *Service) editAccess(ctx context.Context, c Caller, id, project string, fn func(tx catalog.Tx) error) error {
	if err := adminOnly(c, "changing volume type access"); err != nil {
		return err
	}
	if project == "" || len(project) > 255 || !utf8.ValidString(project) {
		return errorf(cairn.ErrInvalid, "project %q: want a project ID of 1 to 255 characters", shorten(project))
	}
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		vt, err := tx.VolumeType(ctx, id)
		if err != nil {
			return err
		}
		if vt.IsPublic {
			return errorf(cairn.ErrInvalid, "volume type %s is public: every project has access; access is granted to private types", vt.ID)
		}
		return fn(tx)
	})
}

// setVolumeType sets the type of new volume v from ref, a type's ID or
// name that c may use. Without one, a clone takes its source volume's
// type (a volume from a snapshot, the type of the snapshot's volume if it
// still exists) and other volumes the default type. A type c may not use
// is not found, as a missing one is.
func setVolumeType(ctx context.Context, tx catalog.Tx, c Caller, ref string, v *cairn.Volume) error {
	if ref == "" {
		v.VolumeTypeID = cairn.DefaultVolumeTypeID
		src := v.SourceVolID
		if src == "" && v.SnapshotID != "" {
			snap, err := tx.Snapshot(ctx, v.SnapshotID)
			if err != nil {
				return err
			}
			src = snap.VolumeID
		}
		if src != "" {
			sv, err := tx.Volume(ctx, src)
			if err == nil && sv.VolumeTypeID != "" {
				v.VolumeTypeID = sv.VolumeTypeID
			} else if err != nil && !errors.Is(err, cairn.ErrNotFound) {
				return err
			}
		}
		return nil
	}
	vt, err := tx.VolumeType(ctx, ref)
	if errors.Is(err, cairn.ErrNotFound) {
		vt, err = tx.VolumeTypeByName(ctx, ref)
	}
	if err == nil {
		var ok bool
		if ok, err = mayUse(ctx, tx, c, vt); err == nil && !ok {
			err = cairn.ErrNotFound
		}
	}
	if errors.Is(err, cairn.ErrNotFound) {
		return errorf(cairn.ErrNotFound, "volume_type %q: no such volume type", shorten(ref))
	}
	if err != nil {
		return err
	}
	v.VolumeTypeID = vt.ID
	return nil
}

func volumeTypePayload(vt cairn.VolumeType) map[string]any {
	return map[string]any{"volume_type_id": vt.ID, "name": vt.Name, "is_public": vt.IsPublic}
}

// typeNamesTTL is how long the names of volume types read from the
// catalog are used before they are read again. Changes this process
// makes are seen at once; a rename by another process sharing the
// catalog shows in volume answers within this time.
const typeNamesTTL = 5 * time.Second

// typeNameCache holds the names of every volume type, by ID, for the
// volume answers, which show their type's name: one catalog read per
// typeNamesTTL, not one per volume of a list.
type typeNameCache struct {
	mu    sync.Mutex
	names map[string]string
	read  time.Time
}

func (c *typeNameCache) forget() {
	c.mu.Lock()
	c.names = nil
	c.mu.Unlock()
}

// VolumeTypeName is the name of the type with ID id ("" is the default
// type), as volume answers show it. A type missing from the catalog
// (never, since a type in use is not deleted) is shown by its ID.
func (s *Service) VolumeTypeName(ctx context.Context, id string) string {
	if id == "" {
		id = cairn.DefaultVolumeTypeID
	}
	c := &s.typeNames
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.now()
	name, ok := c.names[id]
	if ok && now.Sub(c.read) < typeNamesTTL && !now.Before(c.read) {
		return name
	}
	var list []cairn.VolumeType
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.VolumeTypes(ctx, "")
		return err
	})
	if err != nil {
		s.log.Warn("reading volume types' names", "error", err)
		if ok {
			return name
		}
		return id
	}
	c.names, c.read = make(map[string]string, len(list)), now
	for _, vt := range list {
		c.names[vt.ID] = vt.Name
	}
	if name, ok := c.names[id]; ok {
		return name
	}
	return id
}

// RetypeVolume gives an available or in-use volume another type
// (os-retype), one c may use, named by ID or name. cairn has one
// backend, so no data moves: only the type the volume records changes.
// Its own type again is refused, as the block storage API does.
func (s *Service) RetypeVolume(ctx context.Context, c Caller, id, ref string) error {
	if ref == "" {
		return errorf(cairn.ErrInvalid, "os-retype: give new_type")
	}
	return s.update(ctx, func(tx catalog.Tx) error {
		v, err := getVolume(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if v.Status != cairn.StatusAvailable && v.Status != cairn.StatusInUse {
			return errorf(cairn.ErrInvalid, "volume %s is %s: only an available or in-use volume can be retyped", v.ID, v.Status)
		}
		if err := notHeld(ctx, tx, "volume", v.ID, "retype it"); err != nil {
			return err
		}
		old := v.VolumeTypeID
		if old == "" {
			old = cairn.DefaultVolumeTypeID
		}
		if err := setVolumeType(ctx, tx, c, ref, &v); err != nil {
			return err
		}
		if v.VolumeTypeID == old {
			return errorf(cairn.ErrInvalid, "volume %s is of type %s already: retype needs another", v.ID, shorten(ref))
		}
		v.UpdatedAt = s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
}
