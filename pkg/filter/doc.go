// Package filter owns click filters: their validation, the matching of a
// click against them (countries case-insensitive, ips exact or CIDR, user
// ids exact), and their storage in etcd. A filter counts from its
// EffectiveFrom minute on; that minute is chosen in the future far enough
// that every aggregator sees the filter before any click of that minute can
// arrive (clicks more than one minute in the future are rejected).
package filter
