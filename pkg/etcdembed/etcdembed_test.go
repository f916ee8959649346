package etcdembed

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartPutGet(t *testing.T) {
	s, err := Start(t.TempDir(), "127.0.0.1:0", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", resp, err)
	}
}

// An address the caller names that is in use is an error to report, not
// to retry; a port Start picked itself and lost meanwhile is picked again.
func TestAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().String()
	_, err = Start(t.TempDir(), busy, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), busy) {
		t.Fatalf("Start on %s in use: %v; want an error naming it", busy, err)
	}
	if takenMeanwhile(err, busy) {
		t.Errorf("the caller's own address in use counted as a picked port taken meanwhile: %v", err)
	}
	_, port, _ := net.SplitHostPort(busy)
	if takenMeanwhile(err, "localhost:"+port) {
		t.Errorf("the caller's own port, named by host name, counted as a picked port taken meanwhile: %v", err)
	}
	if !takenMeanwhile(err, "127.0.0.1:0") {
		t.Errorf("a picked client port taken meanwhile not recognised: %v", err)
	}
	if !takenMeanwhile(err, "127.0.0.1:1") {
		t.Errorf("the picked peer port taken meanwhile not recognised: %v", err)
	}
	if takenMeanwhile(errors.New("other"), "127.0.0.1:0") {
		t.Error("any error counted as a port taken meanwhile")
	}
}
