// Package reducer owns the merge of aggregator partials into final
// per-minute counts and answers the count and top-N queries routers ask.
// Apply reads its requests in place, from the bytes gRPC received
// (applywire.go): a closing minute arrives as thousands of requests of
// 16k counts, which as messages were a count and a string each to collect.
// Apply is idempotent per (aggregator, incarnation, sequence): the counts of
// a request, the aggregator's new high-water sequence and its watermark are
// committed in one synced Pebble batch (package store) before memory is
// updated and before the answer, so a resend after any crash is a no-op and
// a gap is refused. The last RetainMinutes minutes (fewer when their counts
// would take more than RetainBytes: the oldest leave first) are also held in memory
// (package topn, Threshold Algorithm over per-minute sorted lists, see its
// doc) for exact, fast queries; the invariant is that every minute at or
// after the memory floor is in memory exactly as in Pebble, and windows that
// reach before the floor are answered from Pebble (exact, slower). A minute
// is complete when, by the ring history, every aggregator that owned it
// (drained ones included; minutes before an aggregator's FirstMinute were
// never open there) has closed it, in its registered incarnation.
//
// Retention: minutes older than Config.Retention are deleted from Pebble by
// Run (at start, then hourly) and counts of such minutes arriving in
// partials are dropped (their sequence is still applied), so the store does
// not grow without end; queries over them answer 0.
package reducer
