package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endless is a request body of n bytes that counts how much was read of it.
type endless struct {
	left int64
	read *atomic.Int64
}

func (e *endless) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), e.left)
	for i := range p[:n] {
		p[i] = 'x'
	}
	e.left -= n
	e.read.Add(n)
	return int(n), nil
}

// TestHandleBoundsBody posts bodies over --max-msg-bytes to a handler
// mounted with Handle, announced and chunked: each must be answered 413
// with a message naming the flag, without the handler running and without
// the body being read to its end.
func TestHandleBoundsBody(t *testing.T) {
	const max = 64 << 10
	s, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", MaxMsgBytes: max}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	s.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		served.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	s.Serve()
	t.Cleanup(func() { s.Stop(t.Context()) })
	url := "http://" + s.HTTPAddr() + "/v1/clicks"

	post := func(body io.Reader, length int64) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", url, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length // -1: chunked
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const huge = 512 << 20
	for _, tc := range []struct {
		name   string
		length int64
	}{{"announced", huge}, {"chunked", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			var read atomic.Int64
			start := time.Now()
			code, body := post(&endless{left: huge, read: &read}, tc.length)
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if code != http.StatusRequestEntityTooLarge || json.Unmarshal([]byte(body), &e) != nil || e.Code != 8 ||
				!strings.Contains(e.Message, "--max-msg-bytes") {
				t.Fatalf("HTTP %d %s; want 413 with RESOURCE_EXHAUSTED (8) naming --max-msg-bytes", code, body)
			}
			if n := read.Load(); n > huge/8 {
				t.Fatalf("%d of %d bytes were read (in %v) before the answer", n, huge, time.Since(start))
			}
		})
	}
	if served.Load() != 0 {
		t.Fatalf("the handler ran %d times for bodies over the limit", served.Load())
	}
	t.Run("within the limit", func(t *testing.T) {
		for _, length := range []int64{max, -1} {
			var read atomic.Int64
			if code, body := post(&endless{left: max, read: &read}, length); code != http.StatusOK {
				t.Fatalf("length %d: HTTP %d %s", length, code, body)
			}
		}
		if served.Load() != 2 {
			t.Fatalf("handler ran %d times, want 2", served.Load())
		}
	})
}
