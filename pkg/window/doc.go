// Package window owns per-minute click counting in event time and the
// closing of minutes. A Counter closes minutes strictly in order from its
// first minute, never skipping one, each exactly once, when the clock passes
// the minute's end plus the allowed lateness; every closed minute yields
// exactly one closing Partial (even when it counted nothing), and a click
// for a minute already closed (or before the first minute) is kept as a
// correction that is handed out separately. Every counted click is in
// exactly one Partial handed out, so summing them gives the exact counts.
// The Counter is driven by the time it is given, never by a clock of its
// own, so its behavior is a pure function of its inputs.
package window
