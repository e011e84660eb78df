package specreader

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// streamImage is a stream file built in the test from LAYOUT.md Part II alone.
// Every offset below is written out as a literal from the tables of sections
// 17 to 20, not taken from the package, so that the package's constants are
// checked against the spec's tables.
type streamImage struct {
	b                                         []byte // 8-byte aligned
	capacity, maxBytes, maxReaders, maxWriter uint64
	slotSize, writersOff, slotsOff, total     uint64
	maxGroups, groupsOff                      uint64 // 19.3; 0, 0 without a group table
}

func ru(n, a uint64) uint64 { return (n + a - 1) / a * a }

// newStreamImage builds a valid, fresh stream (21.1): the identity of 18.1, a
// glibc x86-64 mutex (section 2, A.2), everything else zero.
func newStreamImage(capacity, maxBytes, maxReaders, maxWriters uint64, dropOldest bool, dtype uint32,
	shape ...uint64) *streamImage {
	return newGroupStreamImage(capacity, maxBytes, maxReaders, maxWriters, 0, dropOldest, dtype, shape...)
}

// newGroupStreamImage is newStreamImage with a group table of maxGroups
// entries (17: groups_offset is the end of the writer table, or 0 for none).
func newGroupStreamImage(capacity, maxBytes, maxReaders, maxWriters, maxGroups uint64, dropOldest bool,
	dtype uint32, shape ...uint64) *streamImage {
	im := &streamImage{capacity: capacity, maxBytes: maxBytes, maxReaders: maxReaders, maxWriter: maxWriters,
		maxGroups: maxGroups}
	im.slotSize = 64 + ru(maxBytes, 64)
	im.writersOff = 4096 + 128*maxReaders
	if maxGroups != 0 {
		im.groupsOff = im.writersOff + 64*maxWriters
	}
	im.slotsOff = ru(im.writersOff+64*maxWriters+192*maxGroups, 4096)
	im.total = ru(im.slotsOff+capacity*im.slotSize, 4096)
	words := make([]uint64, im.total/8)
	im.b = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), im.total)
	copy(im.b[0:8], "XSHMSEG\x00")
	im.put32(8, 2)           // layout_version
	im.put32(12, 0x59444552) // state READY
	im.put64(16, im.total)   // total_size
	im.put32(24, 4096)       // header_size
	im.put32(28, 2)          // kind: stream
	if dropOldest {
		im.put32(32, 1) // flags bit 0
	}
	im.put32(36, uint32(capacity))
	im.put64(40, maxBytes)
	im.put64(48, im.slotSize)
	im.put64(56, im.slotsOff)
	im.put32(64, uint32(maxReaders))
	im.put32(68, uint32(maxWriters))
	im.put64(72, 4096)
	im.put64(80, im.writersOff)
	im.put32(88, dtype)
	im.put32(92, uint32(len(shape)))
	for i, e := range shape {
		im.put64(96+8*uint64(i), e)
	}
	im.put32(160, 40)     // mutex_size: glibc x86-64
	im.put32(164, 0x0101) // mutex_abi
	copy(im.b[168:184], "creation-id-16b\x00")
	im.put64(184, 1767225600000000000) // created_ns
	im.put32(192, 4242)                // creator_pid
	im.put32(196, uint32(maxGroups))   // max_groups
	im.put64(200, im.groupsOff)        // groups_offset
	im.put32(512+16, 0x92)             // the mutex's __kind (A.2): not checked
	return im
}

func (im *streamImage) put32(off uint64, v uint32) { binary.LittleEndian.PutUint32(im.b[off:], v) }
func (im *streamImage) put64(off uint64, v uint64) { binary.LittleEndian.PutUint64(im.b[off:], v) }
func (im *streamImage) get64(off uint64) uint64    { return binary.LittleEndian.Uint64(im.b[off:]) }

func (im *streamImage) slot(x uint64) uint64 { return im.slotsOff + (x%im.capacity)*im.slotSize }

// commit leaves message x committed in its slot (20.1, 20.2: C(x) = x<<2 | 2).
func (im *streamImage) commit(x uint64, payload []byte, pid uint32, writerIndex uint32, writerState uint64) {
	s := im.slot(x)
	im.put64(s+8, uint64(len(payload)))
	im.put64(s+16, 1767225600000000000+x*1000000)
	im.put32(s+24, pid)
	im.put32(s+28, writerIndex)
	im.put64(s+32, writerState)
	copy(im.b[s+64:], payload)
	im.put64(s, x<<2|2)
}

// mark leaves slot x's word with the given tag (1 WRITING, 3 ABANDONED).
func (im *streamImage) mark(x uint64, tag uint64, writerIndex uint32, writerState uint64) {
	s := im.slot(x)
	im.put32(s+28, writerIndex)
	im.put64(s+32, writerState)
	im.put64(s, x<<2|tag)
}

// reader fills reader entry i (19.1).
func (im *streamImage) reader(i uint64, gen uint32, attached bool, cursor, lost, received uint64, pid uint32) {
	e := 4096 + 128*i
	im.put64(e+0, cursor)
	im.put64(e+8, lost)
	im.put64(e+16, received)
	if attached {
		im.put64(e+64, uint64(gen)<<8|1)
	}
	im.put32(e+72, pid)
	im.put32(e+76, gen)
	im.put64(e+80, 1767225600000000000)
}

// writer fills writer entry j (19.2) and returns its state.
func (im *streamImage) writer(j uint64, gen uint32, attached bool, sent uint64, pid uint32) uint64 {
	e := im.writersOff + 64*j
	st := uint64(gen)<<8 | 1
	if attached {
		im.put64(e+0, st)
	}
	im.put32(e+8, pid)
	im.put32(e+12, gen)
	im.put64(e+16, sent)
	im.put64(e+24, 1767225600000000000)
	return st
}

// write stores the image in a file of the test's temporary directory.
func (im *streamImage) write(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stream.seg")
	if err := os.WriteFile(path, im.b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeShm stores the image in /dev/shm under a unique name, removed at the end.
func (im *streamImage) writeShm(t testing.TB) (name, path string) {
	t.Helper()
	name = uniqueName("stream")
	path = ShmDir + "/" + name
	if err := os.WriteFile(path, im.b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return name, path
}

// holdLock takes an OFD read lock on one byte of the file through a new open
// file description (23.1), as a live reader or writer would; the lock goes
// when the test ends.
func holdLock(t testing.TB, path string, off uint64) {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	const fOFDSetlk = 37
	lk := syscall.Flock_t{Type: fRDLCK, Whence: 0, Start: int64(off), Len: 1}
	if err := syscall.FcntlFlock(uintptr(fd), fOFDSetlk, &lk); err != nil {
		syscall.Close(fd)
		t.Fatalf("F_OFD_SETLK: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
}
