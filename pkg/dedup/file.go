package dedup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// A closed minute's id file is the in-memory layout of its bucket written
// out as it is, so closing a minute costs sequential writes and no per-id
// work (no sorting, no per-key database insert, no compaction):
//
//	header (64 bytes): magic "ADCKIDS1", minute, id count, chunk count,
//	  then the offsets of the chunk table, the arena and the overflow
//	  section, the overflow section's length, and a CRC-32C of the header
//	  and the shard directory
//	shard directory: 256 x (offset of the shard's slots, slot count)
//	shards: hashes (8 bytes each), then locations (4 bytes each), padded to 8
//	chunk table: the used length of every arena chunk (4 bytes each)
//	arena: chunk i at arena offset + i<<20 (uvarint length, bytes per id)
//	overflow: uvarint length, bytes per id
//
// All integers are little-endian. A lookup (File.Has) reads the shard's
// probe window and, on a hash hit, the id's bytes: one or a few preads,
// usually from the page cache. The file is written under a temporary name,
// fsynced, renamed and its directory fsynced, so a file under its final
// name is complete.
const (
	fileMagic      = "ADCKIDS1"
	fileHeaderSize = 64
	fileDirSize    = nShards * 16
	probeWindow    = 64 // slots read per pread while probing a file
)

// ErrCorrupt is returned when an id file does not hold what its header says.
var ErrCorrupt = errors.New("dedup: corrupt id file")

// WriteFile writes the ids f holds under minute to path (via path+".tmp",
// fsynced, renamed, directory fsynced) and returns how many it wrote.
func (f *Frozen) WriteFile(minute int64, path string) (int, error) {
	b := f.minutes[minute]
	if b == nil {
		b = newBucket()
	}
	tmp := path + ".tmp"
	if err := writeBucketFile(b, minute, tmp); err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("dedup: %w", err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return 0, err
	}
	return b.n, nil
}

// SyncDir fsyncs a directory, so a rename or removal in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("dedup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dedup: sync directory %s: %w", dir, err)
	}
	return nil
}

func writeBucketFile(b *bucket, minute int64, path string) (err error) {
	file, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("dedup: %w", err)
	}
	defer func() {
		if cerr := file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("dedup: close %s: %w", path, cerr)
		}
	}()
	// Offsets of every section, from the sizes.
	dir := make([]byte, fileDirSize)
	off := uint64(fileHeaderSize + fileDirSize)
	for i := range b.shards {
		n := uint64(len(b.shards[i].hashes))
		binary.LittleEndian.PutUint64(dir[i*16:], off)
		binary.LittleEndian.PutUint64(dir[i*16+8:], n)
		off += pad8(n * 12)
	}
	chunkTab := off
	off += pad8(uint64(len(b.chunks)) * 4)
	arena := off
	if len(b.chunks) > 0 {
		off += uint64(len(b.chunks)-1)*chunkSize + uint64(len(b.chunks[len(b.chunks)-1]))
	}
	overflow := off
	var ovf []byte
	for id := range b.overflow {
		ovf = binary.AppendUvarint(ovf, uint64(len(id)))
		ovf = append(ovf, id...)
	}
	hdr := make([]byte, fileHeaderSize)
	copy(hdr, fileMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(minute))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(b.n))
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(b.chunks)))
	binary.LittleEndian.PutUint64(hdr[32:], chunkTab)
	binary.LittleEndian.PutUint64(hdr[40:], arena)
	binary.LittleEndian.PutUint64(hdr[48:], overflow)
	binary.LittleEndian.PutUint32(hdr[56:], uint32(len(ovf)))
	crc := crc32.Update(crc32.Checksum(hdr[:60], castagnoli), castagnoli, dir)
	binary.LittleEndian.PutUint32(hdr[60:], crc)

	w := bufio.NewWriterSize(file, 1<<20)
	var scratch [8]byte
	w.Write(hdr)
	w.Write(dir)
	for i := range b.shards {
		s := &b.shards[i]
		for _, h := range s.hashes {
			binary.LittleEndian.PutUint64(scratch[:], h)
			w.Write(scratch[:8])
		}
		for _, l := range s.locs {
			binary.LittleEndian.PutUint32(scratch[:], l)
			w.Write(scratch[:4])
		}
		w.Write(make([]byte, pad8(uint64(len(s.hashes))*12)-uint64(len(s.hashes))*12))
	}
	for _, c := range b.chunks {
		binary.LittleEndian.PutUint32(scratch[:], uint32(len(c)))
		w.Write(scratch[:4])
	}
	w.Write(make([]byte, pad8(uint64(len(b.chunks))*4)-uint64(len(b.chunks))*4))
	var zeros []byte
	for i, c := range b.chunks {
		w.Write(c)
		if i < len(b.chunks)-1 && len(c) < chunkSize {
			if zeros == nil {
				zeros = make([]byte, chunkSize)
			}
			w.Write(zeros[:chunkSize-len(c)])
		}
	}
	w.Write(ovf)
	if err := w.Flush(); err != nil {
		return fmt.Errorf("dedup: write %s: %w", path, err)
	}
	if err := file.Sync(); err != nil {
		return fmt.Errorf("dedup: sync %s: %w", path, err)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func pad8(n uint64) uint64 { return (n + 7) &^ 7 }

// File is a closed minute's id file, open for lookups. Safe for
// concurrent use (reads are preads).
type File struct {
	f        *os.File
	path     string
	size     int64
	minute   int64
	n        int
	chunks   int
	chunkTab int64
	arena    int64
	dir      [nShards]struct{ off, slots uint64 }
	overflow map[string]struct{}
}

// OpenFile opens an id file and checks its header, directory and bounds.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dedup: %w", err)
	}
	idf, err := openFile(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return idf, nil
}

func openFile(f *os.File, path string) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dedup: %w", err)
	}
	buf := make([]byte, fileHeaderSize+fileDirSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("%w: %s: header: %v", ErrCorrupt, path, err)
	}
	hdr, dir := buf[:fileHeaderSize], buf[fileHeaderSize:]
	if string(hdr[:8]) != fileMagic {
		return nil, fmt.Errorf("%w: %s: bad magic", ErrCorrupt, path)
	}
	if crc := crc32.Update(crc32.Checksum(hdr[:60], castagnoli), castagnoli, dir); crc != binary.LittleEndian.Uint32(hdr[60:]) {
		return nil, fmt.Errorf("%w: %s: header checksum mismatch", ErrCorrupt, path)
	}
	idf := &File{
		f: f, path: path, size: st.Size(),
		minute:   int64(binary.LittleEndian.Uint64(hdr[8:])),
		n:        int(binary.LittleEndian.Uint64(hdr[16:])),
		chunks:   int(binary.LittleEndian.Uint64(hdr[24:])),
		chunkTab: int64(binary.LittleEndian.Uint64(hdr[32:])),
		arena:    int64(binary.LittleEndian.Uint64(hdr[40:])),
	}
	ovfOff := int64(binary.LittleEndian.Uint64(hdr[48:]))
	ovfLen := int64(binary.LittleEndian.Uint32(hdr[56:]))
	if ovfOff+ovfLen != idf.size || idf.arena > ovfOff || idf.chunkTab > idf.arena || idf.chunks > maxChunks {
		return nil, fmt.Errorf("%w: %s: sections do not match the file size %d", ErrCorrupt, path, idf.size)
	}
	for i := range idf.dir {
		d := &idf.dir[i]
		d.off, d.slots = binary.LittleEndian.Uint64(dir[i*16:]), binary.LittleEndian.Uint64(dir[i*16+8:])
		if d.slots&(d.slots-1) != 0 || int64(d.off+d.slots*12) > idf.chunkTab {
			return nil, fmt.Errorf("%w: %s: shard %d out of bounds", ErrCorrupt, path, i)
		}
	}
	if ovfLen > 0 {
		ovf := make([]byte, ovfLen)
		if _, err := f.ReadAt(ovf, ovfOff); err != nil {
			return nil, fmt.Errorf("%w: %s: overflow: %v", ErrCorrupt, path, err)
		}
		idf.overflow = make(map[string]struct{})
		for len(ovf) > 0 {
			n, k := binary.Uvarint(ovf)
			if k <= 0 || n > uint64(len(ovf)-k) {
				return nil, fmt.Errorf("%w: %s: overflow entry", ErrCorrupt, path)
			}
			idf.overflow[string(ovf[k:k+int(n)])] = struct{}{}
			ovf = ovf[k+int(n):]
		}
	}
	return idf, nil
}

// Minute is the minute the file holds ids of.
func (f *File) Minute() int64 { return f.minute }

// Len is the number of ids in the file.
func (f *File) Len() int { return f.n }

// Path is where the file is.
func (f *File) Path() string { return f.path }

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Has reports whether id is in the file.
func (f *File) Has(id string) (bool, error) {
	if len(id) <= maxArenaID {
		h := hashOf(id)
		d := f.dir[h>>(64-shardBits)]
		if d.slots > 0 {
			found, err := f.probe(d.off, d.slots, h, id)
			if found || err != nil {
				return found, err
			}
		}
	}
	_, ok := f.overflow[id]
	return ok, nil
}

// probe walks a shard's slots from h's home slot until an empty one.
func (f *File) probe(off, slots, h uint64, id string) (bool, error) {
	mask := slots - 1
	var win [probeWindow * 8]byte
	i := h & mask
	for seen := uint64(0); seen < slots; {
		n := min(probeWindow, slots-i, slots-seen) // do not read past the shard's end
		if _, err := f.f.ReadAt(win[:n*8], int64(off+i*8)); err != nil {
			return false, fmt.Errorf("%w: %s: slots: %v", ErrCorrupt, f.path, err)
		}
		for j := range n {
			sh := binary.LittleEndian.Uint64(win[j*8:])
			if sh == 0 {
				return false, nil
			}
			if sh == h {
				ok, err := f.idAt(off+slots*8+(i+j)*4, id)
				if ok || err != nil {
					return ok, err
				}
			}
		}
		seen += n
		i = (i + n) & mask
	}
	return false, nil
}

// idAt compares id with the id whose location is stored at locOff.
func (f *File) idAt(locOff uint64, id string) (bool, error) {
	var lb [4]byte
	if _, err := f.f.ReadAt(lb[:], int64(locOff)); err != nil {
		return false, fmt.Errorf("%w: %s: location: %v", ErrCorrupt, f.path, err)
	}
	loc := binary.LittleEndian.Uint32(lb[:])
	pos := f.arena + int64(loc>>chunkBits)*chunkSize + int64(loc&(chunkSize-1))
	var buf [maxArenaID + binary.MaxVarintLen64]byte
	want := uvarintLen(uint64(len(id))) + len(id)
	n, err := f.f.ReadAt(buf[:want], pos)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return false, fmt.Errorf("%w: %s: id at %d: %v", ErrCorrupt, f.path, pos, err)
	}
	l, k := binary.Uvarint(buf[:n])
	if k <= 0 {
		return false, fmt.Errorf("%w: %s: id length at %d", ErrCorrupt, f.path, pos)
	}
	return l == uint64(len(id)) && k+len(id) <= n && string(buf[k:k+len(id)]) == id, nil
}

// Each calls fn with the file's ids, at most batch per call (the slice is
// reused between calls, the strings are not), reading the arena
// sequentially.
func (f *File) Each(batch int, fn func(ids []string) error) error {
	tab := make([]byte, f.chunks*4)
	if _, err := f.f.ReadAt(tab, f.chunkTab); err != nil && f.chunks > 0 {
		return fmt.Errorf("%w: %s: chunk table: %v", ErrCorrupt, f.path, err)
	}
	ids := make([]string, 0, batch)
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		err := fn(ids)
		ids = ids[:0]
		return err
	}
	var ferr error
	add := func(id string) {
		if ferr != nil {
			return
		}
		ids = append(ids, string([]byte(id))) // the callback may keep them
		if len(ids) >= batch {
			ferr = flush()
		}
	}
	buf := make([]byte, chunkSize)
	for i := range f.chunks {
		l := int(binary.LittleEndian.Uint32(tab[i*4:]))
		if l > chunkSize {
			return fmt.Errorf("%w: %s: chunk %d length %d", ErrCorrupt, f.path, i, l)
		}
		if _, err := f.f.ReadAt(buf[:l], f.arena+int64(i)*chunkSize); err != nil {
			return fmt.Errorf("%w: %s: chunk %d: %v", ErrCorrupt, f.path, i, err)
		}
		if !eachInChunk(buf[:l], add) {
			return fmt.Errorf("%w: %s: chunk %d entries", ErrCorrupt, f.path, i)
		}
		if ferr != nil {
			return ferr
		}
	}
	for id := range f.overflow {
		add(id)
		if ferr != nil {
			return ferr
		}
	}
	return flush()
}
