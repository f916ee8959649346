package router

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/filter"
)

// CreateFilter stores a new filter; the server assigns its id and the
// minute it counts from.
func (r *Router) CreateFilter(ctx context.Context, req *adclickv1.CreateFilterRequest) (*adclickv1.Filter, error) {
	if req.GetFilter() == nil {
		return nil, status.Error(codes.InvalidArgument, `filter is required, e.g. {"countries": ["US"]}`)
	}
	sctx, cancel := context.WithTimeout(ctx, r.cfg.FilterTimeout)
	defer cancel()
	f, err := r.createFilter(sctx, filter.FromProto(req.GetFilter()))
	if err != nil {
		return nil, r.storeError(ctx, sctx, err, 0)
	}
	r.log.Info("filter created", "id", f.ID, "effective_from", formatMinute(f.EffectiveFrom))
	return f.ToProto(), nil
}

// boundedStore is a FilterStore that enforces the number of filters in the
// same transaction as the creation (filter.Store does).
type boundedStore interface {
	CreateAtMost(ctx context.Context, f filter.Filter, max int) (filter.Filter, error)
}

// createFilter creates f unless --max-filters filters exist already.
func (r *Router) createFilter(ctx context.Context, f filter.Filter) (filter.Filter, error) {
	if s, ok := r.store.(boundedStore); ok {
		return s.CreateAtMost(ctx, f, r.cfg.MaxFilters)
	}
	// Another store: count first (not atomic with the creation).
	fs, err := r.store.List(ctx)
	if err != nil {
		return f, err
	}
	if len(fs) >= r.cfg.MaxFilters {
		return f, fmt.Errorf("%w: %d filters exist, at most %d allowed (--max-filters): delete one first (DELETE /v1/filters/{id})", filter.ErrTooMany, len(fs), r.cfg.MaxFilters)
	}
	return r.store.Create(ctx, f)
}

// ListFilters lists the stored filters.
func (r *Router) ListFilters(ctx context.Context, _ *adclickv1.ListFiltersRequest) (*adclickv1.ListFiltersResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.FilterTimeout)
	defer cancel()
	fs, err := r.store.List(sctx)
	if err != nil {
		return nil, r.storeError(ctx, sctx, err, 0)
	}
	resp := &adclickv1.ListFiltersResponse{Filters: make([]*adclickv1.Filter, 0, len(fs))}
	for _, f := range fs {
		resp.Filters = append(resp.Filters, f.ToProto())
	}
	return resp, nil
}

// DeleteFilter deletes a filter; its counts stay stored but are no longer
// queryable by its id.
func (r *Router) DeleteFilter(ctx context.Context, req *adclickv1.DeleteFilterRequest) (*adclickv1.DeleteFilterResponse, error) {
	if req.GetId() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "filter id is %d; want the id of a filter (> 0; filter 0, all clicks, cannot be deleted)", req.GetId())
	}
	sctx, cancel := context.WithTimeout(ctx, r.cfg.FilterTimeout)
	defer cancel()
	if err := r.store.Delete(sctx, req.GetId()); err != nil {
		return nil, r.storeError(ctx, sctx, err, req.GetId())
	}
	r.log.Info("filter deleted", "id", req.GetId())
	return &adclickv1.DeleteFilterResponse{}, nil
}

// storeError maps a filter store error to a status a person can act on.
// ctx is the caller's, sctx the call's, bounded by --filter-timeout: when
// only sctx ended, etcd did not answer in time (down, or no quorum), which
// is UNAVAILABLE rather than a hang until the client's deadline.
func (r *Router) storeError(ctx, sctx context.Context, err error, id int64) error {
	switch {
	case errors.Is(err, filter.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, filter.ErrTooMany):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, filter.ErrNotFound):
		return status.Errorf(codes.NotFound, "filter %d does not exist (list them with GET /v1/filters)", id)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case sctx.Err() != nil:
		return status.Errorf(codes.Unavailable, "filter store (etcd) did not answer within %s (--filter-timeout): etcd is down or unreachable; retry later", r.cfg.FilterTimeout)
	}
	return status.Errorf(codes.Unavailable, "filter store unavailable: %v; retry later", err)
}
