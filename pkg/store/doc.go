// Package store owns the reducer's durable state in an embedded Pebble
// database: final per-minute click counts, minute-major (a minute's counts
// of a filter are one contiguous run: the most recent minutes load into
// memory with one scan per filter, a top-N over older minutes is one scan,
// the count of one ad is one seek per stored minute), and one meta record
// per aggregator (incarnation, high-water sequence, watermark).
// Counts are Pebble merge operands summed by a merge operator, so applying a
// partial never reads. The invariant: every Batch is committed atomically and
// synced, so the counts of a partial and the high-water mark that says it was
// applied are durable together or not at all. DeleteBefore removes the
// minutes that left the reducer's retention (and the ad-major copies older
// versions also wrote, keys.go).
package store
