// Package etcdtest starts a real embedded etcd for a test (package
// etcdembed) and cleans it up: the one way tests get an etcd.
package etcdtest

import (
	"log/slog"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/etcdembed"
)

// Start runs an embedded etcd on a free loopback port with its data in a
// temporary directory, and returns it with a client; both are closed at
// the end of the test.
func Start(t testing.TB) (*etcdembed.Server, *clientv3.Client) {
	t.Helper()
	srv, err := etcdembed.Start(t.TempDir(), "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return srv, cli
}

// Client is Start for tests that need only the client.
func Client(t testing.TB) *clientv3.Client {
	t.Helper()
	_, cli := Start(t)
	return cli
}
