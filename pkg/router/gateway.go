package router

import (
	"context"
	"fmt"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// Gateway returns the REST API (DESIGN.md section 1) served in-process by r.
// JSON emits unpopulated fields, so "count": 0 and "complete": false show;
// unknown request fields are ignored. IngestStream has no REST form.
func (r *Router) Gateway(ctx context.Context) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
		Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	if err := adclickv1.RegisterIngestServiceHandlerServer(ctx, mux, r); err != nil {
		return nil, fmt.Errorf("register ingest gateway: %w", err)
	}
	if err := adclickv1.RegisterQueryServiceHandlerServer(ctx, mux, r); err != nil {
		return nil, fmt.Errorf("register query gateway: %w", err)
	}
	if err := adclickv1.RegisterFilterServiceHandlerServer(ctx, mux, r); err != nil {
		return nil, fmt.Errorf("register filter gateway: %w", err)
	}
	return mux, nil
}
