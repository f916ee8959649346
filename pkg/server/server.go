// Package server runs the two listeners every adclick node has: a gRPC
// server (with the standard health service and server reflection, so
// grpcurl works without proto files) and an HTTP server for /metrics,
// /healthz, optional /debug/pprof and, on the router, the REST API.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// Config is what a node's listeners need.
type Config struct {
	GRPCAddr    string
	HTTPAddr    string
	MaxMsgBytes int  // largest gRPC message, and HTTP request body of Handle's handlers, accepted
	Pprof       bool // serve /debug/pprof on the HTTP address
}

// Server owns a node's gRPC and HTTP listeners.
type Server struct {
	GRPC     *grpc.Server
	Health   *health.Server
	Registry *prometheus.Registry
	mux      *http.ServeMux
	grpcLis  net.Listener
	httpLis  net.Listener
	http     *http.Server
	log      *slog.Logger
	maxBody  int64 // bytes of an HTTP request body Handle's handlers accept; 0: any
}

// New binds both addresses (port 0 picks a free port) and creates the
// servers; register services on GRPC, then call Serve.
func New(cfg Config, log *slog.Logger, opts ...grpc.ServerOption) (*Server, error) {
	gl, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen gRPC %s: %w", cfg.GRPCAddr, err)
	}
	hl, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		gl.Close()
		return nil, fmt.Errorf("listen HTTP %s: %w", cfg.HTTPAddr, err)
	}
	opts = append(opts, grpcbuf.ServerOption())
	if cfg.MaxMsgBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(cfg.MaxMsgBytes), grpc.MaxSendMsgSize(cfg.MaxMsgBytes))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{
		GRPC:     grpc.NewServer(opts...),
		Health:   health.NewServer(),
		Registry: reg,
		mux:      http.NewServeMux(),
		grpcLis:  gl,
		httpLis:  hl,
		log:      log,
		maxBody:  int64(cfg.MaxMsgBytes),
	}
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.Health.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if cfg.Pprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Handle adds an HTTP handler (the router's REST API is mounted at "/").
// Request bodies are bounded by Config.MaxMsgBytes, as gRPC messages are
// (see limitBody).
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, limitBody(h, s.maxBody))
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Serve starts serving in the background and marks the node SERVING.
func (s *Server) Serve() {
	go func() {
		if err := s.GRPC.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	go func() {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", "err", err)
		}
	}()
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
}

// Stop marks the node NOT_SERVING, finishes in-flight calls until ctx ends,
// then closes everything.
func (s *Server) Stop(ctx context.Context) {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.GRPC.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.http.Shutdown(sctx)
}
