// Package store owns the reducer's durable state in an embedded Pebble
// database: final per-minute click counts, kept twice (ad-major, so the count
// of one ad over any minute range is one iterator scan, and minute-major, so
// the most recent minutes load into memory with one scan per filter), and one
// meta record per aggregator (incarnation, high-water sequence, watermark).
// Counts are Pebble merge operands summed by a merge operator, so applying a
// partial never reads. The invariant: every Batch is committed atomically and
// synced, so the counts of a partial and the high-water mark that says it was
// applied are durable together or not at all. DeleteBefore removes the
// minutes that left the reducer's retention from both key spaces.
package store
