// Package loadgen is the load generator behind `adclick load`: it streams
// realistic clicks (Zipf-distributed ads, weighted countries, IPv4 and IPv6
// addresses, users) into a router over IngestStream, resends some of them
// (duplicates) and holds some back until their minute has closed (late
// clicks), and then checks the cluster's answers against its own exact
// bookkeeping. The invariant it keeps: Expected holds, for every (ad,
// minute), exactly the number of distinct clicks the router acknowledged, so
// any difference reported by the query API is a counting error of the
// cluster, never of the generator.
package loadgen
