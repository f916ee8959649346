package diskfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

func openDirect(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		return nil, ErrNoDirect // the file system has no O_DIRECT (tmpfs)
	}
	if err != nil {
		return nil, fmt.Errorf("diskfile: %w", err)
	}
	return f, nil
}
