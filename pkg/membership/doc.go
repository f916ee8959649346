// Package membership registers cluster nodes in etcd under a lease and
// watches who is registered. A node's key lives exactly as long as its lease;
// a node whose lease is lost (etcd outage, long pause) registers again with
// a new lease, so the watched set converges to the nodes that are alive.
package membership
