package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the size of a record header: payload length and checksum.
const HeaderSize = 8

// MaxRecordBytes bounds one record's payload; a longer length is corruption.
const MaxRecordBytes = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding errors. ErrTruncated: the buffer ends inside the record.
// ErrCorrupt: the header or checksum is wrong.
var (
	ErrTruncated = errors.New("wal: record truncated")
	ErrCorrupt   = errors.New("wal: record corrupt")
)

// AppendRecord appends payload framed as one record to dst.
func AppendRecord(dst, payload []byte) []byte {
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, h[:4])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// DecodeRecord decodes the record at the start of buf and returns its
// payload (a sub-slice of buf) and its encoded size. An empty payload is
// never written, so a zero length (as in a zero-filled tail) is corrupt.
func DecodeRecord(buf []byte) (payload []byte, n int, err error) {
	if len(buf) < HeaderSize {
		return nil, 0, ErrTruncated
	}
	size := binary.LittleEndian.Uint32(buf[:4])
	if size == 0 || size > MaxRecordBytes {
		return nil, 0, ErrCorrupt
	}
	if uint64(len(buf)-HeaderSize) < uint64(size) {
		return nil, 0, ErrTruncated
	}
	n = HeaderSize + int(size)
	crc := crc32.Update(0, castagnoli, buf[:4])
	crc = crc32.Update(crc, castagnoli, buf[HeaderSize:n])
	if crc != binary.LittleEndian.Uint32(buf[4:8]) {
		return nil, 0, ErrCorrupt
	}
	return buf[HeaderSize:n], n, nil
}

// validRecordAfter reports the first offset at or after from where a valid
// record starts, or -1.
func validRecordAfter(buf []byte, from int) int {
	for off := from; off+HeaderSize < len(buf); off++ {
		if _, _, err := DecodeRecord(buf[off:]); err == nil {
			return off
		}
	}
	return -1
}
