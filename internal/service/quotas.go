package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// The block storage API's quota sets and quota classes over cairn's
// project quotas. One quota class exists, "default": the quota a project
// starts with when it is made on its first Keystone token, and the one a
// project's quota set returns to when it is deleted. A project the
// catalog does not know yet (a Keystone project before its first
// request) shows the default class.

// DefaultQuotaClass is the one quota class.
const DefaultQuotaClass = "default"

// QuotaSet is a project's limits, with its usage when asked for.
type QuotaSet struct {
	ProjectID string
	Quota     cairn.Quota
	Usage     cairn.Usage
}

// defaultQuota is the default quota class's limits.
func (s *Service) defaultQuota(ctx context.Context) (cairn.Quota, error) {
	var q cairn.Quota
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		q, err = tx.QuotaClass(ctx, DefaultQuotaClass)
		return err
	})
	return q, err
}

// QuotaSet returns project's limits and usage: the caller's own project,
// or any for an admin.
func (s *Service) QuotaSet(ctx context.Context, c Caller, project string) (QuotaSet, error) {
	if !c.may(project) {
		return QuotaSet{}, errorf(cairn.ErrForbidden, "project %s: only an admin may see another project's quotas", project)
	}
	out := QuotaSet{ProjectID: project}
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		p, err := tx.Project(ctx, project)
		if errors.Is(err, cairn.ErrNotFound) {
			out.Quota, err = tx.QuotaClass(ctx, DefaultQuotaClass)
			return err
		}
		if err != nil {
			return err
		}
		out.Quota = p.Quota
		out.Usage, err = tx.Usage(ctx, project)
		return err
	})
	return out, err
}

// DefaultQuotaSet is the quota a project made now would start with.
func (s *Service) DefaultQuotaSet(ctx context.Context, c Caller, project string) (QuotaSet, error) {
	if !c.may(project) {
		return QuotaSet{}, errorf(cairn.ErrForbidden, "project %s: only an admin may see another project's quotas", project)
	}
	q, err := s.defaultQuota(ctx)
	return QuotaSet{ProjectID: project, Quota: q}, err
}

// UpdateQuotaSet changes some of project's limits (admin). A project the
// catalog does not know is made, named by its ID, with the default
// class's limits and the changes. A limit below what the project holds
// is refused, as the block storage API does.
func (s *Service) UpdateQuotaSet(ctx context.Context, c Caller, project string, ch QuotaChange) (QuotaSet, error) {
	if !c.Admin {
		return QuotaSet{}, errorf(cairn.ErrForbidden, "only an admin may change quotas")
	}
	out := QuotaSet{ProjectID: project}
	err := s.update(ctx, func(tx catalog.Tx) error {
		p, err := tx.Project(ctx, project)
		create := errors.Is(err, cairn.ErrNotFound)
		if create {
			if !containerName.MatchString(project) {
				return errorf(cairn.ErrInvalid, "project id %q: want letters, digits, '.', '_' or '-'", project)
			}
			p = cairn.Project{ID: project, Name: project, CreatedAt: s.nowUTC()}
			if p.Quota, err = tx.QuotaClass(ctx, DefaultQuotaClass); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		ch.apply(&p.Quota)
		if err := ValidQuota(p.Quota); err != nil {
			return err
		}
		u, err := tx.Usage(ctx, project)
		if err != nil {
			return err
		}
		if msg := belowUsage(p.Quota, u); msg != "" {
			return errorf(cairn.ErrInvalid, "project %s: %s", project, msg)
		}
		if create {
			err = tx.InsertProject(ctx, p)
		} else {
			err = tx.UpdateProject(ctx, p)
		}
		out.Quota, out.Usage = p.Quota, u
		return err
	})
	return out, err
}

// belowUsage names a limit below what u holds, or "".
func belowUsage(q cairn.Quota, u cairn.Usage) string {
	for _, l := range []struct {
		name        string
		limit, used int64
	}{{"volumes", q.Volumes, u.Volumes}, {"gigabytes", q.Gigabytes, u.Gigabytes}, {"snapshots", q.Snapshots, u.Snapshots},
		{"backups", q.Backups, u.Backups}, {"backup_gigabytes", q.BackupGigabytes, u.BackupGigabytes}} {
		if l.limit >= 0 && l.limit < l.used {
			return fmt.Sprintf("quota %s %d is below the %d in use", l.name, l.limit, l.used)
		}
	}
	return ""
}

// DeleteQuotaSet gives project the default class's limits again
// (admin); a project the catalog does not know has them already.
func (s *Service) DeleteQuotaSet(ctx context.Context, c Caller, project string) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "only an admin may change quotas")
	}
	return s.update(ctx, func(tx catalog.Tx) error {
		p, err := tx.Project(ctx, project)
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.Quota, err = tx.QuotaClass(ctx, DefaultQuotaClass); err != nil {
			return err
		}
		return tx.UpdateProject(ctx, p)
	})
}

// QuotaClass returns a quota class's limits (admin).
func (s *Service) QuotaClass(ctx context.Context, c Caller, name string) (cairn.Quota, error) {
	if !c.Admin {
		return cairn.Quota{}, errorf(cairn.ErrForbidden, "only an admin may see quota classes")
	}
	var q cairn.Quota
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		q, err = tx.QuotaClass(ctx, name)
		return err
	})
	return q, err
}

// UpdateQuotaClass changes some of a quota class's limits (admin).
// Projects that exist keep theirs; projects made later start with them.
func (s *Service) UpdateQuotaClass(ctx context.Context, c Caller, name string, ch QuotaChange) (cairn.Quota, error) {
	if !c.Admin {
		return cairn.Quota{}, errorf(cairn.ErrForbidden, "only an admin may change quota classes")
	}
	var q cairn.Quota
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if q, err = tx.QuotaClass(ctx, name); err != nil {
			return err
		}
		ch.apply(&q)
		if err := ValidQuota(q); err != nil {
			return err
		}
		return tx.SetQuotaClass(ctx, name, q)
	})
	return q, err
}

// checkVolumeSize fails with ErrQuota when project's per-volume limit is
// below size GiB.
func checkVolumeSize(ctx context.Context, tx catalog.Tx, project string, size int64) error {
	p, err := tx.Project(ctx, project)
	if err != nil {
		return err
	}
	if msg := p.Quota.VolumeTooLarge(size); msg != "" {
		return fmt.Errorf("project %s: %s: %w", project, msg, cairn.ErrQuota)
	}
	return nil
}
