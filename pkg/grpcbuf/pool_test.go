package grpcbuf

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

func TestBufferPoolSizes(t *testing.T) {
	p := &bufferPool{}
	for _, n := range []int{0, 1, 2, 3, 1000, 1024, 1025, 1 << 20} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.Put(b)
		again := p.Get(n)
		if len(*again) != n {
			t.Fatalf("Get(%d) after Put: len %d", n, len(*again))
		}
	}
	foreign := make([]byte, 10, 10)
	p.Put(&foreign) // not a power of two: dropped, no panic
	if b := p.Get(10); cap(*b) != 16 {
		t.Fatalf("a foreign buffer came back: cap %d", cap(*b))
	}
}

func TestCodecRoundTrip(t *testing.T) {
	c := encoding.GetCodecV2("proto")
	if _, ok := c.(codec); !ok {
		t.Fatalf("the registered proto codec is %T, want ours", c)
	}
	in := &adclickv1.IngestRequest{}
	for i := 0; i < 2000; i++ { // above the pooling threshold
		in.Events = append(in.Events, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("c-%d", i), AdId: "ad", Country: "US"})
	}
	for round := 0; round < 3; round++ { // reused buffers must not leak old bytes
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out adclickv1.IngestRequest
		if err := c.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		data.Free()
		if !proto.Equal(in, &out) {
			t.Fatal("round trip changed the message")
		}
		in.Events = in.Events[:len(in.Events)-500]
	}
}
