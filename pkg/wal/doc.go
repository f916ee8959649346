// Package wal owns the aggregator's write-ahead log: records appended to
// segmented files under one directory, acknowledged only once fsynced.
// Invariants: a record's Wait returns nil only after the bytes of that
// record (and of every record appended before it) were written and the
// file was fsynced; many appenders share one fsync (group commit: while one
// fsync runs, the next group gathers); a failed write or fsync fails the log
// for good, so nothing appended later is ever acknowledged. Each record is a
// 4-byte little-endian payload length and a CRC-32C over length and payload,
// then the payload. At Open, a bad record at the end of the last segment
// (torn by a crash, garbage or a flipped byte with nothing valid after it)
// is reported and cut off; a bad record followed by a valid one, or in a
// segment that is not the last, is corruption inside the log and stops Open
// with the file and offset. Limit: after a power loss that persisted a
// write's pages out of order, the unsynced tail can look like that and needs
// an operator (truncate the named file at the named offset).
package wal
