// Package topn owns the reducer's in-memory view of recent minutes: for each
// (filter, minute) the click count of every ad, and the exact queries over
// minute windows: the count of one ad, and the N ads with the most clicks.
//
// Top uses the Threshold Algorithm (Fagin, Lotem, Naor 2001). Each minute
// keeps, besides a hash map ad -> count (random access), a list of its ads
// sorted by count, descending (sorted access), built lazily on the first
// query that needs it. Top reads the lists of the window's minutes in
// parallel, depth by depth; every ad met is summed exactly over the window
// by random access and offered to a size-N heap; after depth d no unseen ad
// can total more than T = sum of the counts at depth d, so the scan stops as
// soon as the N-th best total is strictly greater than T (strictly, because
// an unseen ad with an equal total could win the tie on ad id). The answer is
// therefore exact, and the work is proportional to how deep the window's
// leaders sit in the per-minute lists (a few hundred entries for skewed
// traffic), not to the number of ads. A sorted list is not rebuilt on every
// change: counts only grow, so a stale list still bounds every ad that has
// not changed since it was built. Ads changed since (the "delta") are
// evaluated exactly before the scan; once a minute's delta reaches mergeAt
// ads, a query merges them into a new list in one linear pass (their old
// entries stay as harmless lower duplicates), and a list with too many such
// duplicates is rebuilt from scratch. Lists are immutable once published, so
// concurrent queries read consistent snapshots. Running sums over sliding windows were rejected because queries
// choose both the window length and its end; hourly pre-summed blocks would
// cut the lists of long windows and are left for later.
//
// Counts are stored as uint32 with a side map for the (unlikely) counts that
// do not fit, and ad ids are interned to uint32 (names.go: the ads' bytes
// in chunks, maps of integers only, nothing for the GC to trace per ad),
// which keeps an entry near 20 bytes of map plus 8 of sorted list
// (entryBytes, measured).
package topn
