// Package ring owns where a click is counted: which aggregator owns an
// (ad, minute). A Ring (ring.go) is the consistent-hash ring with bounded
// loads (github.com/buraksezer/consistent) of one set of aggregator ids: the
// same ids always give the same owner, and one more or one less moves only
// about 1/n of the ads. The History (history.go) is the append-only record
// of eras (from minute M, the ring of these aggregators) and drains, kept
// as one etcd value (etcd.go) changed only by compare-and-swap. Its
// invariant: every change takes effect at a minute boundary at least Lead
// ahead of its proposal (the minute of future clicks, the view TTL, clock
// skew and a commit margin), so no click of that minute can have been
// accepted yet, and nothing ever changes the owner of a past or current
// minute. Versions (versions.go) routes a click by the era of its minute
// and follows hand-overs of drained aggregators to their heirs. A Watcher
// follows the history and tells whether its view was confirmed within the
// TTL; aggregators act only on a fresh view.
package ring
