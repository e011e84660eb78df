package specreader

import (
	"runtime"
	"sort"
	"unsafe"
)

// streamMem is access to a stream's bytes: the control pages (file offset 0)
// and the ring (file offset slots_offset), each through its own base pointer
// (21.3 step 5 maps them separately). Every load is a sync/atomic load, which
// is sequentially consistent, hence at least the acquire that 27 asks of a
// reader without fences.
type streamMem struct {
	g    StreamGeometry
	ctrl unsafe.Pointer
	ring unsafe.Pointer
	// alive answers 23.2's query for a lock byte (a file offset): whether an
	// open file description other than the asker's holds a lock on it. nil:
	// never.
	alive func(off uint64) bool
}

func (m *streamMem) h64(off uint64) uint64 { return load64(m.ctrl, off) }
func (m *streamMem) h32(off uint64) uint32 { return load32(m.ctrl, off) }

func (m *streamMem) slot(i uint64) unsafe.Pointer { return at(m.ring, i*m.g.SlotSize) }

func (m *streamMem) locked(off uint64) bool { return m.alive != nil && m.alive(off) }

// StreamCounters are the header's control words (18.2 to 18.5), each loaded on
// its own: they are not a consistent snapshot of one instant.
type StreamCounters struct {
	Head         uint64
	DataEpoch    uint32
	DataWaiters  uint32
	ClaimSeq     uint64
	ClaimDropped uint64
	SpaceEpoch   uint32
	SpaceWaiters uint32
	Dropped      uint64
	Abandoned    uint64
	ReadersGen   uint32
	Reaped       uint32
	OwnerPID     uint32
	Recoveries   uint32
}

func (m *streamMem) counters() StreamCounters {
	return StreamCounters{
		Head:         m.h64(soHead),
		DataEpoch:    m.h32(soDataEpoch),
		DataWaiters:  m.h32(soDataWaiters),
		ClaimSeq:     m.h64(soClaimSeq),
		ClaimDropped: m.h64(soClaimDropped),
		SpaceEpoch:   m.h32(soSpaceEpoch),
		SpaceWaiters: m.h32(soSpaceWaiters),
		Dropped:      m.h64(soDropped),
		Abandoned:    m.h64(soAbandoned),
		ReadersGen:   m.h32(soReadersGen),
		Reaped:       m.h32(soReaped),
		OwnerPID:     m.h32(soOwnerPID),
		Recoveries:   m.h32(soRecoveries),
	}
}

// ReaderEntry is one entry of the reader table (19.1) as a monitor sees it.
type ReaderEntry struct {
	Index      uint64
	State      uint64 // 0 free; (generation << 8) | 1 attached
	Generation uint32
	Attached   bool // state ≠ 0 (25.3 step 3's test)
	Alive      bool // attached and its lock byte held by some description (23.2, 21.5)
	Cursor     uint64
	Lost       uint64
	Received   uint64
	Skipped    uint64 // dropped claims stepped over (19.1 offset 40)
	Start      uint64 // the cursor it attached at (19.1 offset 24)
	// Group is 0 for a solo reader, else the index + 1 of the group entry
	// it is (or was, when not attached) a member of (19.1 offset 88).
	Group uint32
	// Hold is a member's step in progress (19.1 offset 48): 0, or
	// (c << 2) | step. Non-zero in a file at rest: its member died holding
	// the group mutex, and the group's next locker finishes it (26.8.3).
	Hold uint64
	// Sleeping is 0, or the generation of the attachment counted in the
	// header's data_waiters (23.4). Non-zero on an entry that is not alive: a
	// count nobody has taken back yet.
	Sleeping   uint32
	PID        uint32
	AttachedNs int64
}

// CountGap is (received + lost + skipped) − (cursor − start) for an attached
// solo entry (28.2): 0, or positive by the messages of the one advance whose
// counter the reader has stored and whose cursor it has not yet (Appendix C).
// Anything else is a bug or corruption. A member entry (Group ≠ 0) is not held
// to it: its cursor stays where it attached and its counters are its share of
// the group's (19.1); see GroupEntry.CountGap.
func (e ReaderEntry) CountGap() int64 {
	return int64(e.Received+e.Lost+e.Skipped) - int64(e.Cursor-e.Start)
}

// IsMember reports whether the entry names a group (19.1 offset 88).
func (e ReaderEntry) IsMember() bool { return e.Group != 0 }

// GroupEntry is one entry of the group table (19.3) as a monitor sees it
// (26.8.5): state first (acquire), then the rest.
type GroupEntry struct {
	Index      uint64
	State      uint64
	Active     bool // state = 1
	Generation uint32
	Name       string // name[0, min(name_len, 40))
	NameLen    uint32
	CreatedNs  int64
	Cursor     uint64
	Received   uint64
	Lost       uint64
	Skipped    uint64
	Start      uint64
	// Members are the attached reader entries naming this group; Alive,
	// those whose lock byte is held (the reference's GroupInfo.members).
	Members      int
	AliveMembers int
	// Holding is the index of a reader entry whose hold is set for this
	// group (a step in progress, or left by a dead member), or -1.
	Holding int64
}

// CountGap is (cursor − start) − (received + lost + skipped) for a group
// (28.2): 0 when its mutex is free and no member died in a step; positive by
// the one step in progress (its member's hold is set), since a step moves the
// cursor before its counter. Anything else is a bug or corruption.
func (e GroupEntry) CountGap() int64 {
	return int64(e.Cursor-e.Start) - int64(e.Received+e.Lost+e.Skipped)
}

// WriterEntry is one entry of the writer table (19.2).
type WriterEntry struct {
	Index      uint64
	State      uint64
	Generation uint32
	Attached   bool // registered: state ≠ 0
	Alive      bool // registered and its lock byte held (25.2 step 1's test, 23.2)
	Sent       uint64
	Sleeping   uint32 // 0, or the generation counted in space_waiters (23.4)
	PID        uint32
	AttachedNs int64
}

// Used reports whether the entry has ever been attached (or holds anything).
func (e ReaderEntry) Used() bool { return e.State != 0 || e.Generation != 0 }

// Used reports whether the entry has ever been registered.
func (e WriterEntry) Used() bool { return e.State != 0 || e.Generation != 0 }

func (m *streamMem) reader(i uint64) ReaderEntry {
	off := m.g.ReaderOffset(i)
	e := ReaderEntry{Index: i, State: m.h64(off + reState)} // state first (acquire), then the rest
	e.Generation = m.h32(off + reGeneration)
	e.Cursor = m.h64(off + reCursor)
	e.Lost = m.h64(off + reLost)
	e.Received = m.h64(off + reReceived)
	e.Start = m.h64(off + reStart)
	e.Skipped = m.h64(off + reSkipped)
	e.Hold = m.h64(off + reHold)
	e.Group = m.h32(off + reGroup)
	e.Sleeping = m.h32(off + reSleeping)
	e.PID = m.h32(off + rePID)
	e.AttachedNs = int64(m.h64(off + reAttachedNs))
	e.Attached = e.State != 0
	e.Alive = e.Attached && m.locked(off)
	return e
}

func (m *streamMem) group(k uint64) GroupEntry {
	off := m.g.GroupOffset(k)
	e := GroupEntry{Index: k, State: m.h64(off + geState), Holding: -1}
	e.Active = e.State == groupActive
	e.Generation = m.h32(off + geGeneration)
	e.NameLen = m.h32(off + geNameLen)
	n := uint64(min(e.NameLen, maxGroupName))
	name := make([]byte, n)
	copyAtomic(name, at(m.ctrl, off+geName), n)
	e.Name = string(name)
	e.CreatedNs = int64(m.h64(off + geCreatedNs))
	e.Cursor = m.h64(off + geCursor)
	e.Received = m.h64(off + geReceived)
	e.Lost = m.h64(off + geLost)
	e.Skipped = m.h64(off + geSkipped)
	e.Start = m.h64(off + geStart)
	for i := uint64(0); i < m.g.MaxReaders; i++ {
		r := m.reader(i)
		if uint64(r.Group) != k+1 {
			continue
		}
		if r.Attached {
			e.Members++
			if r.Alive {
				e.AliveMembers++
			}
		}
		if r.Hold != 0 {
			e.Holding = int64(i)
		}
	}
	return e
}

func (m *streamMem) writer(j uint64) WriterEntry {
	off := m.g.WriterOffset(j)
	e := WriterEntry{Index: j, State: m.h64(off + weState)}
	e.Generation = m.h32(off + weGeneration)
	e.Sent = m.h64(off + weSent)
	e.Sleeping = m.h32(off + weSleeping)
	e.PID = m.h32(off + wePID)
	e.AttachedNs = int64(m.h64(off + weAttachedNs))
	e.Attached = e.State != 0
	e.Alive = e.Attached && m.locked(off)
	return e
}

// writerAlive judges the writer of a slot (23.2, "Writer alive?") from its
// writer_index j and writer_state st. A monitor has no registration of its
// own, so the "this handle's own" rule never applies.
func (m *streamMem) writerAlive(j uint32, st uint64) bool {
	if uint64(j) >= m.g.MaxWriters {
		return false // corrupt: judged dead
	}
	off := m.g.WriterOffset(uint64(j))
	if m.h64(off+weState) != st {
		return false // freed or taken over since
	}
	return m.locked(off)
}

// SlotStatus classifies a slot by its word (20.2).
type SlotStatus string

// The classes of a slot word.
const (
	SlotNeverWritten SlotStatus = "never_written" // word 0
	SlotWriting      SlotStatus = "writing"       // W(x)
	SlotCommitted    SlotStatus = "committed"     // C(x)
	SlotAbandoned    SlotStatus = "abandoned"     // A(x)
	SlotInvalid      SlotStatus = "invalid"       // tag 0 with x > 0: never stored (corrupt)
)

// DecodeWord splits a slot word into its class and sequence number (20.2).
func DecodeWord(w uint64) (SlotStatus, uint64) {
	x := w >> 2
	switch w & 3 {
	case tagWriting:
		return SlotWriting, x
	case tagCommitted:
		return SlotCommitted, x
	case tagAbandoned:
		return SlotAbandoned, x
	}
	if w == 0 {
		return SlotNeverWritten, 0
	}
	return SlotInvalid, x
}

// SlotView is one slot as a look without attaching finds it.
type SlotView struct {
	Slot   uint64
	Word   uint64
	Status SlotStatus
	Seq    uint64 // x of the word (0 for never written)

	// Committed: the message (26.2 step 2). Payload is nil when the length is
	// not sane (CorruptLength: more than max_bytes, or in a frame stream other
	// than max_bytes): 26.2 refuses such a message, never copies it.
	Length        uint64
	TimestampNs   int64
	WriterPID     uint32
	Payload       []byte
	CorruptLength bool

	// The claimant (20.1): every class but never written. For WRITING,
	// WriterAlive is 23.2's judgement (a dead one is a hole a reader or the
	// next lap would abandon, 26.4 / 25.3 step 6). Informative for a committed
	// slot: the next lap's claimant stores these two BEFORE its mark (25.3
	// step 8.2), so the word's re-check does not cover them.
	WriterIndex uint32
	WriterState uint64
	WriterAlive bool

	// Discarded is how many copies the word's re-check threw away (a writer
	// overwrote the slot while it was being copied).
	Discarded int
}

// readSlot reads slot i consistently: the word (acquire), the fields and the
// payload (atomic loads, acquire in Go), then the word again; a copy whose
// word changed is discarded and the slot read again (26.2 step 2, 27's third
// pair). A look without attaching gates no writer, so under block as under
// drop_oldest a writer may overwrite the slot while it is copied: the
// re-check is what makes the copy whole.
func (m *streamMem) readSlot(i uint64, withPayload bool) SlotView {
	p := m.slot(i)
	v := SlotView{Slot: i}
	for {
		w := load64(p, slWord)
		v.Word = w
		v.Status, v.Seq = DecodeWord(w)
		if v.Status == SlotNeverWritten {
			return v
		}
		length := load64(p, slLength)
		ts := int64(load64(p, slTimestamp))
		pid := load32(p, slWriterPID) // each field with a load of its own width (20.1)
		idx := load32(p, slWriterIndex)
		ws := load64(p, slWriterState)
		var payload []byte
		if v.Status == SlotCommitted && withPayload && m.g.saneLength(length) {
			payload = make([]byte, length)
			copyAtomic(payload, at(p, slPayload), length)
		}
		if load64(p, slWord) != w {
			v.Discarded++
			if v.Discarded%64 == 0 {
				runtime.Gosched()
			}
			continue
		}
		v.WriterIndex, v.WriterState = idx, ws
		if v.Status == SlotCommitted {
			v.Length, v.TimestampNs, v.WriterPID = length, ts, pid
			v.CorruptLength = !m.g.saneLength(length)
			v.Payload = payload
		}
		if v.Status == SlotWriting {
			v.WriterAlive = m.writerAlive(v.WriterIndex, v.WriterState)
		}
		return v
	}
}

// RingView is a look at the whole ring without attaching.
type RingView struct {
	// Head is `head` loaded (acquire) before the first slot was read.
	Head uint64
	// Oldest is where a reader attached at "oldest" would start (26.1 step 2):
	// head − capacity, or 0.
	Oldest uint64
	// Slots holds every slot that has been written, in sequence order (each
	// read consistently on its own; slots read later may show newer laps).
	Slots []SlotView
	// NeverWritten counts the slots whose word is 0.
	NeverWritten int
}

// Messages returns the committed slots, in sequence order.
func (r RingView) Messages() []SlotView {
	var out []SlotView
	for _, s := range r.Slots {
		if s.Status == SlotCommitted {
			out = append(out, s)
		}
	}
	return out
}

func (m *streamMem) scan(withPayload bool) RingView {
	r := RingView{Head: m.h64(soHead)}
	if r.Head >= m.g.Capacity {
		r.Oldest = r.Head - m.g.Capacity
	}
	for i := uint64(0); i < m.g.Capacity; i++ {
		v := m.readSlot(i, withPayload)
		if v.Status == SlotNeverWritten {
			r.NeverWritten++
			continue
		}
		r.Slots = append(r.Slots, v)
	}
	sort.SliceStable(r.Slots, func(a, b int) bool { return r.Slots[a].Seq < r.Slots[b].Seq })
	return r
}

// MutexEvidence is section 2's optional reading of the mutex's futex word
// (header offset 512 in a stream), meaningful only for mutex_abi 0x0101 or
// 0x0102.
type MutexEvidence struct {
	Meaningful bool
	Word       uint32
	TID        uint32 // holder's thread id; 0: no live holder
	OwnerDied  bool   // FUTEX_OWNER_DIED: the next locker recovers (24.2)
	Waiters    bool   // FUTEX_WAITERS
}

func mutexEvidence(abi, word uint32) MutexEvidence {
	if abi != 0x0101 && abi != 0x0102 {
		return MutexEvidence{}
	}
	return MutexEvidence{
		Meaningful: true,
		Word:       word,
		TID:        word & 0x3FFFFFFF,
		OwnerDied:  word&0x40000000 != 0,
		Waiters:    word&0x80000000 != 0,
	}
}

// Counters loads the header's control words.
func (s *Stream) Counters() (StreamCounters, error) {
	if s.closed.Load() {
		return StreamCounters{}, errStreamClosed
	}
	return s.mem.counters(), nil
}

// Head is the header's head (acquire): the sequence numbers claimed so far.
func (s *Stream) Head() uint64 {
	if s.closed.Load() {
		return 0
	}
	return s.mem.h64(soHead)
}

// Readers returns every entry of the reader table.
func (s *Stream) Readers() ([]ReaderEntry, error) {
	if s.closed.Load() {
		return nil, errStreamClosed
	}
	out := make([]ReaderEntry, s.mem.g.MaxReaders)
	for i := range out {
		out[i] = s.mem.reader(uint64(i))
	}
	return out, nil
}

// Writers returns every entry of the writer table.
func (s *Stream) Writers() ([]WriterEntry, error) {
	if s.closed.Load() {
		return nil, errStreamClosed
	}
	out := make([]WriterEntry, s.mem.g.MaxWriters)
	for j := range out {
		out[j] = s.mem.writer(uint64(j))
	}
	return out, nil
}

// Groups returns every entry of the group table (none when max_groups is 0);
// GroupEntry.Active says which are groups (26.8.5).
func (s *Stream) Groups() ([]GroupEntry, error) {
	if s.closed.Load() {
		return nil, errStreamClosed
	}
	out := make([]GroupEntry, s.mem.g.MaxGroups)
	for k := range out {
		out[k] = s.mem.group(uint64(k))
	}
	return out, nil
}

// Slot reads slot i (0 ≤ i < capacity) consistently.
func (s *Stream) Slot(i uint64) (SlotView, error) {
	if s.closed.Load() {
		return SlotView{}, errStreamClosed
	}
	if i >= s.mem.g.Capacity {
		return SlotView{}, argErr("slot %d is past the ring (capacity %d)", i, s.mem.g.Capacity)
	}
	return s.mem.readSlot(i, true), nil
}

// Scan looks at the whole ring without attaching: head, then every slot, each
// read consistently, sorted by sequence number.
func (s *Stream) Scan() (RingView, error) {
	if s.closed.Load() {
		return RingView{}, errStreamClosed
	}
	return s.mem.scan(true), nil
}

// Mutex returns the futex-word evidence of section 2.
func (s *Stream) Mutex() MutexEvidence {
	if s.closed.Load() {
		return MutexEvidence{}
	}
	return mutexEvidence(s.id.MutexABI, s.mem.h32(soMutex))
}
