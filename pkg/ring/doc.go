// Package ring owns the mapping of ad ids to aggregators: a consistent-hash
// ring with bounded loads (github.com/buraksezer/consistent) over the
// registered aggregators, keyed by member ID. A Ring is an immutable
// snapshot: the same members always give the same owner for an ad, and a
// membership change builds a new Ring, which moves only about 1/n of the ads.
package ring
