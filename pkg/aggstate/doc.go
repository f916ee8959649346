// Package aggstate owns an aggregator's durable state: a local Pebble
// database with the meta record (incarnation and first minute, fixed at
// the first start; next sequence, next minute to close and late horizon),
// the outbox of partials by sequence (a closing minute's in an outbox
// file it names, a correction's as keys), the list of closed minutes' id
// files (written by package dedup into the ids directory) and the click ids of
// late clicks and handed-over ones, keyed minute|click_id (bloom filters
// make the usual negative lookup cheap). Invariant: a Batch commits all it
// holds at once and synced, so a minute's partials, the id file it names
// and the meta that says the minute is closed are durable together or not
// at all; an id or outbox file no commit names is deleted at Open, and an
// outbox file's name is deleted, synced, before the file.
package aggstate
