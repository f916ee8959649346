package grpcbuf

import (
	"context"
	"testing"

	"google.golang.org/grpc"
)

type testSrv struct{}

// TestWithFrameMethod checks that only the named method is replaced, in a
// copy (the generated descriptor is shared), and that a wrong name is
// refused at once.
func TestWithFrameMethod(t *testing.T) {
	orig := func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
		return "orig", nil
	}
	desc := &grpc.ServiceDesc{ServiceName: "x.v1.S", Methods: []grpc.MethodDesc{{MethodName: "A", Handler: orig}, {MethodName: "B", Handler: orig}}}
	var got []byte
	d := WithFrameMethod(desc, "B", func(_ testSrv, _ context.Context, f *Frame) (any, error) {
		got = append(got, f.B...)
		return "frame", nil
	})
	dec := func(m any) error { m.(*Frame).B = []byte("req"); return nil }
	if r, _ := d.Methods[1].Handler(testSrv{}, context.Background(), dec, nil); r != "frame" || string(got) != "req" {
		t.Fatalf("B answered %v after reading %q; want frame, req", r, got)
	}
	var full string
	icpt := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		full = info.FullMethod
		return h(ctx, req)
	}
	if _, err := d.Methods[1].Handler(testSrv{}, context.Background(), dec, icpt); err != nil || full != "/x.v1.S/B" {
		t.Fatalf("interceptor saw %q, %v; want /x.v1.S/B", full, err)
	}
	for i, m := range []grpc.MethodDesc{d.Methods[0], desc.Methods[0], desc.Methods[1]} {
		if r, _ := m.Handler(testSrv{}, context.Background(), dec, nil); r != "orig" {
			t.Errorf("method %d answered %v; want the original handler", i, r)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic for a method the service does not have")
		}
	}()
	WithFrameMethod(desc, "C", func(testSrv, context.Context, *Frame) (any, error) { return nil, nil })
}
