package dedup

import "syscall"

// adviseHuge asks for transparent huge pages behind b (honored when
// /sys/kernel/mm/transparent_hugepage/enabled is "madvise" or "always").
func adviseHuge(b []byte) { _ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) }
