// Package router owns the stateless front of the cluster: the public gRPC
// services (ingest, queries, filters) and their REST gateway. It validates
// clicks, routes each valid click by ad_id on the aggregator ring, forwards
// one batch per owning aggregator in parallel, and acknowledges a request
// only after every owner has answered for its events, so an acknowledged
// click is durable and a failed request can be retried whole (aggregators
// dedup by click_id). Queries are checked and completed with defaults here,
// then answered by a healthy reducer.
package router
