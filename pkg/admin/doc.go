// Package admin is what `adclick admin` does: it reads the cluster's state
// from etcd (members, liveness, the ring history) and from the nodes (the
// gossip view with liveness and load, served on each node's /gossip), and
// changes the ring history the only ways it may change: a drain appended at
// a future minute, a removal of a drained member. Every refusal says what
// to do instead.
package admin
