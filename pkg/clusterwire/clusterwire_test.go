package clusterwire

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
)

func TestNumbersMatchTheProto(t *testing.T) {
	for _, tt := range []struct {
		msg   proto.Message
		field string
		num   protowire.Number
	}{
		{&clusterv1.ApplyRequest{}, "aggregator_id", ApplyAggregator},
		{&clusterv1.ApplyRequest{}, "incarnation", ApplyInc},
		{&clusterv1.ApplyRequest{}, "partials", ApplyPartials},
		{&clusterv1.Partial{}, "sequence", PartialSequence},
		{&clusterv1.Partial{}, "minute", PartialMinute},
		{&clusterv1.Partial{}, "closes_minute", PartialCloses},
		{&clusterv1.Partial{}, "counts", PartialCounts},
		{&clusterv1.Count{}, "filter", CountFilter},
		{&clusterv1.Count{}, "ad_id", CountAd},
		{&clusterv1.Count{}, "count", CountN},
	} {
		d := tt.msg.ProtoReflect().Descriptor()
		f := d.Fields().ByName(protoreflect.Name(tt.field))
		if f == nil {
			t.Errorf("%s has no field %s", d.FullName(), tt.field)
			continue
		}
		if f.Number() != tt.num {
			t.Errorf("%s.%s is field %d in the proto, %d here", d.FullName(), tt.field, f.Number(), tt.num)
		}
	}
}
