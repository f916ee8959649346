// Package dedup owns the memory of which click ids were already counted, so
// a retried click is counted once. Ids are kept per event minute (a retry
// carries the same click_time) and a whole minute is forgotten once it falls
// behind the late horizon, when clicks of that minute are rejected anyway.
//
// Where a click is deduped: Set (dedup.go) holds the open minutes, a flat
// table per minute of 8-byte slots (32-bit hash tag, arena location) over
// an arena of 1 MiB chunks holding the ids; every tag hit is confirmed
// against the stored bytes, so the set is exact. With NewSpilling, full
// chunks are written to the minute's file by a goroutine per minute and
// dropped from memory (spill.go), so memory per id is its slot (~13 to 26
// bytes at the table's load) and a hit on a spilled id reads the file.
// When a minute closes, Frozen.WriteFile finishes that file with the index
// (file.go): the minute's id file is its in-memory layout, written without
// per-id work, and File.Has answers lookups of late clicks with preads.
// Measured by BenchmarkDedup (about 140 ns an Add) and TestMemoryPerID.
package dedup
