package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/adclick/adclick/pkg/etcdembed"
	"github.com/adclick/adclick/pkg/flagenv"
)

func runEtcd(args []string) int {
	fs := flag.NewFlagSet("adclick etcd", flag.ContinueOnError)
	dir := fs.String("data-dir", "./data/etcd", "etcd data directory")
	addr := fs.String("addr", "127.0.0.1:2379", "client address to serve")
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	s, err := etcdembed.Start(*dir, *addr, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "adclick etcd: %v\n", err)
		return 1
	}
	fmt.Printf("adclick etcd: serving %s (data in %s); stop with Ctrl-C\n", s.Endpoint, *dir)
	select {
	case <-ctx.Done():
	case err := <-s.Err():
		fmt.Fprintf(os.Stderr, "adclick etcd: %v\n", err)
		s.Close()
		return 1
	}
	s.Close()
	fmt.Println("adclick etcd: stopped")
	return 0
}
