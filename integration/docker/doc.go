// Package docker tests adclick as operators run it: the images of `make
// images` started by deploy/compose/docker-compose.yaml as eight containers
// (etcd, two routers, three aggregators, two reducers) on a private Docker
// network, driven from the host by a client that resends every
// unacknowledged click. Containers are killed, cut off the network,
// restarted one by one and drained away, and every reducer must still hold
// exactly the clicks the client generated.
//
// The test runs only with ADCLICK_TEST_DOCKER=1 (`make test-docker`, which
// builds the images first); it never pulls an image.
package docker
