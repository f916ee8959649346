//go:build !linux

package diskfile

import "os"

func openDirect(string) (*os.File, error) { return nil, ErrNoDirect }
