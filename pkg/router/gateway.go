package router

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/event"
)

// Gateway returns the REST API (DESIGN.md section 1) served in-process by r.
// JSON emits unpopulated fields, so "count": 0 and "complete": false show;
// unknown request fields are ignored. IngestStream has no REST form. An
// ingest body in which some events do not decode (a string that is not
// UTF-8, a malformed click_time) is decoded event by event, and those events
// are rejected by their index like any invalid event (see restJSON).
func (r *Router) Gateway(ctx context.Context) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
		Marshaler: &restJSON{JSONPb: runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}},
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

// restJSON is the gateway's JSON marshaler, with one change: an
// IngestRequest body that protojson refuses as a whole is decoded again
// event by event (event.UnmarshalIngestJSON), so that an undecodable event
// becomes a placeholder event.Validate rejects by its index. A body that is
// not even an object of events is refused as before (INVALID_ARGUMENT, HTTP
// 400, with protojson's message).
type restJSON struct {
	runtime.JSONPb
}

func (m *restJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		req, ok := v.(*adclickv1.IngestRequest)
		if !ok {
			return m.JSONPb.NewDecoder(r).Decode(v)
		}
		// As JSONPb does: the first JSON value of the body (io.EOF when
		// empty, which the gateway takes as an empty request).
		var raw json.RawMessage
		if err := json.NewDecoder(r).Decode(&raw); err != nil {
			return err
		}
		return decodeIngestJSON(raw, req, m.UnmarshalOptions)
	})
}

// decodeIngestJSON decodes one JSON IngestRequest: protojson first, event by
// event when that fails.
func decodeIngestJSON(raw []byte, req *adclickv1.IngestRequest, opts protojson.UnmarshalOptions) error {
	err := opts.Unmarshal(raw, req)
	if err == nil {
		return nil
	}
	if event.UnmarshalIngestJSON(raw, req, opts) == nil {
		return nil
	}
	return err
}
