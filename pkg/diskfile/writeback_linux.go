package diskfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// WriteBack writes the file range to disk and waits for it
// (sync_file_range), so dirty pages never pile up into a burst that a
// later fsync, or the write-ahead log's, must wait behind. It does not
// make metadata durable: a final fsync still does.
func WriteBack(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}
