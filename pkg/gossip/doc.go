// Package gossip owns this node's place in the memberlist (SWIM) gossip
// cluster: it binds the gossip port, joins seeds, detects dead peers in about
// a second on a LAN, and spreads each node's role, gRPC address and current
// load (clicks/s) to the others. Gossip is advisory: it says who answers
// probes right now and how busy they are, so routers can route around a dead
// aggregator and the hot-ad decision can use current load, but etcd stays the
// source of truth for membership, ring eras and grants — a node gossip has
// never heard of, or believes dead, is still a member until etcd says
// otherwise. A node is named role + "/" + id in the gossip cluster, so one
// node id has one gossip identity across restarts and address changes.
package gossip
