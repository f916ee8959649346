package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/node"
	"github.com/adclick/adclick/pkg/node/nodetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	replayMinutes  = 20
	replayLateness = 5 * time.Second
)

// click is one event the test sends, with what the test expects of it.
type click struct {
	ev      *adclickv1.ClickEvent
	minute  int64  // unix seconds
	invalid string // expected rejection keyword, "" when valid
}

// testFilter is a filter definition and the test's own, independent idea of
// what it matches (std net parsing, not the production netip code).
type testFilter struct {
	def   *adclickv1.Filter
	match func(ev *adclickv1.ClickEvent) bool
	id    int64
}

type countKey struct {
	filter int64
	ad     string
	minute int64
}

// truth holds the expected count of every (filter, ad, minute).
type truth map[countKey]int64

func (tr truth) sum(filter int64, ad string, from, to int64) int64 {
	var n int64
	for m := from; m < to; m += 60 {
		n += tr[countKey{filter, ad, m}]
	}
	return n
}

func (tr truth) top(filter int64, from, to int64, n int) []*adclickv1.AdCount {
	sums := map[string]int64{}
	for k, c := range tr {
		if k.filter == filter && k.minute >= from && k.minute < to {
			sums[k.ad] += c
		}
	}
	out := make([]*adclickv1.AdCount, 0, len(sums))
	for ad, c := range sums {
		if c > 0 {
			out = append(out, &adclickv1.AdCount{AdId: ad, Count: c})
		}
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

func inCIDR(ipText, cidr string) bool {
	_, n, err := net.ParseCIDR(cidr)
	ip := net.ParseIP(ipText)
	return err == nil && ip != nil && n.Contains(ip)
}

func startReplayCluster(t *testing.T, clk clock.Clock) *node.Cluster {
	t.Helper()
	cfg := node.TestClusterConfig(t.TempDir(), 2, 1)
	cfg.Aggregator.AllowedLateness = replayLateness
	cfg.Aggregator.TickInterval = 5 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return nodetest.StartCluster(t, cfg, node.Env{Clock: clk, Log: log})
}

// TestReplayTalkingData replays the real sample through a router, two
// aggregators and a reducer (real etcd, real gRPC on loopback), with times
// moved into 20 recent minutes, out of order, with duplicates, late clicks
// and invalid events, and compares every answer with ground truth.
func TestReplayTalkingData(t *testing.T) {
	rows := loadDataset(t)
	if testing.Short() {
		rows = rows[:20000]
	}
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	cl := startReplayCluster(t, clk)
	conn, err := grpc.NewClient(cl.Router.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ingest := adclickv1.NewIngestServiceClient(conn)
	query := adclickv1.NewQueryServiceClient(conn)
	filters := adclickv1.NewFilterServiceClient(conn)
	httpBase := "http://" + cl.Router.HTTPAddr()

	// Filters first: they count from a minute at least one minute ahead.
	tfs := []*testFilter{
		{def: &adclickv1.Filter{Countries: []string{"us", "De"}}, match: func(ev *adclickv1.ClickEvent) bool {
			c := strings.ToUpper(ev.Country)
			return c == "US" || c == "DE"
		}},
		{def: &adclickv1.Filter{Ips: []string{"0.1.0.0/16", "0.0.200.1"}}, match: func(ev *adclickv1.ClickEvent) bool {
			return inCIDR(ev.Ip, "0.1.0.0/16") || ev.Ip == "0.0.200.1"
		}},
		{def: &adclickv1.Filter{Ips: []string{"2001:db8::/112"}}, match: func(ev *adclickv1.ClickEvent) bool {
			return inCIDR(ev.Ip, "2001:db8::/112")
		}},
	}
	rng := rand.New(rand.NewSource(42))
	base := t0.Add(3 * time.Minute)
	countries := []string{"US", "DE", "FR", "IN", "BR", "JP", "GB"}
	var clicks []*click
	userFreq := map[string]int{}
	for _, r := range rows {
		m := (r.at.Unix() / 60) % replayMinutes
		at := base.Add(time.Duration(m)*time.Minute + time.Duration(r.at.Second())*time.Second)
		ip := dottedQuad(r.ip)
		if r.ip%10 == 0 {
			ip = fmt.Sprintf("2001:db8::%x:%x", r.ip>>16, r.ip&0xffff)
		}
		country := countries[int(r.ip)%len(countries)]
		if r.line%3 == 0 {
			country = strings.ToLower(country)
		}
		user := r.app + "-" + r.device + "-" + r.os + "-" + strconv.FormatUint(uint64(r.ip), 10)
		userFreq[user]++
		clicks = append(clicks, &click{minute: clock.Minute(at), ev: &adclickv1.ClickEvent{
			ClickId: "td-" + strconv.Itoa(r.line), AdId: "app-" + r.app, ClickTime: timestamppb.New(at),
			UserId: user, Ip: ip, Country: country,
		}})
	}
	// A user filter combined with a country: every non-empty field must match.
	var topUsers []string
	for u, n := range userFreq {
		if n >= 3 {
			topUsers = append(topUsers, u)
		}
	}
	sort.Strings(topUsers)
	if len(topUsers) > 50 {
		topUsers = topUsers[:50]
	}
	userSet := map[string]bool{}
	for _, u := range topUsers {
		userSet[u] = true
	}
	tfs = append(tfs, &testFilter{def: &adclickv1.Filter{UserIds: topUsers, Countries: []string{"US", "FR", "IN"}}, match: func(ev *adclickv1.ClickEvent) bool {
		c := strings.ToUpper(ev.Country)
		return userSet[ev.UserId] && (c == "US" || c == "FR" || c == "IN")
	}})
	for i, f := range tfs {
		var got *adclickv1.Filter
		if i%2 == 0 {
			got, err = filters.CreateFilter(ctx, &adclickv1.CreateFilterRequest{Filter: f.def})
		} else {
			got, err = createFilterREST(httpBase, f.def)
		}
		if err != nil {
			t.Fatalf("create filter %v: %v", f.def, err)
		}
		if got.Id <= 0 || got.EffectiveFrom == nil || got.EffectiveFrom.AsTime().After(base) {
			t.Fatalf("created filter %v: want an id and an effective minute before %v", got, base)
		}
		f.id = got.Id
	}
	pollUntil(t, 10*time.Second, "every aggregator sees the filters", func() bool {
		for _, a := range cl.Aggregators {
			if a.Filters().Len() != len(tfs) {
				return false
			}
		}
		return true
	})

	// Ground truth, computed from the clicks the test sends.
	tr := truth{}
	for _, c := range clicks {
		tr[countKey{0, c.ev.AdId, c.minute}]++
		for _, f := range tfs {
			if f.match(c.ev) {
				tr[countKey{f.id, c.ev.AdId, c.minute}]++
			}
		}
	}

	// Schedule: minute j's clicks are sent at j:30 in random order; 4% are
	// held back two minutes (late: their minute has closed); 3% are sent a
	// second time later; invalid events are mixed in.
	steps := make([][]*click, replayMinutes+3)
	for _, c := range clicks {
		j := int((c.minute - base.Unix()) / 60)
		if rng.Float64() < 0.04 {
			steps[j+2] = append(steps[j+2], c)
		} else {
			steps[j] = append(steps[j], c)
		}
		if rng.Float64() < 0.03 {
			k := j + rng.Intn(3)
			steps[k] = append(steps[k], c)
		}
	}
	seen := map[string]bool{}
	var accepted, duplicates, rejected int64
	for j, step := range steps {
		now := base.Add(time.Duration(j)*time.Minute + 30*time.Second)
		clk.Set(now)
		rng.Shuffle(len(step), func(a, b int) { step[a], step[b] = step[b], step[a] })
		var withInvalid []*click
		for i, c := range step {
			if i%97 == 0 {
				withInvalid = append(withInvalid, invalidClick(i/97, now))
			}
			withInvalid = append(withInvalid, c)
		}
		for b := 0; b*500 < len(withInvalid); b++ {
			batch := withInvalid[b*500 : min((b+1)*500, len(withInvalid))]
			a, d, r := sendAndCheck(t, ctx, b%3, ingest, httpBase, batch, seen)
			accepted, duplicates, rejected = accepted+a, duplicates+d, rejected+r
		}
	}
	t.Logf("sent: %d accepted, %d duplicates, %d rejected", accepted, duplicates, rejected)
	if accepted != int64(len(clicks)) {
		t.Fatalf("accepted %d clicks, want %d", accepted, len(clicks))
	}

	// Close every minute, then wait until the reducer says so.
	from, to := base.Unix(), base.Unix()+replayMinutes*60
	clk.Set(time.Unix(to, 0).Add(time.Minute + replayLateness + time.Second))
	pollUntil(t, 30*time.Second, "all minutes complete", func() bool {
		resp, err := query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "app-3", From: ts(from), To: ts(to)})
		return err == nil && resp.Complete
	})
	// Complete speaks of closing partials: late clicks accepted after the
	// range's last minute closed (the last step sends some) are corrections
	// that follow. Wait until every aggregator has delivered them.
	pollUntil(t, 30*time.Second, "every aggregator settled", func() bool {
		for _, a := range cl.Aggregators {
			if !a.Settled() {
				return false
			}
		}
		return true
	})

	ads := adsOf(tr)
	checkCounts(t, ctx, query, tr, ads, tfs, from, to, rng)
	checkPopular(t, ctx, query, tr, tfs, from, to)
	checkREST(t, httpBase, tr, ads[0], from, to)
	checkQueryErrors(t, ctx, query, filters, tfs, from, to)
}

func ts(unix int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(unix, 0)) }

// invalidClick returns one of several invalid events, with the word its
// rejection reason must contain.
func invalidClick(k int, now time.Time) *click {
	ok := func() *adclickv1.ClickEvent {
		return &adclickv1.ClickEvent{ClickId: fmt.Sprintf("bad-%d-%d", now.Unix(), k), AdId: "app-bad", ClickTime: timestamppb.New(now), Ip: "10.0.0.1", Country: "US"}
	}
	ev := ok()
	var want string
	switch k % 7 {
	case 0:
		ev.ClickId, want = "", "click_id"
	case 1:
		ev.AdId, want = strings.Repeat("x", 129), "ad_id"
	case 2:
		ev.ClickTime, want = nil, "click_time"
	case 3:
		ev.Ip, want = "999.1.1.1", "ip"
	case 4:
		ev.Country, want = "USA", "country"
	case 5:
		ev.ClickTime, want = timestamppb.New(now.Add(10*time.Minute)), "future"
	case 6:
		ev.ClickTime, want = timestamppb.New(now.Add(-25*time.Hour)), "horizon"
	}
	return &click{ev: ev, invalid: want}
}

// sendAndCheck sends one batch by unary gRPC, the stream, or REST, and
// checks the answer event by event against what the test expects.
func sendAndCheck(t *testing.T, ctx context.Context, via int, ingest adclickv1.IngestServiceClient, httpBase string, batch []*click, seen map[string]bool) (acc, dup, rej int64) {
	t.Helper()
	req := &adclickv1.IngestRequest{}
	var wantRej []int32
	var wantAcc, wantDup int64
	for i, c := range batch {
		req.Events = append(req.Events, c.ev)
		switch {
		case c.invalid != "":
			wantRej = append(wantRej, int32(i))
		case seen[c.ev.ClickId]:
			wantDup++
		default:
			seen[c.ev.ClickId] = true
			wantAcc++
		}
	}
	var resp *adclickv1.IngestResponse
	var err error
	switch via {
	case 0:
		resp, err = ingest.Ingest(ctx, req)
	case 1:
		var stream adclickv1.IngestService_IngestStreamClient
		if stream, err = ingest.IngestStream(ctx); err == nil {
			if err = stream.Send(req); err == nil {
				resp, err = stream.Recv()
			}
			stream.CloseSend()
		}
	default:
		resp, err = ingestREST(httpBase, req)
	}
	if err != nil {
		t.Fatalf("ingest (via %d): %v", via, err)
	}
	if resp.Accepted != wantAcc || resp.Duplicates != wantDup || len(resp.Rejected) != len(wantRej) {
		t.Fatalf("ingest (via %d): got accepted=%d duplicates=%d rejected=%d, want %d/%d/%d (%v)", via, resp.Accepted, resp.Duplicates, len(resp.Rejected), wantAcc, wantDup, len(wantRej), resp.Rejected[:min(5, len(resp.Rejected))])
	}
	for i, r := range resp.Rejected {
		if r.Index != wantRej[i] {
			t.Fatalf("rejection %d has index %d, want %d", i, r.Index, wantRej[i])
		}
		if want := batch[r.Index].invalid; !strings.Contains(r.Reason, want) {
			t.Errorf("rejection of event %d: reason %q does not mention %q", r.Index, r.Reason, want)
		}
	}
	return resp.Accepted, resp.Duplicates, int64(len(resp.Rejected))
}

func adsOf(tr truth) []string {
	totals := map[string]int64{}
	for k, c := range tr {
		if k.filter == 0 {
			totals[k.ad] += c
		}
	}
	ads := make([]string, 0, len(totals))
	for ad := range totals {
		ads = append(ads, ad)
	}
	sort.Slice(ads, func(i, j int) bool {
		if totals[ads[i]] != totals[ads[j]] {
			return totals[ads[i]] > totals[ads[j]]
		}
		return ads[i] < ads[j]
	})
	return ads
}

func checkCounts(t *testing.T, ctx context.Context, q adclickv1.QueryServiceClient, tr truth, ads []string, tfs []*testFilter, from, to int64, rng *rand.Rand) {
	t.Helper()
	ask := func(ad string, filter, a, b int64) {
		resp, err := q.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: ad, From: ts(a), To: ts(b), Filter: filter})
		if err != nil {
			t.Fatalf("AggregatedCount(%s, filter %d, %d..%d): %v", ad, filter, a, b, err)
		}
		if want := tr.sum(filter, ad, a, b); resp.Count != want || !resp.Complete {
			t.Errorf("AggregatedCount(%s, filter %d, minutes %d..%d) = %d complete=%v, want %d complete", ad, filter, (a-from)/60, (b-from)/60, resp.Count, resp.Complete, want)
			for m := a; m <= b && b > a; m += 60 { // which minutes differ
				r, err := q.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: ad, From: ts(m), To: ts(m), Filter: filter})
				if w := tr.sum(filter, ad, m, m); err != nil || r.Count != w {
					t.Errorf("  minute %d: %d (%v), want %d", (m-from)/60, r.GetCount(), err, w)
				}
			}
		}
	}
	queries := 0
	for i, ad := range ads {
		ask(ad, 0, from, to) // every ad over the whole range
		queries++
		if i < 40 { // the busiest ads: random ranges and single minutes
			for k := 0; k < 5; k++ {
				a := from + 60*int64(rng.Intn(replayMinutes))
				b := a + 60*int64(1+rng.Intn(int((to-a)/60)))
				ask(ad, 0, a, b)
				ask(ad, tfs[k%len(tfs)].id, a, b)
				queries += 2
			}
		}
	}
	for _, f := range tfs {
		for _, ad := range ads[:min(30, len(ads))] {
			ask(ad, f.id, from, to)
			queries++
		}
	}
	ask("app-never-clicked", 0, from, to)
	t.Logf("checked %d AggregatedCount answers against ground truth", queries+1)
}

func checkPopular(t *testing.T, ctx context.Context, q adclickv1.QueryServiceClient, tr truth, tfs []*testFilter, from, to int64) {
	t.Helper()
	filterIDs := []int64{0}
	for _, f := range tfs {
		filterIDs = append(filterIDs, f.id)
	}
	checked := 0
	for _, filter := range filterIDs {
		for _, w := range []int32{1, 5, 20} {
			for _, end := range []int64{to, to - 7*60, from + int64(w)*60} {
				if filter != 0 && end-int64(w)*60 < from {
					continue // before the filter counts: checked in checkQueryErrors
				}
				for _, n := range []int32{1, 10, 100, 1000} {
					resp, err := q.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: n, Window: w, Filter: filter, To: ts(end)})
					if err != nil {
						t.Fatalf("PopularAds(n=%d, window=%d, filter=%d): %v", n, w, filter, err)
					}
					want := tr.top(filter, end-int64(w)*60, end, int(n))
					if !sameTop(resp.Ads, want) || !resp.Complete || resp.From.AsTime().Unix() != end-int64(w)*60 {
						t.Errorf("PopularAds(n=%d, window=%d, filter=%d, to=+%dm): complete=%v from=%v\n got  %v\n want %v", n, w, filter, (end-from)/60, resp.Complete, resp.From.AsTime(), brief(resp.Ads), brief(want))
					}
					checked++
				}
			}
		}
	}
	t.Logf("checked %d PopularAds answers against ground truth", checked)
}

func sameTop(got, want []*adclickv1.AdCount) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].AdId != want[i].AdId || got[i].Count != want[i].Count {
			return false
		}
	}
	return true
}

func brief(ads []*adclickv1.AdCount) string {
	var b strings.Builder
	for i, a := range ads {
		if i == 8 {
			fmt.Fprintf(&b, "... (%d)", len(ads))
			break
		}
		fmt.Fprintf(&b, "%s=%d ", a.AdId, a.Count)
	}
	return b.String()
}

func checkREST(t *testing.T, httpBase string, tr truth, ad string, from, to int64) {
	t.Helper()
	u := fmt.Sprintf("%s/v1/ads/%s/aggregated_count?from=%s&to=%s", httpBase, url.PathEscape(ad),
		url.QueryEscape(time.Unix(from, 0).UTC().Format(time.RFC3339)), url.QueryEscape(time.Unix(to, 0).UTC().Format(time.RFC3339)))
	var resp adclickv1.AggregatedCountResponse
	if code := getJSON(t, u, &resp); code != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", u, code)
	}
	if want := tr.sum(0, ad, from, to); resp.Count != want || !resp.Complete {
		t.Errorf("REST count of %s = %d (complete %v), want %d", ad, resp.Count, resp.Complete, want)
	}
	u = fmt.Sprintf("%s/v1/ads/popular_ads?count=5&window=%d&to=%s", httpBase, replayMinutes, url.QueryEscape(time.Unix(to, 0).UTC().Format(time.RFC3339)))
	var pop adclickv1.PopularAdsResponse
	if code := getJSON(t, u, &pop); code != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", u, code)
	}
	if want := tr.top(0, from, to, 5); !sameTop(pop.Ads, want) {
		t.Errorf("REST popular ads = %v, want %v", brief(pop.Ads), brief(want))
	}
	u = fmt.Sprintf("%s/v1/ads/%s/aggregated_count?from=%s&to=%s", httpBase, ad,
		url.QueryEscape(time.Unix(to, 0).UTC().Format(time.RFC3339)), url.QueryEscape(time.Unix(from, 0).UTC().Format(time.RFC3339)))
	if code := getJSON(t, u, nil); code != http.StatusBadRequest {
		t.Errorf("REST from after to: HTTP %d, want 400", code)
	}
}

func checkQueryErrors(t *testing.T, ctx context.Context, q adclickv1.QueryServiceClient, fc adclickv1.FilterServiceClient, tfs []*testFilter, from, to int64) {
	t.Helper()
	tests := []struct {
		name string
		req  *adclickv1.AggregatedCountRequest
		want codes.Code
	}{
		{"from after to", &adclickv1.AggregatedCountRequest{AdId: "app-3", From: ts(to), To: ts(from)}, codes.InvalidArgument},
		{"missing ad", &adclickv1.AggregatedCountRequest{From: ts(from), To: ts(to)}, codes.InvalidArgument},
		{"unknown filter", &adclickv1.AggregatedCountRequest{AdId: "app-3", From: ts(from), To: ts(to), Filter: 999}, codes.NotFound},
		{"before the filter counts", &adclickv1.AggregatedCountRequest{AdId: "app-3", From: ts(from - 3600), To: ts(to), Filter: tfs[0].id}, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		_, err := q.AggregatedCount(ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	list, err := fc.ListFilters(ctx, &adclickv1.ListFiltersRequest{})
	if err != nil || len(list.Filters) != len(tfs) {
		t.Fatalf("ListFilters: %v, %v", list, err)
	}
	if _, err := fc.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: tfs[0].id}); err != nil {
		t.Fatalf("DeleteFilter: %v", err)
	}
	pollUntil(t, 10*time.Second, "deleted filter is unknown to queries", func() bool {
		_, err := q.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "app-3", From: ts(from), To: ts(to), Filter: tfs[0].id})
		return status.Code(err) == codes.NotFound
	})
	if _, err := fc.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: tfs[0].id}); status.Code(err) != codes.NotFound {
		t.Errorf("second DeleteFilter: %v, want NotFound", err)
	}
}

func ingestREST(httpBase string, req *adclickv1.IngestRequest) (*adclickv1.IngestResponse, error) {
	body, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := http.Post(httpBase+"/v1/clicks", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /v1/clicks: HTTP %d: %s", resp.StatusCode, data)
	}
	var out adclickv1.IngestResponse
	return &out, protojson.Unmarshal(data, &out)
}

func createFilterREST(httpBase string, f *adclickv1.Filter) (*adclickv1.Filter, error) {
	body, err := protojson.Marshal(f)
	if err != nil {
		return nil, err
	}
	resp, err := http.Post(httpBase+"/v1/filters", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /v1/filters: HTTP %d: %s", resp.StatusCode, data)
	}
	var out adclickv1.Filter
	return &out, protojson.Unmarshal(data, &out)
}

// getJSON GETs u into out (nil: body ignored) and returns the HTTP status.
func getJSON(t *testing.T, u string, out proto.Message) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := protojson.Unmarshal(data, out); err != nil {
			t.Fatalf("GET %s: decode %s: %v", u, data, err)
		}
	}
	return resp.StatusCode
}
