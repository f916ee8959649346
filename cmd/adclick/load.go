package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/adclick/adclick/pkg/flagenv"
	"github.com/adclick/adclick/pkg/loadgen"
	"github.com/adclick/adclick/pkg/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// runLoad is `adclick load`: progress on stderr each second, one JSON
// object as the last line on stdout; exit 0 when verified (or not asked to
// verify), 1 otherwise.
func runLoad(args []string) int {
	fs := flag.NewFlagSet("adclick load", flag.ContinueOnError)
	cfg := loadgen.DefaultConfig()
	cfg.RegisterFlags(fs)
	logLevel := node.LogLevelFlag(fs)
	series := fs.String("series", "", "write every second of the timed phase to this CSV file (second, acked/s, sent/s, ack p50 ms, ack p99 ms)")
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "adclick load: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	// One connection per stream: the server reads each connection on one
	// goroutine, so several spread the work over its cores.
	var conns []grpc.ClientConnInterface
	for range cfg.Concurrency {
		conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "adclick load: connect to %s: %v\n", cfg.Target, err)
			return 1
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	res, err := loadgen.Run(ctx, cfg, conns, loadgen.Deps{Log: log, Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "adclick load: %v\n", err)
		return 1
	}
	if *series != "" {
		if err := writeSeries(*series, res.Series); err != nil {
			fmt.Fprintf(os.Stderr, "adclick load: --series: %v\n", err)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	if cfg.Verify && !res.Verified {
		return 1
	}
	return 0
}

func writeSeries(path string, series []loadgen.Second) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"second", "acked_per_s", "sent_per_s", "ack_p50_ms", "ack_p99_ms"})
	for _, s := range series {
		_ = w.Write([]string{fmt.Sprint(s.At), fmt.Sprint(s.AckedPerS), fmt.Sprint(s.SentPerS), fmt.Sprint(s.AckP50Ms), fmt.Sprint(s.AckP99Ms)})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}
