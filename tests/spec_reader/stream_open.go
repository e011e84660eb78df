package specreader

import (
	"encoding/binary"
	"errors"
	"math"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// SegmentKind is the dispatch of section 16.
type SegmentKind string

// The three answers of section 16's dispatch.
const (
	KindOfRecord  SegmentKind = "record"
	KindOfStream  SegmentKind = "stream"
	KindOfUnknown SegmentKind = "unknown"
)

// PeekKind is section 16's dispatch on a file's first page (the reference's
// peek_kind): a file shorter than 4096 bytes or with the wrong magic is
// unknown; layout_version 1 is a record; 2 with kind 2 a stream; anything else
// unknown. It does not look at state: it only chooses a parser.
func PeekKind(page []byte) SegmentKind {
	if len(page) < HeaderSize || [8]byte(page[:8]) != magic {
		return KindOfUnknown
	}
	switch binary.LittleEndian.Uint32(page[offVersion:]) {
	case layoutV1:
		return KindOfRecord
	case layoutV2:
		if binary.LittleEndian.Uint32(page[offKind:]) == kindStream {
			return KindOfStream
		}
	}
	return KindOfUnknown
}

// PeekKindFile reads the first page of the file at path (no lock, no ready
// wait, as the reference's peek_kind) and dispatches it.
func PeekKindFile(path string) (SegmentKind, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", osErr("open", path, err)
	}
	defer syscall.Close(fd)
	return peekFD(fd, path)
}

func peekFD(fd int, path string) (SegmentKind, error) {
	page := make([]byte, HeaderSize)
	n := 0
	for n < len(page) {
		k, err := syscall.Pread(fd, page[n:], int64(n))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return "", osErr("pread", path, err)
		}
		if k == 0 {
			break
		}
		n += k
	}
	return PeekKind(page[:n]), nil
}

// StreamIdentity holds the identity fields that the opener does not check
// (18.1), and the mutex ABI fields (section 2).
type StreamIdentity struct {
	MutexSize  uint32
	MutexABI   uint32
	CreationID [16]byte
	CreatedNs  int64
	CreatorPID uint32
}

// Stream is a read-only look at a stream: it validates the header (section
// 22), maps the control pages and the ring PROT_READ, and never stores to the
// segment, never locks the mutex, never attaches a reader, never takes an OFD
// lock. It keeps one O_RDONLY descriptor, holding no lock, to ask the kernel
// whether entries are alive (F_OFD_GETLK, 23.2).
type Stream struct {
	path   string
	fd     int
	ctrl   []byte // [0, slots_offset)
	ring   []byte // [slots_offset, total_size)
	mem    streamMem
	id     StreamIdentity
	closed atomic.Bool
}

// OpenStream opens the stream called name (/dev/shm/<body>) to look at it.
func OpenStream(name string, opt *Options) (*Stream, error) {
	path, err := ShmPath(name)
	if err != nil {
		return nil, err
	}
	return openStreamPath(path, opt)
}

// OpenStreamFile opens the stream stored in the file at path (a vector, or a
// /dev/shm path) with the same protocol as OpenStream.
func OpenStreamFile(path string, opt *Options) (*Stream, error) {
	if path == "" {
		return nil, argErr("empty path")
	}
	return openStreamPath(path, opt)
}

// Handle is what OpenAny returns: a *Segment (a record) or a *Stream.
type Handle interface{ Close() error }

// OpenAny opens name as whatever it holds, dispatching (section 16) on its
// first page after the ready wait (so that it never peeks at a header still
// being written). A file of unknown kind goes to the record opener, whose
// refusals then say why.
func OpenAny(name string, opt *Options) (Handle, error) {
	path, err := ShmPath(name)
	if err != nil {
		return nil, err
	}
	return openAnyPath(path, opt)
}

// OpenAnyFile is OpenAny for a file path.
func OpenAnyFile(path string, opt *Options) (Handle, error) {
	if path == "" {
		return nil, argErr("empty path")
	}
	return openAnyPath(path, opt)
}

func openAnyPath(path string, opt *Options) (Handle, error) {
	fd, st, err := openReady(path, opt, false)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	defer syscall.Flock(fd, syscall.LOCK_UN)
	kind, err := peekFD(fd, path)
	if err != nil {
		return nil, err
	}
	if kind == KindOfStream {
		s, err := finishStream(fd, &st, path)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	seg, err := finishRecord(fd, &st, path, opt)
	if err != nil {
		return nil, err
	}
	return seg, nil
}

func openStreamPath(path string, opt *Options) (*Stream, error) {
	// 21.3 steps 1-3, with an O_RDONLY descriptor: this handle can only look.
	fd, st, err := openReady(path, opt, true)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)                  // 21.3 step 7: the first descriptor goes
	defer syscall.Flock(fd, syscall.LOCK_UN) // 21.3 step 7
	return finishStream(fd, &st, path)
}

// finishStream is 21.3 steps 4 to 7 for a look-only handle.
func finishStream(fd int, st *syscall.Stat_t, path string) (s *Stream, err error) {
	// Step 4: S3, then page 0 alone, validated before anything else is mapped.
	if st.Size < HeaderSize {
		return nil, layoutErr("segment %s is %d bytes, smaller than the xshm header: not an xshm segment, or truncated",
			path, st.Size)
	}
	page, err := syscall.Mmap(fd, 0, HeaderSize, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, osErr("mmap", path, err)
	}
	g, id, err := validateStreamHeader(page, uint64(st.Size), path)
	syscall.Munmap(page)
	if err != nil {
		return nil, err
	}
	if g.TotalSize > uint64(math.MaxInt) {
		return nil, layoutErr("segment %s: total_size %d is too large to map here", path, g.TotalSize)
	}
	// Step 5: the control pages and the ring, separately, PROT_READ.
	s = &Stream{path: path, fd: -1, id: id}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	if s.ctrl, err = syscall.Mmap(fd, 0, int(g.SlotsOffset), syscall.PROT_READ, syscall.MAP_SHARED); err != nil {
		return s, osErr("mmap", path, err)
	}
	if s.ring, err = syscall.Mmap(fd, int64(g.SlotsOffset), int(g.TotalSize-g.SlotsOffset), syscall.PROT_READ,
		syscall.MAP_SHARED); err != nil {
		return s, osErr("mmap", path, err)
	}
	// Step 6: the device and inode (st, from step 3: the same descriptor).
	// Step 7: a second descriptor, nothing mapped through it. This handle takes
	// no lock with it; it only asks F_OFD_GETLK (23.2).
	lfd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return s, osErr("open", path, err)
	}
	s.fd = lfd
	var st2 syscall.Stat_t
	if err = syscall.Fstat(lfd, &st2); err != nil {
		return s, osErr("fstat", path, err)
	}
	if st2.Dev != st.Dev || st2.Ino != st.Ino {
		return s, &Error{Kind: KindNotFound, Errno: syscall.ENOENT,
			Detail: "open " + path + ": the name was removed or replaced while it was opened"}
	}
	s.mem = streamMem{
		g:     g,
		ctrl:  unsafe.Pointer(&s.ctrl[0]),
		ring:  unsafe.Pointer(&s.ring[0]),
		alive: s.locked,
	}
	return s, nil
}

// validateStreamHeader is section 22, S3 to S19, in that order, on the first
// page (at least 4096 bytes; loaded with atomic loads where a field may be
// written concurrently: state). fileSize is the fstat size. Every refusal is a
// LayoutError naming the field.
func validateStreamHeader(page []byte, fileSize uint64, who string) (StreamGeometry, StreamIdentity, error) {
	var g StreamGeometry
	var id StreamIdentity
	if uint64(len(page)) < HeaderSize || fileSize < HeaderSize { // S3
		return g, id, layoutErr("segment %s is %d bytes, smaller than the xshm header: not an xshm segment, or truncated",
			who, fileSize)
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(page[off:]) }
	u64 := func(off int) uint64 { return binary.LittleEndian.Uint64(page[off:]) }
	magicOK := [8]byte(page[:8]) == magic
	if magicOK && u32(offVersion) == layoutV1 { // S4: looked at before state
		return g, id, layoutErr("segment %s is a record, not a stream: open it with SharedMemoryManager.open "+
			"(this package: Open)", who)
	}
	fail := func(format string, a ...any) error {
		return layoutErr("segment %s: "+format, append([]any{who}, a...)...)
	}
	state := load32(unsafe.Pointer(&page[0]), offState) // S5: acquire (sync/atomic)
	if state != stateReady {
		if magicOK || page[0] == 0 {
			return g, id, fail("state is %d, not READY: the segment was never made ready (its creator stopped "+
				"before finishing it, or is still creating it); if nothing is creating it, remove it", state)
		}
		return g, id, fail("bad magic: not an xshm segment (magic %q)", page[:8])
	}
	if !magicOK { // S6
		return g, id, fail("bad magic: not an xshm segment (magic %q)", page[:8])
	}
	if v := u32(offVersion); v != layoutV2 { // S7
		return g, id, fail("layout version %d is not supported (this build reads versions 1 and 2)", v)
	}
	if v := u32(offHeaderSize); v != HeaderSize { // S8
		return g, id, fail("header_size %d is not 4096", v)
	}
	if v := u32(offKind); v != kindStream { // S9
		return g, id, fail("kind %d is not a stream (2)", v)
	}
	flags := u32(soFlags)
	if flags&^flagDropOldest != 0 { // S10
		return g, id, fail("unknown flags %d", flags)
	}
	ndim := u32(soNdim)
	if ndim > MaxNdim { // S11
		return g, id, fail("ndim %d exceeds 8", ndim)
	}
	dtype := DType(u32(soDType))
	if dtype == 0 && ndim != 0 { // S12
		return g, id, fail("ndim: a byte stream (dtype 0) has ndim 0, this header says %d", ndim)
	}
	if dtype != 0 && !dtype.Valid() { // S13
		return g, id, fail("unknown dtype code %d", uint32(dtype))
	}
	shape := make([]uint64, ndim)
	for i := range MaxNdim { // S14
		e := u64(soShape + 8*i)
		if uint32(i) < ndim {
			shape[i] = e
		} else if e != 0 {
			return g, id, fail("unused shape entries are not zero (shape[%d] = %d, ndim %d)", i, e, ndim)
		}
	}
	if v := u32(soMutexSize); v == 0 || v > maxMutex { // S15
		return g, id, fail("mutex_size %d does not fit the 64-byte mutex slot", v)
	}
	for _, r := range streamReserved { // S16: the lowest offset
		for off := r[0]; off < r[1]; off++ {
			if page[off] != 0 {
				return g, id, fail("reserved header byte %d is not zero (a newer layout, or corrupt)", off)
			}
		}
	}
	p := StreamParams{
		Capacity:     uint64(u32(soCapacity)),
		MaxBytes:     u64(soMaxBytes),
		Backpressure: Backpressure(flags & flagDropOldest),
		MaxReaders:   uint64(u32(soMaxReaders)),
		MaxWriters:   uint64(u32(soMaxWriters)),
		MaxGroups:    uint64(u32(soMaxGroups)),
		DType:        dtype,
		Shape:        shape,
	}
	if dtype == 0 {
		p.Shape = nil
	}
	g, err := ComputeStreamGeometry(p)
	if err != nil { // S17
		return StreamGeometry{}, id, fail("impossible geometry: %s", err.(*Error).Detail)
	}
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"slot_size", u64(soSlotSize), g.SlotSize},
		{"slots_offset", u64(soSlotsOffset), g.SlotsOffset},
		{"readers_offset", u64(soReadersOffset), g.ReadersOffset},
		{"writers_offset", u64(soWritersOffset), g.WritersOffset},
		{"groups_offset", u64(soGroupsOffset), g.GroupsOffset},
	} {
		if f.got != f.want { // S18
			return StreamGeometry{}, id, fail("sizes or offsets in the header do not match its capacity, max_bytes "+
				"and tables: %s is %d, the formula gives %d", f.name, f.got, f.want)
		}
	}
	if v := u64(offTotalSize); v != g.TotalSize { // S19
		return StreamGeometry{}, id, fail("total_size %d does not match the layout (%d)", v, g.TotalSize)
	}
	if fileSize < g.TotalSize {
		return StreamGeometry{}, id, fail("segment is truncated: header says %d bytes, only %d exist", g.TotalSize, fileSize)
	}
	id = StreamIdentity{
		MutexSize:  u32(soMutexSize),
		MutexABI:   u32(soMutexABI),
		CreationID: [16]byte(page[soCreationID : soCreationID+16]),
		CreatedNs:  int64(u64(soCreatedNs)),
		CreatorPID: u32(soCreatorPID),
	}
	return g, id, nil
}

// Close unmaps the stream and closes its descriptor. Idempotent.
func (s *Stream) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, m := range [][]byte{s.ring, s.ctrl} {
		if m != nil {
			errs = append(errs, syscall.Munmap(m))
		}
	}
	s.ring, s.ctrl = nil, nil
	if s.fd >= 0 {
		errs = append(errs, syscall.Close(s.fd))
		s.fd = -1
	}
	return errors.Join(errs...)
}

var errStreamClosed = &Error{Kind: KindArgument, Detail: "the stream handle is closed"}

// Path is the file the stream was opened from.
func (s *Stream) Path() string { return s.path }

// Geometry is the stream's geometry (17), as validated at open.
func (s *Stream) Geometry() StreamGeometry { return s.mem.g }

// Identity is the part of the identity the opener does not check.
func (s *Stream) Identity() StreamIdentity { return s.id }

// Linux's F_OFD_GETLK, and the lock types of <fcntl.h>.
const (
	fOFDGetlk = 36
	fRDLCK    = 0
	fWRLCK    = 1
	fUNLCK    = 2
)

// locked asks the kernel whether the byte at file offset off is locked by an
// open file description (23.2): F_OFD_GETLK for a write lock over one byte.
// This handle holds no lock, so any lock found is another's. A failing query
// counts as locked (alive: "never reap on a doubt").
func (s *Stream) locked(off uint64) bool {
	if s.closed.Load() || s.fd < 0 {
		return true
	}
	return ofdLocked(s.fd, off)
}

func ofdLocked(fd int, off uint64) bool {
	lk := syscall.Flock_t{Type: fWRLCK, Whence: 0, Start: int64(off), Len: 1}
	for {
		err := syscall.FcntlFlock(uintptr(fd), fOFDGetlk, &lk)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return true
		}
		return lk.Type != fUNLCK
	}
}
