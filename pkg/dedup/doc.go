// Package dedup owns the memory of which click ids were already counted, so
// a retried click is counted once. Ids are kept per event minute (a retry
// carries the same click_time) and a whole minute is forgotten once it falls
// behind the late horizon, when clicks of that minute are rejected anyway.
// The set is exact: a 64-bit hash indexes ids stored in a per-minute byte
// arena and every hash hit is confirmed against the stored bytes, with true
// collisions kept aside. Memory per remembered id is about 1+len(id) bytes of
// arena plus 19 to 38 bytes of index (a swiss-table slot of 16 bytes at a
// load between 7/16 and 7/8): measured by BenchmarkDedup at about 50 to 75
// bytes per 36-byte UUID, with no Go pointer per id for the GC to scan. The
// aggregator keeps only open minutes' ids (and late ones until committed)
// here; a closed minute's ids are on disk (package aggstate).
package dedup
