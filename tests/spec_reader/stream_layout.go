package specreader

import "fmt"

// Layout version 2, kind 2: streams (LAYOUT.md Part II). The offsets below are
// copied from the tables of sections 16, 18, 19 (19.3: groups) and 20.

// The common prefix (section 16) and the kind word.
const (
	layoutV2   = 2
	offKind    = 28 // version 2: kind (version 1: the record's flags)
	kindRecord = 1  // reserved for a version-2 record; none exists
	kindStream = 2
)

// Stream header, identity (18.1).
const (
	soFlags         = 32
	soCapacity      = 36
	soMaxBytes      = 40
	soSlotSize      = 48
	soSlotsOffset   = 56
	soMaxReaders    = 64
	soMaxWriters    = 68
	soReadersOffset = 72
	soWritersOffset = 80
	soDType         = 88
	soNdim          = 92
	soShape         = 96
	soMutexSize     = 160
	soMutexABI      = 164
	soCreationID    = 168
	soCreatedNs     = 184
	soCreatorPID    = 192
	soMaxGroups     = 196 // u32: entries of the group table (0: none)
	soGroupsOffset  = 200 // u64: 0 when max_groups is 0
)

// Head line (18.2), space line (18.3), stats line (18.4), writer line (18.5).
const (
	soHead         = 256
	soDataEpoch    = 264
	soDataWaiters  = 268
	soClaimSeq     = 272
	soClaimDropped = 280
	soSpaceEpoch   = 320
	soSpaceWaiters = 324
	soDropped      = 384
	soAbandoned    = 392
	soReadersGen   = 400
	soReaped       = 404
	soOwnerPID     = 448
	soRecoveries   = 452
	soMutex        = 512
)

// streamReserved are the header bytes that must be 0 (18.5, S16).
var streamReserved = [][2]int{{208, 256}, {288, 320}, {328, 384}, {408, 448}, {456, 512}, {576, 4096}}

// Reader entry (19.1, 128 bytes), writer entry (19.2, 64 bytes).
const (
	readerEntrySize = 128
	reCursor        = 0
	reLost          = 8
	reReceived      = 16
	reStart         = 24 // the cursor it attached at (28.2)
	reSleeping      = 32 // u32: its generation while counted in data_waiters (23.4)
	reSkipped       = 40 // dropped claims stepped over (25.7)
	reHold          = 48 // a member's step in progress: (c << 2) | step, 0 none (26.8.2)
	reState         = 64
	rePID           = 72
	reGeneration    = 76
	reAttachedNs    = 80
	reGroup         = 88 // u32: group index + 1 of a member, 0 solo

	writerEntrySize = 64
	weState         = 0
	wePID           = 8
	weGeneration    = 12
	weSent          = 16
	weAttachedNs    = 24
	weSleeping      = 32 // u32: its generation while counted in space_waiters (23.4)
)

// Group entry (19.3, 192 bytes) and a member's hold steps (19.1, 26.8.2).
const (
	groupEntrySize = 192
	geCursor       = 0
	geReceived     = 8
	geLost         = 16
	geSkipped      = 24
	geStart        = 32
	geMutex        = 64
	geState        = 128
	geGeneration   = 136
	geNameLen      = 140
	geCreatedNs    = 144
	geName         = 152
	maxGroupName   = 40
	groupActive    = 1

	holdCopy = 1
	holdLose = 2
	holdSkip = 3
)

// Slot header (20.1) and slot word tags (20.2).
const (
	slHeader      = 64
	slWord        = 0
	slLength      = 8
	slTimestamp   = 16
	slWriterPID   = 24
	slWriterIndex = 28
	slWriterState = 32
	slCancelled   = 40 // x + 1 when A(x) is a dropped claim (25.7)
	slPayload     = 64

	tagWriting   = 1
	tagCommitted = 2
	tagAbandoned = 3

	// MaxStreamSeq is the last sequence number a stream may use (20.2).
	MaxStreamSeq = uint64(1)<<62 - 1
)

// Stream limits (sections 17 and 29).
const (
	MaxStreamCapacity = uint64(1) << 30
	MaxStreamMaxBytes = uint64(1) << 30
	MaxStreamTable    = 1024
	MaxStreamGroups   = 1024
	MaxStreamRing     = uint64(1) << 40
	flagDropOldest    = 1
)

// Backpressure is the stream's policy (18.1 flags bit 0).
type Backpressure uint32

// The two backpressures of 17.
const (
	Block      Backpressure = 0
	DropOldest Backpressure = 1
)

func (b Backpressure) String() string {
	switch b {
	case Block:
		return "block"
	case DropOldest:
		return "drop_oldest"
	}
	return fmt.Sprintf("backpressure(%d)", uint32(b))
}

// StreamParams are the inputs of compute_stream_geometry (17). The fields are
// wide enough to hold any header value, so that an opener can pass what it
// found and let the geometry refuse it.
type StreamParams struct {
	Capacity     uint64
	MaxBytes     uint64
	Backpressure Backpressure
	MaxReaders   uint64
	MaxWriters   uint64
	MaxGroups    uint64   // 0: no group table
	DType        DType    // 0: byte messages
	Shape        []uint64 // frames only
}

// StreamGeometry is every size and offset of a stream (17).
type StreamGeometry struct {
	StreamParams
	SlotSize      uint64
	ReadersOffset uint64
	WritersOffset uint64
	GroupsOffset  uint64 // 0 when MaxGroups is 0
	SlotsOffset   uint64
	TotalSize     uint64
}

// IsFrames reports whether the stream carries fixed-size arrays (dtype ≠ 0).
func (g StreamGeometry) IsFrames() bool { return g.DType != 0 }

// DTypeName is numpy's name of a frame's dtype, "bytes" for a byte stream.
func (g StreamGeometry) DTypeName() string {
	if g.DType == 0 {
		return "bytes"
	}
	return g.DType.String()
}

// ShapeString prints a frame's shape as Python prints a tuple; "-" for a byte
// stream (the manifest's notation).
func (g StreamGeometry) ShapeString() string {
	if g.DType == 0 {
		return "-"
	}
	return Geometry{Shape: g.Shape}.ShapeString()
}

// ComputeStreamGeometry is compute_stream_geometry (17), its checks in the
// order given there. A refusal is an ArgumentError (a DtypeError for a bad
// dtype code), as at create; the opener turns it into a LayoutError
// "impossible geometry: …" (S17). The texts follow the reference's where the
// spec or the vectors quote them.
func ComputeStreamGeometry(p StreamParams) (StreamGeometry, error) {
	if p.Capacity < 1 || p.Capacity > MaxStreamCapacity {
		return StreamGeometry{}, argErr("capacity must be 1 to 2**30 messages, got %d", p.Capacity)
	}
	if p.MaxBytes < 1 || p.MaxBytes > MaxStreamMaxBytes {
		return StreamGeometry{}, argErr("max_bytes must be 1 to 2**30 bytes, got %d", p.MaxBytes)
	}
	if p.MaxReaders < 1 || p.MaxReaders > MaxStreamTable {
		return StreamGeometry{}, argErr("max_readers must be 1 to 1024, got %d", p.MaxReaders)
	}
	if p.MaxWriters < 1 || p.MaxWriters > MaxStreamTable {
		return StreamGeometry{}, argErr("max_writers must be 1 to 1024, got %d", p.MaxWriters)
	}
	if p.MaxGroups > MaxStreamGroups {
		return StreamGeometry{}, argErr("max_groups must be 0 to 1024, got %d", p.MaxGroups)
	}
	if p.Backpressure != Block && p.Backpressure != DropOldest {
		return StreamGeometry{}, argErr("backpressure must be block or drop_oldest, got %d", uint32(p.Backpressure))
	}
	if p.DType == 0 {
		if len(p.Shape) != 0 {
			return StreamGeometry{}, argErr("a byte stream has no shape (ndim %d)", len(p.Shape))
		}
	} else {
		if !p.DType.Valid() {
			return StreamGeometry{}, &Error{Kind: KindDtype, Detail: fmt.Sprintf("unknown dtype code %d", uint32(p.DType))}
		}
		if len(p.Shape) > MaxNdim {
			return StreamGeometry{}, argErr("ndim %d exceeds %d", len(p.Shape), MaxNdim)
		}
		bytes := uint64(p.DType.ItemSize())
		for i, e := range p.Shape {
			if e != 0 && bytes > MaxStreamMaxBytes/e {
				return StreamGeometry{}, argErr("a frame is limited to 2**30 bytes (shape[%d] = %d)", i, e)
			}
			bytes *= e
		}
		if bytes != p.MaxBytes {
			return StreamGeometry{}, argErr("a frame of this dtype and shape is %d bytes, not %d (max_bytes)", bytes, p.MaxBytes)
		}
	}
	g := StreamGeometry{StreamParams: p}
	g.Shape = append([]uint64(nil), p.Shape...)
	g.SlotSize = slHeader + roundUp(p.MaxBytes, 64)
	if p.Capacity > MaxStreamRing/g.SlotSize {
		return StreamGeometry{}, argErr("capacity * max_bytes is too large: the ring would exceed 2**40 bytes "+
			"(capacity %d, slot_size %d)", p.Capacity, g.SlotSize)
	}
	g.ReadersOffset = HeaderSize
	g.WritersOffset = g.ReadersOffset + readerEntrySize*p.MaxReaders
	writersEnd := g.WritersOffset + writerEntrySize*p.MaxWriters
	if p.MaxGroups != 0 {
		g.GroupsOffset = writersEnd
	}
	g.SlotsOffset = roundUp(writersEnd+groupEntrySize*p.MaxGroups, PageSize)
	g.TotalSize = roundUp(g.SlotsOffset+p.Capacity*g.SlotSize, PageSize)
	return g, nil
}

// saneLength is 26.2's test of a committed length: at most max_bytes in a
// byte stream, exactly max_bytes in a frame stream.
func (g StreamGeometry) saneLength(n uint64) bool {
	if g.IsFrames() {
		return n == g.MaxBytes
	}
	return n <= g.MaxBytes
}

// SlotOffset is slot i's offset from the start of the file.
func (g StreamGeometry) SlotOffset(i uint64) uint64 { return g.SlotsOffset + i*g.SlotSize }

// ReaderOffset and WriterOffset are the entries' file offsets: their lock bytes (19, 23.1).
func (g StreamGeometry) ReaderOffset(i uint64) uint64 { return g.ReadersOffset + readerEntrySize*i }
func (g StreamGeometry) WriterOffset(j uint64) uint64 { return g.WritersOffset + writerEntrySize*j }

// GroupOffset is group entry k's file offset (19.3); only for k < MaxGroups.
func (g StreamGeometry) GroupOffset(k uint64) uint64 { return g.GroupsOffset + groupEntrySize*k }
