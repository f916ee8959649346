package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/adclick/adclick/pkg/flagenv"
	"github.com/adclick/adclick/pkg/node"
	"github.com/adclick/adclick/pkg/reducer"
)

// devMemoryLimit is adclick dev's soft limit of the Go heap unless
// GOMEMLIMIT is set. What is live at full speed is ~300 MB (the open
// minutes' counts, the reducer's top-N index); the id indexes (outside the
// heap) take ~500 MB more at the end of a minute at 600k clicks/s. At 768
// MiB the peak was 1.83 GB, at 512 MiB 1.63 GB, with the same throughput
// (590k clicks/s, make bench's full-speed run, 2 cores).
const devMemoryLimit = 512 << 20

// devGCPercent is adclick dev's GOGC unless GOGC is set (see runDev).
const devGCPercent = 400

func runDev(args []string) int {
	fs := flag.NewFlagSet("adclick dev", flag.ContinueOnError)
	var cfg node.ClusterConfig
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:7070", "router gRPC address (ingest, queries, filters)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "router HTTP address (REST API, /metrics)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory holding etcd's and every node's data")
	fs.StringVar(&cfg.EtcdAddr, "etcd-addr", "127.0.0.1:2379", "embedded etcd client address")
	fs.IntVar(&cfg.Aggregators, "aggregators", 2, "number of aggregators")
	fs.IntVar(&cfg.Reducers, "reducers", 1, "number of reducers")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof on every node's HTTP address")
	cfg.Aggregator.RegisterFlags(fs)
	cfg.Reducer.RegisterFlags(fs)
	// The reducer's recent minutes share the dev process's heap limit
	// with everything else: a smaller default.
	retain := fs.Lookup("retain-bytes")
	retain.DefValue = strconv.Itoa(reducer.DevRetainBytes)
	_ = retain.Value.Set(retain.DefValue)
	cfg.Router.RegisterFlags(fs)
	logLevel := node.LogLevelFlag(fs)
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	if os.Getenv("GOMEMLIMIT") == "" {
		// Every node shares this process: without a soft limit the heap
		// may grow to twice what is live (GOGC=100) at a minute close.
		// The open minutes' id indexes live outside it (--max-open-id-bytes).
		debug.SetMemoryLimit(devMemoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		// Under the limit, collect when the heap is 5x what is live, not
		// 2x: at full speed the limit decides anyway, and at lower rates
		// GC cycles (each taking one of the two CPUs for 15-20 ms) are 4x
		// rarer. 75 s at 50k clicks/s, ack p99: 14-17 ms with GOGC=100,
		// 14 ms with 200, 10.9-11.9 ms with 400, 16 ms with GC off until
		// the limit. Full speed, 180 s: peak RSS 1.06 GB (1.2-1.3 GB
		// before, with GOGC=100).
		debug.SetGCPercent(devGCPercent)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	cl, err := node.StartCluster(cfg, node.Env{Log: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "adclick dev: %v\n", err)
		return 1
	}
	fmt.Printf("adclick dev: cluster running (data in %s)\n", cfg.DataDir)
	fmt.Printf("  router gRPC   %s   (grpcurl -plaintext %s list)\n", cl.Router.GRPCAddr(), cl.Router.GRPCAddr())
	fmt.Printf("  router REST   http://%s/v1/...   metrics http://%s/metrics\n", cl.Router.HTTPAddr(), cl.Router.HTTPAddr())
	fmt.Printf("  etcd          %s\n", cl.Etcd.Endpoint)
	for _, a := range cl.Aggregators {
		fmt.Printf("  aggregator    grpc %s  http %s\n", a.GRPCAddr(), a.HTTPAddr())
	}
	for _, r := range cl.Reducers {
		fmt.Printf("  reducer       grpc %s  http %s\n", r.GRPCAddr(), r.HTTPAddr())
	}
	fmt.Println("Stop with Ctrl-C.")
	code := 0
	select {
	case <-ctx.Done():
	case err := <-cl.Err():
		fmt.Fprintf(os.Stderr, "adclick dev: a node failed: %v\n", err)
		code = 1
	}
	fmt.Println("adclick dev: stopping")
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := cl.Stop(sctx); err != nil {
		fmt.Fprintf(os.Stderr, "adclick dev: stopped with error: %v\n", err)
		return 1
	}
	fmt.Println("adclick dev: stopped")
	return code
}
