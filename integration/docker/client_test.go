package docker

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	ads        = 61                    // distinct ads the client clicks on
	batchSize  = 100                   // clicks per Ingest call
	sendPeriod = 50 * time.Millisecond // per worker: about 2,000 clicks/s each
	callWait   = 5 * time.Second       // one Ingest attempt
)

// countKey is one (ad, minute) the truth counts.
type countKey struct {
	ad     string
	minute int64
}

// truth is the expected count of every (ad, minute): every click the client
// generated, each exactly once.
type truth map[countKey]int64

func (tr truth) sum(ad string, from, to int64) int64 {
	var n int64
	for m := from; m < to; m += 60 {
		n += tr[countKey{ad, m}]
	}
	return n
}

// top is the expected PopularAds answer: most clicks first, ties by ad id.
func (tr truth) top(from, to int64, n int) []*adclickv1.AdCount {
	sums := map[string]int64{}
	for k, c := range tr {
		if k.minute >= from && k.minute < to {
			sums[k.ad] += c
		}
	}
	out := make([]*adclickv1.AdCount, 0, len(sums))
	for ad, c := range sums {
		out = append(out, &adclickv1.AdCount{AdId: ad, Count: c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].AdId < out[j].AdId
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func (tr truth) ads() []string {
	seen := map[string]bool{}
	for k := range tr {
		seen[k.ad] = true
	}
	out := make([]string, 0, len(seen))
	for ad := range seen {
		out = append(out, ad)
	}
	sort.Strings(out)
	return out
}

// client sends batches of fresh clicks through the routers and resends
// whatever was not acknowledged until it is, as a real client does: a
// failed call is resent whole (duplicates are safe), the events a response
// lists in `retry` are resent exactly. A failed call moves on to the next
// router, so a router restart costs one attempt.
type client struct {
	routers []adclickv1.IngestServiceClient
	conns   []*grpc.ClientConn

	mu    sync.Mutex
	truth truth

	acked      atomic.Int64 // batches fully acknowledged
	failed     atomic.Int64 // calls that failed and were resent whole
	resent     atomic.Int64 // events resent because a response listed them in retry
	duplicates atomic.Int64
}

func newClient(addrs ...string) (*client, error) {
	c := &client{truth: truth{}}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, conn)
		c.routers = append(c.routers, adclickv1.NewIngestServiceClient(conn))
	}
	return c, nil
}

func (c *client) close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// snapshot copies the truth so far.
func (c *client) snapshot() truth {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(truth, len(c.truth))
	for k, v := range c.truth {
		out[k] = v
	}
	return out
}

// run sends until stop is closed; it returns an error when a batch cannot
// be acknowledged before ctx ends or an answer does not add up.
func (c *client) run(ctx context.Context, worker int, stop <-chan struct{}) error {
	tick := time.NewTicker(sendPeriod)
	defer tick.Stop()
	r := worker
	for b := 0; ; b++ {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		now := time.Now()
		events := make([]*adclickv1.ClickEvent, batchSize)
		local := truth{}
		for i := range events {
			ad := fmt.Sprintf("ad-%d", (i*i+b*7+worker)%ads)
			events[i] = &adclickv1.ClickEvent{
				ClickId: fmt.Sprintf("w%d-%d-b%d-%d", worker, now.UnixNano(), b, i), AdId: ad,
				ClickTime: timestamppb.New(now), Country: "US",
			}
			local[countKey{ad, now.Unix() - now.Unix()%60}]++
		}
		c.mu.Lock()
		for k, v := range local {
			c.truth[k] += v
		}
		c.mu.Unlock()
		if err := c.send(ctx, &r, events); err != nil {
			return fmt.Errorf("worker %d batch %d: %w", worker, b, err)
		}
		c.acked.Add(1)
	}
}

// send delivers events until every one is acknowledged as accepted or
// duplicate.
func (c *client) send(ctx context.Context, r *int, events []*adclickv1.ClickEvent) error {
	pending := events
	for len(pending) > 0 {
		actx, cancel := context.WithTimeout(ctx, callWait)
		resp, err := c.routers[*r%len(c.routers)].Ingest(actx, &adclickv1.IngestRequest{Events: pending})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%d events never acknowledged: %v", len(pending), err)
			}
			c.failed.Add(1)
			*r++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if len(resp.Rejected) > 0 {
			return fmt.Errorf("rejected: %v", resp.Rejected)
		}
		retry := retryIndexes(resp)
		if got := resp.Accepted + resp.Duplicates + int64(len(retry)); got != int64(len(pending)) {
			return fmt.Errorf("%d accepted + %d duplicates + %d to retry of %d events", resp.Accepted, resp.Duplicates, len(retry), len(pending))
		}
		c.duplicates.Add(resp.Duplicates)
		next := make([]*adclickv1.ClickEvent, 0, len(retry))
		for _, i := range retry {
			if i < 0 || int(i) >= len(pending) {
				return fmt.Errorf("retry index %d out of range of %d events", i, len(pending))
			}
			next = append(next, pending[i])
		}
		if len(next) > 0 {
			c.resent.Add(int64(len(next)))
			time.Sleep(100 * time.Millisecond)
		}
		pending = next
	}
	return nil
}

// retryIndexes reads IngestResponse.retry (the events to resend because
// their owner was unreachable) through reflection, so that the test builds
// with and without that field in gen/.
func retryIndexes(resp *adclickv1.IngestResponse) []int32 {
	m := resp.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("retry")
	if fd == nil || !fd.IsList() {
		return nil
	}
	l := m.Get(fd).List()
	out := make([]int32, l.Len())
	for i := range out {
		out[i] = int32(l.Get(i).Int())
	}
	return out
}
