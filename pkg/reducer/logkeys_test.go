package reducer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of loggers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogLinesDoNotRepeatKeys runs a reducer under a logger that already
// names the node, as node.Main and the dev cluster give it, and checks that
// no line (its own, or Pebble's routed through it) repeats a key.
func TestLogLinesDoNotRepeatKeys(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "reducer-1")
	e := newEnv(t, 60)
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RetainMinutes = "reducer-1", e.dir, 60
	r, err := Open(cfg, Deps{Clock: e.clk, Aggregators: e.members, Ring: e.ring, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, "agg-1", 1, 1, partial(1, m0, true, cnt(0, "a", 1)))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		lines++
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if seen[k.(string)] {
				t.Fatalf("key %q repeated in %s", k, sc.Text())
			}
			seen[k.(string)] = true
		}
	}
	if lines == 0 {
		t.Fatal("the reducer logged nothing")
	}
}
