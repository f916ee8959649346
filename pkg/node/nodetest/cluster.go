// Package nodetest starts in-process clusters for tests and stops them when
// the test ends.
package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/node"
)

// StartCluster starts cfg and stops it in t's cleanup, failing the test if
// the stop reports an error.
func StartCluster(t testing.TB, cfg node.ClusterConfig, env node.Env) *node.Cluster {
	t.Helper()
	cl, err := node.StartCluster(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := cl.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return cl
}
