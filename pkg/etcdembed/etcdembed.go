// Package etcdembed runs a single-node etcd server inside the process, for
// `adclick dev`, `adclick etcd` and tests. It is a real etcd server (the
// etcd project's embed package), not a fake.
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	// Endpoint is the client URL, e.g. http://127.0.0.1:2379.
	Endpoint string
}

// Start runs etcd with its data in dir, serving clients on addr
// (host:port; port 0 picks a free one).
//
// A free port can only be found by listening on port 0 and closing again,
// and another process may bind it before etcd does: when etcd then fails to
// bind a port picked here, Start picks again (a few times).
func Start(dir, addr string, log *slog.Logger) (*Server, error) {
	var err error
	for range 5 {
		var s *Server
		s, err = start(dir, addr, log)
		if !takenMeanwhile(err, addr) {
			return s, err
		}
		log.Warn("embedded etcd: a port picked free was taken before etcd bound it; picking again", "err", err)
	}
	return nil, err
}

// takenMeanwhile reports whether err is etcd failing to bind a port that
// start picked itself (not the one the caller asked for). Ports are
// compared, not addresses: "localhost:2379" fails as 127.0.0.1:2379.
func takenMeanwhile(err error, asked string) bool {
	var op *net.OpError
	if !errors.As(err, &op) || !errors.Is(err, syscall.EADDRINUSE) || op.Addr == nil {
		return false
	}
	_, port, _ := net.SplitHostPort(asked)
	_, failed, _ := net.SplitHostPort(op.Addr.String())
	return port == "0" || failed != port
}

// start is one try of Start.
func start(dir, addr string, log *slog.Logger) (*Server, error) {
	clientAddr, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	peerAddr, err := resolve("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "adclick"
	cfg.Dir = dir
	cu, _ := url.Parse("http://" + clientAddr)
	pu, _ := url.Parse("http://" + peerAddr)
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Keep history bounded: watchers re-list on compaction.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "10m"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 30s")
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	log.Info("embedded etcd ready", "endpoint", cu.String(), "dir", dir)
	return &Server{etcd: e, Endpoint: cu.String()}, nil
}

// Client returns a new client of the server.
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the server.
func (s *Server) Close() {
	s.etcd.Close()
}

// resolve turns host:0 into host:<free port>.
func resolve(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("etcd address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitReady polls until the server answers a read or ctx ends.
func WaitReady(ctx context.Context, cli *clientv3.Client) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not reachable: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
