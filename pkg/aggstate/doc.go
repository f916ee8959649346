// Package aggstate owns an aggregator's durable state in a local Pebble
// database: the meta record (incarnation and first minute, fixed at the
// first start; next sequence, next minute to close and late horizon), the
// outbox of partials by sequence, and the click ids of closed minutes keyed
// minute|click_id (bloom filters make the usual negative lookup of a late
// click cheap). Invariant: a Batch commits all it holds at once and synced,
// so a minute's partials, its click ids and the meta that says it is closed
// are durable together or not at all.
package aggstate
