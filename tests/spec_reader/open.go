package specreader

import (
	"encoding/binary"
	"errors"
	"math"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Header field offsets (LAYOUT.md section 4).
const (
	offMagic         = 0
	offVersion       = 8
	offState         = 12
	offTotalSize     = 16
	offHeaderSize    = 24
	offFlags         = 28
	offDType         = 32
	offItemSize      = 36
	offNdim          = 40
	offMsgCap        = 44
	offShape         = 48
	offValuesSize    = 112
	offRecordSize    = 120
	offRecordOffset  = 128
	offValuesOffset  = 144
	offMessageOffset = 148
	offMutexSize     = 152
	offMutexABI      = 156
	offSeq           = 256
	offEpoch         = 264
	offWaiters       = 268
	offOwnerPID      = 320
	offRecoveries    = 324
	offMutex         = 384

	// Record slot fields (section 5).
	recLock       = 0
	recSeq        = 8
	recCounter    = 16
	recTimestamp  = 24
	recWriterPID  = 32
	recMessageLen = 36
	recMetaEnd    = 40

	stateReady = 0x59444552 // "REDY"
	flagBackup = 1
	maxMutex   = 64
	layoutV1   = 1
)

var magic = [8]byte{'X', 'S', 'H', 'M', 'S', 'E', 'G', 0}

// reservedRanges are the header bytes that must be 0 (section 8 item 14).
var reservedRanges = [][2]int{{188, 256}, {272, 320}, {328, 384}, {448, 4096}}

// Options tunes Open. The zero value is the reference's default.
type Options struct {
	// Timeout: how long to retry while the name does not exist (default 0: no
	// retry); it also extends the ready wait (2 s + Timeout).
	Timeout time.Duration
	// NoAlias: never map the writable header alias, so Wait is always blind
	// (1 ms slices) and nothing is ever written to the segment.
	NoAlias bool
	// StallTimeout: without BACKUP, how long a live writer may keep the live
	// slot odd before Read gives up. 0: 2 s + 4 ns × values_size.
	StallTimeout time.Duration
}

// Segment is a read-only handle on an xshm segment. Its methods may be used
// from several goroutines at once, but not concurrently with Close.
type Segment struct {
	path   string
	mem    []byte         // the whole file, PROT_READ, MAP_SHARED
	base   unsafe.Pointer // &mem[0]
	alias  []byte         // page 0 again, writable (header alias), or nil
	abase  unsafe.Pointer
	geo    Geometry
	stall  time.Duration
	closed atomic.Bool
}

// Open opens the segment called name (/dev/shm/<body>) read-only.
func Open(name string, opt *Options) (*Segment, error) {
	path, err := ShmPath(name)
	if err != nil {
		return nil, err
	}
	return openPath(path, opt)
}

// OpenFile opens the segment stored in the file at path read-only (the golden
// vectors, or a segment by its /dev/shm path), with the same protocol as Open.
func OpenFile(path string, opt *Options) (*Segment, error) {
	if path == "" {
		return nil, argErr("empty path")
	}
	return openPath(path, opt)
}

func sleepDoubling(pause *time.Duration, maxPause time.Duration, deadline time.Time) {
	d := *pause
	if rem := time.Until(deadline); rem < d {
		d = rem
	}
	if d > 0 {
		time.Sleep(d)
	}
	*pause *= 2
	if *pause > maxPause {
		*pause = maxPause
	}
}

// openReady is 7.2 steps 1 to 3 (21.3 steps 1 to 3 for a stream, with a
// read-only descriptor: this package only looks): open, retrying ENOENT until
// the timeout, then the ready wait and the size-0 loop. It returns the
// descriptor holding LOCK_SH and the file's fstat; the caller unlocks and
// closes it. stream only changes the texts of the refusals.
func openReady(path string, opt *Options, stream bool) (fd int, st syscall.Stat_t, err error) {
	var o Options
	if opt != nil {
		o = *opt
	}
	if o.Timeout < 0 {
		return -1, st, argErr("negative timeout")
	}
	start := time.Now()

	// Step 1: open, retrying ENOENT until the timeout.
	pause := 100 * time.Microsecond
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err == nil {
			break
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.ENOENT) || time.Since(start) >= o.Timeout {
			return -1, st, osErr("open", path, err)
		}
		sleepDoubling(&pause, 10*time.Millisecond, start.Add(o.Timeout))
	}
	defer func() {
		if err != nil {
			syscall.Close(fd)
			fd = -1
		}
	}()

	// Steps 2 and 3: the ready wait.
	deadline := time.Now().Add(2*time.Second + o.Timeout)
	for {
		pause = 50 * time.Microsecond
		for {
			err = syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				return fd, st, osErr("flock", path, err)
			}
			if !time.Now().Before(deadline) {
				if stream {
					return fd, st, timeoutErr("stream %s is still being created (no shared lock within the ready wait)", path)
				}
				return fd, st, timeoutErr("%s is still being created (no shared lock within the ready wait)", path)
			}
			sleepDoubling(&pause, 5*time.Millisecond, deadline)
		}
		if err = syscall.Fstat(fd, &st); err != nil {
			syscall.Flock(fd, syscall.LOCK_UN)
			return fd, st, osErr("fstat", path, err)
		}
		if st.Size != 0 {
			return fd, st, nil
		}
		syscall.Flock(fd, syscall.LOCK_UN)
		if !time.Now().Before(deadline) {
			if stream {
				return fd, st, layoutErr("segment %s is an empty file: not an xshm segment, or its creator stopped before sizing it", path)
			}
			return fd, st, layoutErr("%s was never made ready (size 0)", path)
		}
		time.Sleep(time.Millisecond)
	}
}

func openPath(path string, opt *Options) (seg *Segment, err error) {
	fd, st, err := openReady(path, opt, false)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)                  // step 7 (the mappings stay)
	defer syscall.Flock(fd, syscall.LOCK_UN) // step 7
	return finishRecord(fd, &st, path, opt)
}

// finishRecord is 7.2 steps 4 to 6 on a descriptor that went through openReady.
func finishRecord(fd int, stp *syscall.Stat_t, path string, opt *Options) (seg *Segment, err error) {
	var o Options
	if opt != nil {
		o = *opt
	}
	st := *stp
	// Step 4: size, then map the whole file read-only.
	if st.Size < HeaderSize {
		return nil, layoutErr("%s is %d bytes, smaller than the xshm header (%d)", path, st.Size, HeaderSize)
	}
	if uint64(st.Size) > uint64(math.MaxInt) {
		return nil, layoutErr("%s is too large to map (%d bytes)", path, st.Size)
	}
	mem, err := syscall.Mmap(fd, 0, int(st.Size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, osErr("mmap", path, err)
	}
	seg = &Segment{path: path, mem: mem, base: unsafe.Pointer(&mem[0])}
	defer func() {
		if err != nil {
			seg.Close()
			seg = nil
		}
	}()

	// Step 5: validate (section 8, items 3-17).
	if seg.geo, err = validateHeader(mem, uint64(st.Size)); err != nil {
		return seg, err
	}
	seg.stall = o.StallTimeout
	if seg.stall <= 0 {
		seg.stall = 2*time.Second + time.Duration(min(seg.geo.ValuesSize, uint64(math.MaxInt64/8)))*4
	}

	// Step 6: the header alias, only if the user may write the object anyway.
	if !o.NoAlias {
		seg.mapAlias(path, &st)
	}
	return seg, nil
}

func (s *Segment) mapAlias(path string, st *syscall.Stat_t) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return // no write permission: wait blind
	}
	defer syscall.Close(fd)
	var st2 syscall.Stat_t
	if syscall.Fstat(fd, &st2) != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		return
	}
	a, err := syscall.Mmap(fd, 0, HeaderSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return
	}
	s.alias, s.abase = a, unsafe.Pointer(&a[0])
}

// validateHeader implements section 8, items 3-17, in order. mem is the whole
// mapping, at least HeaderSize bytes.
func validateHeader(mem []byte, fileSize uint64) (Geometry, error) {
	var g Geometry
	if uint64(len(mem)) < HeaderSize || fileSize < HeaderSize { // item 3
		return g, layoutErr("file is %d bytes, smaller than the xshm header (%d)", fileSize, HeaderSize)
	}
	base := unsafe.Pointer(&mem[0])
	// Item 4: state first, with acquire, before any identity field.
	state := load32(base, offState)
	magicOK := [8]byte(mem[offMagic:offMagic+8]) == magic
	if state != stateReady {
		if magicOK || mem[0] == 0 {
			return g, layoutErr("state is %d, not READY: the segment was never made ready (its creator stopped "+
				"before finishing it, or is still creating it)", state)
		}
		return g, layoutErr("bad magic %q: not an xshm segment", mem[offMagic:offMagic+8])
	}
	if !magicOK { // item 5
		return g, layoutErr("bad magic %q: not an xshm segment", mem[offMagic:offMagic+8])
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(mem[off:]) }
	u64 := func(off int) uint64 { return binary.LittleEndian.Uint64(mem[off:]) }
	if v := u32(offVersion); v != layoutV1 { // item 6
		if v == layoutV2 && u32(offKind) == kindStream { // section 16: name the other kind
			return g, layoutErr("it is a stream (layout version 2), not a record: open it with Stream.open " +
				"(this package: OpenStream)")
		}
		return g, layoutErr("layout version %d is not supported (this reader knows version 1; "+
			"version 2 only as a stream)", v)
	}
	if v := u32(offHeaderSize); v != HeaderSize { // item 7
		return g, layoutErr("header_size %d is not %d", v, HeaderSize)
	}
	flags := u32(offFlags)
	if flags&^flagBackup != 0 { // item 8
		return g, layoutErr("unknown flags %d", flags)
	}
	dtype := DType(u32(offDType))
	if !dtype.Valid() { // item 9
		return g, layoutErr("unknown dtype code %d", uint32(dtype))
	}
	if v := u32(offItemSize); v != dtype.ItemSize() { // item 10
		return g, layoutErr("itemsize %d does not match dtype %s (%d)", v, dtype, dtype.ItemSize())
	}
	ndim := u32(offNdim)
	if ndim > MaxNdim { // item 11
		return g, layoutErr("ndim %d exceeds %d", ndim, MaxNdim)
	}
	shape := make([]uint64, ndim)
	for i := range MaxNdim {
		e := u64(offShape + 8*i)
		if uint32(i) < ndim {
			shape[i] = e
		} else if e != 0 { // item 12
			return g, layoutErr("unused shape entries are not zero (shape[%d] = %d with ndim %d)", i, e, ndim)
		}
	}
	if v := u32(offMutexSize); v == 0 || v > maxMutex { // item 13
		return g, layoutErr("mutex_size %d is not in 1..%d", v, maxMutex)
	}
	for _, r := range reservedRanges { // item 14
		for off := r[0]; off < r[1]; off++ {
			if mem[off] != 0 {
				return g, layoutErr("reserved header byte %d is not zero", off)
			}
		}
	}
	msgCap := uint64(u32(offMsgCap))
	g, err := ComputeGeometry(dtype, shape, msgCap, flags&flagBackup != 0)
	if err != nil { // item 15
		return Geometry{}, layoutErr("%s", err.(*Error).Detail)
	}
	if u64(offValuesSize) != g.ValuesSize || u64(offRecordSize) != g.RecordSize ||
		u64(offRecordOffset) != g.RecordOffset[0] || u64(offRecordOffset+8) != g.RecordOffset[1] ||
		u32(offValuesOffset) != g.ValuesOffset || u32(offMessageOffset) != g.MessageOffset { // item 16
		return Geometry{}, layoutErr("sizes or offsets in the header do not match its shape "+
			"(values_size %d, record_size %d, record_offset [%d %d], values_offset %d, message_offset %d; "+
			"expected %d, %d, [%d %d], %d, %d)",
			u64(offValuesSize), u64(offRecordSize), u64(offRecordOffset), u64(offRecordOffset+8),
			u32(offValuesOffset), u32(offMessageOffset),
			g.ValuesSize, g.RecordSize, g.RecordOffset[0], g.RecordOffset[1], g.ValuesOffset, g.MessageOffset)
	}
	if v := u64(offTotalSize); v != g.TotalSize { // item 17
		return Geometry{}, layoutErr("total_size %d does not match the geometry (%d)", v, g.TotalSize)
	}
	if fileSize < g.TotalSize || uint64(len(mem)) < g.TotalSize {
		return Geometry{}, layoutErr("segment is truncated: the file is %d bytes, total_size is %d", fileSize, g.TotalSize)
	}
	return g, nil
}

// Close unmaps the segment. The handle must not be used afterwards.
func (s *Segment) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var err error
	if s.alias != nil {
		err = syscall.Munmap(s.alias)
		s.alias, s.abase = nil, nil
	}
	if s.mem != nil {
		if e := syscall.Munmap(s.mem); e != nil && err == nil {
			err = e
		}
		s.mem, s.base = nil, nil
	}
	return err
}

var errClosed = &Error{Kind: KindArgument, Detail: "the segment handle is closed"}

// Geometry returns the segment's geometry (dtype, shape, capacity, backup, sizes).
func (s *Segment) Geometry() Geometry { return s.geo }

// DType, Shape, MessageCapacity and Backup are the geometry's parameters.
func (s *Segment) DType() DType            { return s.geo.DType }
func (s *Segment) Shape() []uint64         { return append([]uint64(nil), s.geo.Shape...) }
func (s *Segment) MessageCapacity() uint32 { return s.geo.MessageCapacity }
func (s *Segment) Backup() bool            { return s.geo.Backup }

// Path is the file the segment was opened from.
func (s *Segment) Path() string { return s.path }

// CanCountWaiters reports whether the handle has the header alias, so that
// Wait counts itself in `waiters` instead of waiting blind.
func (s *Segment) CanCountWaiters() bool { return s.alias != nil }

// Seq is the header's seq (acquire load): the number of completed publishes.
func (s *Segment) Seq() uint64 {
	if s.closed.Load() {
		return 0
	}
	return load64(s.base, offSeq)
}

// Epoch, Waiters, OwnerPID and Recoveries are diagnostic loads of header words.
func (s *Segment) Epoch() uint32      { return s.word32(offEpoch) }
func (s *Segment) Waiters() uint32    { return s.word32(offWaiters) }
func (s *Segment) OwnerPID() uint32   { return s.word32(offOwnerPID) }
func (s *Segment) Recoveries() uint32 { return s.word32(offRecoveries) }

func (s *Segment) word32(off uint64) uint32 {
	if s.closed.Load() {
		return 0
	}
	return load32(s.base, off)
}
