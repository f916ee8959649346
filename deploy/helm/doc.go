// Package chart holds the tests of the Helm chart in adclick/: it is
// rendered with helm template over every ci/*-values.yaml, each object is
// decoded strictly into its Kubernetes API type, and the objects are
// checked against each other (selectors, ports, flags, probes, the drain's
// grace period). The dashboard's and alerts' queries are checked against
// the metric names the code registers, and the chart's and the compose
// file's --flags against the flags the code defines.
package chart
