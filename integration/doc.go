// Package integration holds the tests that run a whole cluster: an
// in-process cluster on real loopback sockets with a real embedded etcd
// (replay of the TalkingData sample against independently computed ground
// truth), and the four binaries run as separate OS processes.
package integration
