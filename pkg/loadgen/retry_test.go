package loadgen

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// flakyIngest is an IngestService that dedups click ids like the cluster
// does, but breaks every stream after a few requests: half the time before
// counting the request, half the time after (the answer is lost). Every
// fifth request it answers some events "retry": most not counted (their
// owner was down), some counted all the same (a forward that timed out
// after the aggregator counted it).
type flakyIngest struct {
	adclickv1.UnimplementedIngestServiceServer
	mu       sync.Mutex
	seen     map[string]bool
	counts   map[[2]int64]int64 // (ad index, minute) -> distinct clicks
	requests int
	breaks   int
	retried  int
}

func (f *flakyIngest) IngestStream(st adclickv1.IngestService_IngestStreamServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		f.requests++
		n := f.requests
		if n%7 == 0 {
			f.breaks++
			f.mu.Unlock()
			return status.Error(codes.Unavailable, "aggregator unreachable (test)")
		}
		resp := &adclickv1.IngestResponse{}
		for i, ev := range req.Events {
			if n%5 == 0 && i%3 != 2 {
				resp.Retry = append(resp.Retry, int32(i))
				f.retried++
				if i%3 == 0 {
					continue // not processed
				}
				if !f.seen[ev.ClickId] { // processed, answer lost
					f.seen[ev.ClickId] = true
					f.count(ev)
				}
				continue
			}
			if f.seen[ev.ClickId] {
				resp.Duplicates++
				continue
			}
			f.seen[ev.ClickId] = true
			resp.Accepted++
			f.count(ev)
		}
		f.mu.Unlock()
		if n%11 == 0 {
			return status.Error(codes.Unavailable, "answer lost (test)")
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func (f *flakyIngest) count(ev *adclickv1.ClickEvent) {
	var ad int64
	for _, ch := range ev.AdId[len("ad-"):] {
		ad = ad*10 + int64(ch-'0')
	}
	f.counts[[2]int64{ad, clock.Minute(ev.ClickTime.AsTime())}]++
}

// TestSendRetriesFailedRequests breaks streams while the generator sends
// with pipelining, duplicates and late clicks, and expects every click
// acknowledged exactly once in the ground truth, equal to what the server
// counted.
func TestSendRetriesFailedRequests(t *testing.T) {
	srv := &flakyIngest{seen: map[string]bool{}, counts: map[[2]int64]int64{}}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	adclickv1.RegisterIngestServiceServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///flaky", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	clk := fastClock(t)
	cfg := DefaultConfig()
	cfg.Target = "flaky"
	cfg.Duration = time.Second
	cfg.Rate = 20000
	cfg.Batch = 50
	cfg.Concurrency = 2
	cfg.Ads = 300
	cfg.Dup = 0.1
	cfg.Late = 0.05
	cfg.AllowedLateness = time.Second
	r, err := New(cfg, []grpc.ClientConnInterface{conn}, Deps{Clock: clk, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	r.Send(context.Background())
	res := r.Result(nil)
	t.Logf("result: %+v; server: %d requests, %d broken streams", res, srv.requests, srv.breaks)
	if res.Retries == 0 || srv.breaks == 0 || srv.retried == 0 {
		t.Fatalf("no retries (%d) or no broken streams (%d): the test did not exercise retries", res.Retries, srv.breaks)
	}
	if res.Errors != 0 || res.AckMismatches != 0 || res.LateSent == 0 || res.DuplicatesSent == 0 {
		t.Fatalf("errors %d, ack mismatches %d, late %d, duplicates %d; want 0, 0, > 0, > 0", res.Errors, res.AckMismatches, res.LateSent, res.DuplicatesSent)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var total int64
	for k, c := range srv.counts {
		total += c
		if got := r.Expected().Count(uint32(k[0]), k[1]); got != c {
			t.Errorf("ad-%d minute %d: generator expects %d, server counted %d", k[0], k[1], got, c)
		}
	}
	if got := r.Expected().Total(); got != total || int64(len(srv.seen)) != total {
		t.Errorf("generator expects %d clicks, server counted %d (%d distinct ids)", got, total, len(srv.seen))
	}
}
