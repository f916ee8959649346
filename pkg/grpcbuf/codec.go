package grpcbuf

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/event"
)

// codec is gRPC's proto codec with its buffers taken from the non-zeroing
// pool: the stock codec takes them from mem.DefaultBufferPool, which clears
// every buffer it hands out, and that clearing showed in the profile of a
// full-speed ingest (each forwarded batch is marshaled and unmarshaled once
// per hop). Registered under the name "proto" at init, it replaces the stock
// codec for every server and client of the process. A *Frame passes as its
// bytes, unparsed (ingest requests, forwarded clicks and deliveries of
// partials travel so). An IngestRequest decoded as a message (a server
// registered with the generated handlers, as tests do) that does not
// decode as a whole is decoded event by event (event.UnmarshalIngest), so
// that one undecodable event is rejected by its index instead of failing
// the batch.
type codec struct{}

func init() { encoding.RegisterCodecV2(codec{}) }

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		// Copied: the transport may still hold the buffer after a call
		// returns (a cancelled one), while the caller reuses f.B.
		buf := sharedPool.Get(len(f.B))
		copy(*buf, f.B)
		return mem.BufferSlice{mem.NewBuffer(buf, sharedPool)}, nil
	}
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("proto: cannot marshal %T, want proto.Message", v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	buf := sharedPool.Get(size)
	if _, err := (proto.MarshalOptions{}).MarshalAppend((*buf)[:0], m); err != nil {
		sharedPool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, sharedPool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.Free()
		f.buf = data.MaterializeToBuffer(sharedPool)
		f.B = f.buf.ReadOnlyData()
		return nil
	}
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("proto: cannot unmarshal into %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(sharedPool)
	defer buf.Free()
	err := proto.Unmarshal(buf.ReadOnlyData(), m)
	if req, ok := m.(*adclickv1.IngestRequest); ok && err != nil {
		// One bad event (typically a string that is not UTF-8, which proto3
		// refuses) must not fail the whole batch: decode event by event and
		// let validation reject the bad ones by index.
		if event.UnmarshalIngest(buf.ReadOnlyData(), req) == nil {
			return nil
		}
		proto.Reset(req)
	}
	return err
}

func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}

// Frame is a message in its protobuf encoding, sent or received as it is:
// a server handler or a client call that reads the bytes itself (the
// ingest path reads clicks in place and forwards their bytes) passes a
// *Frame where gRPC expects a message. A received Frame holds a pooled
// buffer until Free.
type Frame struct {
	B   []byte
	buf mem.Buffer
}

// Free returns a received frame's buffer to the pool; B is then invalid.
func (f *Frame) Free() {
	if f.buf != nil {
		f.buf.Free()
		f.buf = nil
	}
	f.B = nil
}

// WithFrameMethod returns a copy of desc whose unary method named method
// receives its request as a *Frame and is served by call (see
// FrameHandler). It panics if desc has no such method: a programming error.
func WithFrameMethod[S any](desc *grpc.ServiceDesc, method string, call func(srv S, ctx context.Context, f *Frame) (any, error)) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		if d.Methods[i].MethodName == method {
			d.Methods[i].Handler = FrameHandler("/"+desc.ServiceName+"/"+method, call)
			return &d
		}
	}
	panic("grpcbuf: service " + desc.ServiceName + " has no unary method " + method)
}

// FrameHandler returns a unary method handler that receives its request as
// a *Frame and passes it to call (through the server's interceptor, if
// any); the frame is freed once call returns, so the answer must not
// refer to it.
func FrameHandler[S any](fullMethod string, call func(srv S, ctx context.Context, f *Frame) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		s := srv.(S)
		f := new(Frame)
		if err := dec(f); err != nil {
			return nil, err
		}
		defer f.Free()
		if interceptor == nil {
			return call(s, ctx, f)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, f, info, func(ctx context.Context, req any) (any, error) {
			return call(s, ctx, req.(*Frame))
		})
	}
}
