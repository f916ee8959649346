// Package etcdkv holds the etcd key layout of the cluster and a prefix
// cache: an initial Get of a prefix followed by a Watch from the next
// revision, re-listing when the watch is compacted or broken. Every watcher
// of cluster state (membership, filters) builds on it, so they all share the
// same recovery rules.
package etcdkv

// Prefix is the root of every key the cluster writes.
const Prefix = "/adclick/v1/"
