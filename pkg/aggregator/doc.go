// Package aggregator owns one aggregator node's counting service: Forward
// dedups forwarded clicks by click_id and counts them per (ad, minute,
// filter) in event time, minutes close on the clock, and the outbox delivers
// the resulting partials to every registered reducer in sequence order.
//
// Invariants: a click is either counted and remembered or neither (dedup and
// counting happen under one lock, once per batch); partials of one
// incarnation carry sequences 1, 2, 3, ... without gaps and reach each
// reducer in that order, retried with capped backoff until acknowledged and
// never skipped; a partial leaves the outbox only when every registered
// reducer has acknowledged it (with no reducer registered, everything is
// kept, up to --max-outbox partials, beyond which Forward answers
// RESOURCE_EXHAUSTED).
//
// What reducers see: a minute with more than --partial-max-counts counts is
// sent as several partials, only the last with closes_minute, so
// non-closing partials of a minute may come before its closing one; at
// shutdown (Flush) open minutes are sent as non-closing partials, never
// closed early. A reducer that misses earlier partials answers
// FAILED_PRECONDITION with an ApplyResponse in the status details; the
// aggregator then resends from its applied_through+1. An OK answer with an
// applied_through below what was sent does the same.
//
// Limits: a reducer that registers later starts from the oldest partial
// still retained, so it cannot get partials every reducer registered before
// it had already acknowledged (and neither can a reducer that lost its
// state after they were dropped); it logs an error and counts deliver
// errors until an operator intervenes. Counts and dedup state live in
// memory only: a restart loses what was not yet delivered (durability is
// separate work; Config.DataDir is reserved for it).
package aggregator
