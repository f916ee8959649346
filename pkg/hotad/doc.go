// Package hotad owns hot-ad splitting's moving parts outside the ring: the
// heavy-hitter Detector an aggregator feeds under its batch lock, the
// Tracker that decides with hysteresis which ads are hot, and the Granter
// that holds an ad's lease in etcd (/adclick/v1/hot/<ad>) and appends and
// ends its grant in the ring history. The invariant it keeps: a grant is
// only ever appended or ended through ring.Update, so it takes effect, and
// ends, at a minute no accepted click can belong to yet; an auto grant
// whose lease is gone (its holder cooled or died) is ended by whichever
// aggregator sees it first.
package hotad
