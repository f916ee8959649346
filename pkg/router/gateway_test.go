package router

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func startGateway(t *testing.T, e *env) *httptest.Server {
	t.Helper()
	h, err := e.router.Gateway(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func doJSON(t *testing.T, method, url, body string, wantStatus int) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: HTTP %d %s, want %d", method, url, resp.StatusCode, raw, wantStatus)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v in %s", method, url, err, raw)
	}
	return out
}

func TestGateway(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	red := startReducer(t, "red-1", 0)
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2}, []*redNode{red})
	srv := startGateway(t, e)

	t.Run("post clicks", func(t *testing.T) {
		body := `{"events": [
			{"clickId": "c1", "adId": "ad-1", "clickTime": "2025-01-02T03:04:05Z", "country": "de"},
			{"clickId": "c2", "adId": "ad-2", "clickTime": "2025-01-02T03:04:06Z", "ip": "::1"},
			{"clickId": "c1", "adId": "ad-1", "clickTime": "2025-01-02T03:04:05Z"},
			{"clickId": "c3", "adId": "ad-3", "ip": "nope"}]}`
		got := doJSON(t, "POST", srv.URL+"/v1/clicks", body, http.StatusOK)
		if got["accepted"] != "2" || got["duplicates"] != "1" {
			t.Fatalf("response %v", got)
		}
		rej := got["rejected"].([]any)
		if len(rej) != 1 || rej[0].(map[string]any)["index"] != float64(3) || rej[0].(map[string]any)["reason"] != "click_time is missing" {
			t.Fatalf("rejected %v", rej)
		}
		if n := len(a1.fake.received()) + len(a2.fake.received()); n != 3 {
			t.Fatalf("aggregators got %d events, want 3", n)
		}
	})
	t.Run("aggregated count", func(t *testing.T) {
		got := doJSON(t, "GET", srv.URL+"/v1/ads/ad-1/aggregated_count?from=2025-01-02T01:00:30Z&to=2025-01-02T02:00:00Z", "", http.StatusOK)
		// The fake answers count 0 and complete false: both must show.
		if got["adId"] != "ad-1" || got["count"] != "0" || got["complete"] != false ||
			got["from"] != "2025-01-02T01:00:00Z" || got["to"] != "2025-01-02T02:00:00Z" {
			t.Fatalf("response %v", got)
		}
	})
	t.Run("popular ads", func(t *testing.T) {
		got := doJSON(t, "GET", srv.URL+"/v1/ads/popular_ads?count=5&window=10", "", http.StatusOK)
		if _, ok := got["complete"]; !ok {
			t.Fatalf("complete missing: %v", got)
		}
		red.fake.mu.Lock()
		asked := red.fake.lastPopl
		red.fake.mu.Unlock()
		if asked.Count != 5 || asked.Window != 10 || asked.To.AsTime().Format("15:04:05") != "03:04:00" {
			t.Fatalf("reducer asked %v", asked)
		}
	})
	t.Run("errors map to HTTP", func(t *testing.T) {
		got := doJSON(t, "GET", srv.URL+"/v1/ads/popular_ads?window=5000", "", http.StatusBadRequest)
		if !strings.Contains(got["message"].(string), "--max-window") {
			t.Fatalf("error %v", got)
		}
		doJSON(t, "GET", srv.URL+"/v1/ads/ad-1/aggregated_count?filter=3", "", http.StatusNotFound)
		doJSON(t, "DELETE", srv.URL+"/v1/filters/4", "", http.StatusNotFound)
	})
	t.Run("filters", func(t *testing.T) {
		got := doJSON(t, "POST", srv.URL+"/v1/filters", `{"countries": ["fr"]}`, http.StatusOK)
		if got["id"] != "1" || got["countries"].([]any)[0] != "FR" {
			t.Fatalf("created %v", got)
		}
		list := doJSON(t, "GET", srv.URL+"/v1/filters", "", http.StatusOK)
		if len(list["filters"].([]any)) != 1 {
			t.Fatalf("list %v", list)
		}
		doJSON(t, "DELETE", srv.URL+"/v1/filters/1", "", http.StatusOK)
	})
}
