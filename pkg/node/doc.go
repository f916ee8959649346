// Package node assembles one cluster process: it connects to etcd, binds
// the gRPC and HTTP listeners, builds the component (router, aggregator or
// reducer), registers it in etcd once it serves, and takes it down in the
// reverse order. The binaries in cmd/ and `adclick dev` (several nodes in one
// process) both start nodes through this package, so there is one way to run
// each role.
package node
