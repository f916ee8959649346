package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/adclick/adclick/pkg/diskfile"
)

// A closed minute's id file is the in-memory layout of its bucket written
// out as it is, so closing a minute costs sequential writes and no per-id
// work (no sorting, no per-key database insert, no compaction):
//
//	header (64 bytes): magic "ADCKIDS2", minute, id count, chunk count,
//	  then the offsets of the chunk table and the overflow section, the
//	  overflow section's length, and a CRC-32C of the header and the shard
//	  directory
//	shard directory: 256 x (offset of the shard's slots, slot count)
//	arena, from offset 8192: chunk i at 8192 + i<<20 (uvarint length,
//	  bytes per id); full chunks were written there while the minute was
//	  open (spill.go)
//	shards: slots of 8 bytes (tag<<32 | location+1), from the first
//	  4096-byte boundary after the arena (written around the page cache,
//	  tailWriter), or the first 8-byte one where direct I/O is not
//	  available and in files of earlier versions: readers take every
//	  shard's offset from the directory
//	chunk table: the used length of every arena chunk (4 bytes each)
//	overflow: uvarint length, bytes per id
//
// All integers are little-endian. A lookup (File.Has) reads the shard's
// probe window and, on a tag hit, the id's bytes: one or a few preads,
// usually from the page cache. The file is finished under a temporary name,
// fsynced, renamed and its directory fsynced, so a file under its final
// name is complete; the header is written last.
const (
	fileMagic      = "ADCKIDS2"
	fileHeaderSize = 64
	fileDirSize    = nShards * 16
	arenaStart     = 8192
	probeWindow    = 64      // slots read per pread while probing a file
	writeBackEvery = 8 << 20 // bytes written between two write-backs when finishing a file
)

// ErrCorrupt is returned when an id file does not hold what its header says.
var ErrCorrupt = errors.New("dedup: corrupt id file")

// WriteFile makes the ids f holds under minute durable as the minute's id
// file at path and returns how many it holds: it finishes the minute's
// spill file (or writes a new one under path+".tmp"), fsyncs it, renames
// it to path and fsyncs the directory.
func (f *Frozen) WriteFile(minute int64, path string) (int, error) {
	b := f.minutes[minute]
	if b == nil {
		b = newBucket(minute, "", &errBox{})
	}
	if err := b.writeFile(path); err != nil {
		return 0, err
	}
	return b.n, nil
}

func (b *bucket) writeFile(path string) (err error) {
	file, name := (*os.File)(nil), path+".tmp"
	from := 0 // chunks before this are in the file already
	if b.spill != nil {
		b.spill.stop()
		if err := b.box.get(); err != nil {
			return err
		}
		file, name, from = b.spill.f, b.spill.path, int(b.spill.written.Load())
	} else {
		if file, err = os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644); err != nil {
			return fmt.Errorf("dedup: %w", err)
		}
		defer file.Close()
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("dedup: write %s: %w", name, err)
			if b.spill == nil {
				os.Remove(name)
			}
		}
	}()
	// The chunks still in memory, at their offsets.
	arenaEnd := int64(arenaStart)
	for ci, c := range b.chunks {
		if ci >= from {
			if _, err := file.WriteAt(c, arenaStart+int64(ci)*chunkSize); err != nil {
				return err
			}
		}
		arenaEnd = arenaStart + int64(ci)*chunkSize + int64(b.lens[ci])
	}
	// Then shards, chunk table and overflow after the arena, from a page
	// boundary and around the page cache where the file system allows
	// (hundreds of MB at full speed, read back only for late clicks).
	w, err := tailWriter(file, name, arenaEnd)
	if err != nil {
		return err
	}
	defer w.Close()
	dir := make([]byte, fileDirSize)
	var scratch [8]byte
	for i := range b.shards {
		s := &b.shards[i]
		binary.LittleEndian.PutUint64(dir[i*16:], uint64(w.Offset()))
		binary.LittleEndian.PutUint64(dir[i*16+8:], uint64(len(s.slots)))
		writeSlots(w, s.slots, scratch[:])
	}
	chunkTab := uint64(w.Offset())
	for _, l := range b.lens {
		binary.LittleEndian.PutUint32(scratch[:], l)
		w.Write(scratch[:4])
	}
	w.Write(make([]byte, pad8(uint64(len(b.lens))*4)-uint64(len(b.lens))*4))
	overflow := uint64(w.Offset())
	var ovf []byte
	for id := range b.overflow {
		ovf = binary.AppendUvarint(ovf, uint64(len(id)))
		ovf = append(ovf, id...)
	}
	w.Write(ovf)
	if err := w.Flush(); err != nil {
		return err
	}
	end := w.Offset()
	if err := file.Truncate(end); err != nil { // a reused spill file may be longer
		return err
	}
	hdr := make([]byte, fileHeaderSize, fileHeaderSize+fileDirSize)
	copy(hdr, fileMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(b.minute))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(b.n))
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(b.chunks)))
	binary.LittleEndian.PutUint64(hdr[32:], chunkTab)
	binary.LittleEndian.PutUint64(hdr[40:], overflow)
	binary.LittleEndian.PutUint32(hdr[48:], uint32(len(ovf)))
	crc := crc32.Update(crc32.Checksum(hdr[:60], castagnoli), castagnoli, dir)
	binary.LittleEndian.PutUint32(hdr[60:], crc)
	if _, err := file.WriteAt(append(hdr, dir...), 0); err != nil {
		return err
	}
	if err := file.Sync(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	if b.spill != nil {
		b.spill.path, b.spill.finished = path, true // discard must not delete it
	}
	return diskfile.SyncDir(filepath.Dir(path))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// littleEndian: the slots are stored little-endian, as they are in
// memory here, so they are written as they are (a closing minute has
// tens of millions of them).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// seqWriter is how a file's tail is written: diskfile's Writer or DirectWriter.
type seqWriter interface {
	Write(p []byte)
	Offset() int64
	Flush() error
	Close() error
}

// writeDirect is false in tests of the page cache path.
var writeDirect = true

// tailWriter returns the writer of what follows the arena (which ends at
// arenaEnd) in file, named name: a direct writer from the next page
// boundary, or a buffered one from the next 8 bytes where direct I/O is
// not available.
func tailWriter(file *os.File, name string, arenaEnd int64) (seqWriter, error) {
	if writeDirect {
		start := (arenaEnd + diskfile.DirectAlign - 1) &^ (diskfile.DirectAlign - 1)
		w, err := diskfile.OpenDirect(name, start)
		if err == nil {
			return w, nil
		}
		if !errors.Is(err, diskfile.ErrNoDirect) {
			return nil, err
		}
	}
	return bufferedWriter{diskfile.NewWriter(file, int64(pad8(uint64(arenaEnd))), 1<<20, writeBackEvery)}, nil
}

// bufferedWriter is a diskfile.Writer that the caller closes with the file.
type bufferedWriter struct{ *diskfile.Writer }

func (bufferedWriter) Close() error { return nil }

func writeSlots(w seqWriter, slots []uint64, scratch []byte) {
	if littleEndian {
		if len(slots) > 0 {
			w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&slots[0])), len(slots)*8))
		}
		return
	}
	for _, v := range slots {
		binary.LittleEndian.PutUint64(scratch, v)
		w.Write(scratch[:8])
	}
}

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
	}
	ovfOff := int64(binary.LittleEndian.Uint64(hdr[40:]))
	ovfLen := int64(binary.LittleEndian.Uint32(hdr[48:]))
	if ovfOff+ovfLen != idf.size || idf.chunkTab > ovfOff || idf.chunkTab < arenaStart || idf.chunks > maxChunks ||
		idf.chunks > 0 && idf.chunkTab < arenaStart+int64(idf.chunks-1)*chunkSize {
		return nil, fmt.Errorf("%w: %s: sections do not match the file size %d", ErrCorrupt, path, idf.size)
	}
	for i := range idf.dir {
		d := &idf.dir[i]
		d.off, d.slots = binary.LittleEndian.Uint64(dir[i*16:]), binary.LittleEndian.Uint64(dir[i*16+8:])
		if d.slots&(d.slots-1) != 0 || d.slots > 1<<32 || int64(d.off+d.slots*8) > idf.chunkTab || d.slots > 0 && d.off < arenaStart {
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
		si, tag := split(id)
		d := f.dir[si]
		if d.slots > 0 {
			found, err := f.probe(d.off, d.slots, tag, id)
			if found || err != nil {
				return found, err
			}
		}
	}
	_, ok := f.overflow[id]
	return ok, nil
}

// probe walks a shard's slots from the tag's home until an empty one.
func (f *File) probe(off, slots uint64, tag uint32, id string) (bool, error) {
	mask := slots - 1
	var win [probeWindow * 8]byte
	i := home(tag, tableBits(int(slots)))
	for seen := uint64(0); seen < slots; {
		n := min(probeWindow, slots-i, slots-seen) // do not read past the shard's end
		if _, err := f.f.ReadAt(win[:n*8], int64(off+i*8)); err != nil {
			return false, fmt.Errorf("%w: %s: slots: %v", ErrCorrupt, f.path, err)
		}
		for j := range n {
			v := binary.LittleEndian.Uint64(win[j*8:])
			if v == 0 {
				return false, nil
			}
			if uint32(v>>32) == tag {
				ok, err := f.idAt(uint32(v)-1, id)
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

// idAt compares id with the id at arena location loc.
func (f *File) idAt(loc uint32, id string) (bool, error) {
	pos := arenaStart + int64(loc>>chunkBits)*chunkSize + int64(loc&(chunkSize-1))
	if pos >= f.chunkTab {
		return false, fmt.Errorf("%w: %s: id at %d, past the arena's end %d", ErrCorrupt, f.path, pos, f.chunkTab)
	}
	ok, err := equalAt(f.f, pos, id)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.path, err)
	}
	return ok, nil
}

// equalAt compares id with the id stored (uvarint length, bytes) at pos
// in file: the read that confirms a tag hit, in an id file or a spill file.
func equalAt(file *os.File, pos int64, id string) (bool, error) {
	var buf [maxArenaID + binary.MaxVarintLen64]byte
	want := uvarintLen(uint64(len(id))) + len(id)
	n, err := file.ReadAt(buf[:want], pos)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) { // a shorter id at the end reads short
		return false, fmt.Errorf("read the id at %d: %w", pos, err)
	}
	l, k := binary.Uvarint(buf[:n])
	if k <= 0 {
		return false, fmt.Errorf("bad id length at %d", pos)
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
		if _, err := f.f.ReadAt(buf[:l], arenaStart+int64(i)*chunkSize); err != nil {
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
