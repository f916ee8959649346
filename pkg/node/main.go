package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/adclick/adclick/pkg/aggregator"
	"github.com/adclick/adclick/pkg/flagenv"
	"github.com/adclick/adclick/pkg/reducer"
	"github.com/adclick/adclick/pkg/router"
)

// Stopper is a running node.
type Stopper interface {
	Stop(ctx context.Context) error
	// Err delivers an error after which the node cannot go on.
	Err() <-chan error
}

// Main runs one server role as a process: it parses flags (with
// ADCLICK_* environment fallbacks), starts the node, and stops it cleanly on
// SIGINT or SIGTERM. It returns the process exit code.
func Main(role Role, args []string) int {
	fs := flag.NewFlagSet(string(role), flag.ContinueOnError)
	var c Common
	c.RegisterFlags(fs, role)
	logLevel := LogLevelFlag(fs)
	var start func(Env) (Stopper, error)
	switch role {
	case RoleRouter:
		var cfg router.Config
		cfg.RegisterFlags(fs)
		start = func(env Env) (Stopper, error) { return StartRouter(c, cfg, env) }
	case RoleAggregator:
		var cfg aggregator.Config
		cfg.RegisterFlags(fs)
		start = func(env Env) (Stopper, error) { return StartAggregator(c, cfg, env) }
	case RoleReducer:
		var cfg reducer.Config
		cfg.RegisterFlags(fs)
		start = func(env Env) (Stopper, error) { return StartReducer(c, cfg, env) }
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 2
	}
	// Every line of the process says which node it is, once: components
	// add only their "component".
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})).With("role", string(role))
	if role != RoleRouter {
		log = log.With("node", c.NodeID)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	n, err := start(Env{Log: log})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	code := 0
	select {
	case <-ctx.Done():
	case err := <-n.Err():
		log.Error("stopping after a fatal error", "err", err)
		code = 1
	}
	log.Info("stopping", "timeout", c.ShutdownTimeout)
	sctx, scancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer scancel()
	if err := n.Stop(sctx); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	log.Info("stopped")
	return code
}

// LogLevelFlag registers --log-level.
func LogLevelFlag(fs *flag.FlagSet) *slog.LevelVar {
	lv := new(slog.LevelVar)
	fs.Func("log-level", "debug, info, warn or error (default info)", func(s string) error {
		return lv.UnmarshalText([]byte(s))
	})
	return lv
}
