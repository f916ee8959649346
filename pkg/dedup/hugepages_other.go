//go:build unix && !linux

package dedup

func adviseHuge([]byte) {}
