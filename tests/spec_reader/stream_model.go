package specreader

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// A model of an attached reader (26.1 to 26.4, with the recovery of 24.2 its
// attach would make), run on a PRIVATE copy of the stream's bytes. Nothing is
// ever stored to the segment: the stores the protocol prescribes (the entry,
// the abandon CAS, the counters, the recovery) land in the copy. It answers
// "what would a reader attached at oldest get from this file now?", which is
// what the vectors' manifest (tests/vectors/streams/streams.tsv) states. The
// copy of a stream that writers are using is not one instant's state; the
// model is meant for files at rest.

// Message is one message a reader takes (26.2 step 2).
type Message struct {
	Seq         uint64
	Length      uint64
	TimestampNs int64
	WriterPID   uint32
	Payload     []byte
}

// ReaderModel is the outcome of SimulateOldestReader.
type ReaderModel struct {
	Recovered bool   // the attach got EOWNERDEAD and recovered (24.2)
	Entry     uint64 // the reader entry it attached to
	Reaped    int    // dead readers it reaped to find a free entry (26.7)
	// Head and Cursor0: the header's head after the attach, and the reader's
	// cursor at attach.
	Head    uint64
	Cursor0 uint64
	// What the takes gave, until the ring had nothing more (or a live
	// writer's hole, or a refusal).
	Messages []Message
	Cursor   uint64
	Lost     uint64
	Received uint64
	Skipped  uint64 // dropped claims stepped over (26.2 step 5)
	// GroupRecovered is the group whose dead member's step the attach
	// finished before reusing its entry (26.1 step 3), or -1.
	GroupRecovered int64
	// StoppedAt says why the takes stopped: "empty", "hole" (a live writer is
	// still filling slot Cursor), or "error" (RecvErr).
	StoppedAt string
	RecvErr   error
	// Counters are the copy's header words once the takes stopped.
	Counters StreamCounters
}

// OwnMutexABI returns the mutex_size and mutex_abi a glibc process on this
// architecture records (section 2), and whether there is one. A Go program
// without cgo cannot lock a glibc mutex at all; the model asks what a glibc
// process of this architecture would be allowed to do.
func OwnMutexABI() (size, abi uint32, ok bool) {
	switch runtime.GOARCH {
	case "amd64":
		return 40, 0x0101, true
	case "arm64":
		return 48, 0x0102, true
	}
	return 0, 0, false
}

// privateCopy copies [0, total_size) of the stream into 8-byte-aligned Go
// memory with atomic loads, and returns a streamMem over it whose liveness
// queries still go to the kernel about the real file.
func (s *Stream) privateCopy() (streamMem, []uint64) {
	g := s.mem.g
	buf := make([]uint64, g.TotalSize/8)
	base := unsafe.Pointer(&buf[0])
	dst := unsafe.Slice((*byte)(base), g.TotalSize)
	copyAtomic(dst[:g.SlotsOffset], s.mem.ctrl, g.SlotsOffset)
	copyAtomic(dst[g.SlotsOffset:], s.mem.ring, g.TotalSize-g.SlotsOffset)
	return streamMem{g: g, ctrl: base, ring: at(base, g.SlotsOffset), alive: s.locked}, buf
}

func store64(base unsafe.Pointer, off, v uint64) {
	atomic.StoreUint64((*uint64)(at(base, off)), le64(v))
}

func store32(base unsafe.Pointer, off uint64, v uint32) {
	atomic.StoreUint32((*uint32)(at(base, off)), le32(v))
}

func cas64(base unsafe.Pointer, off, old, nw uint64) bool {
	return atomic.CompareAndSwapUint64((*uint64)(at(base, off)), le64(old), le64(nw))
}

func add64(base unsafe.Pointer, off, d uint64) { store64(base, off, load64(base, off)+d) }
func add32(base unsafe.Pointer, off uint64, d uint32) {
	store32(base, off, load32(base, off)+d)
}

func wordOf(x uint64, tag uint64) uint64 { return x<<2 | tag }

// recover is 24.2 on the model's memory.
func (m *streamMem) recover() {
	c := m.g.Capacity
	// 1. The pending overwrite.
	if p := m.h64(soClaimSeq); p != 0 {
		x := p - 1
		w := load64(m.slot(x%c), slWord)
		if w == wordOf(x, tagWriting) || w == wordOf(x, tagAbandoned) {
			store64(m.ctrl, soDropped, m.h64(soClaimDropped))
		}
		store64(m.ctrl, soClaimSeq, 0)
	}
	// 2. Marks at and past head.
	h := m.h64(soHead)
	for k := uint64(0); k < c; k++ {
		p := m.slot(h % c)
		if cas64(p, slWord, wordOf(h, tagWriting), wordOf(h, tagAbandoned)) {
			add64(m.ctrl, soAbandoned, 1)
		}
		if load64(p, slWord) != wordOf(h, tagAbandoned) {
			break
		}
		h++
	}
	store64(m.ctrl, soHead, h)     // 3.
	add32(m.ctrl, soReadersGen, 1) // 4.
	add32(m.ctrl, soRecoveries, 1) // 5.
	add32(m.ctrl, soDataEpoch, 1)  // 6. notify readers (nobody sleeps on a copy)
	store32(m.ctrl, soMutex, 0)    // the model's mutex is consistent again, and free
	store32(m.ctrl, soOwnerPID, 0) // 24.1: 0 before unlocking
}

// recoverGroup is 26.8.3 on the model's memory: group k's mutex was found
// owner-dead; the step its dead holder left half done (the hold of a reader
// entry naming group k) is finished, so that received + lost + skipped =
// cursor − start again.
func (m *streamMem) recoverGroup(k uint64) {
	gOff := m.g.GroupOffset(k)
	for i := uint64(0); i < m.g.MaxReaders; i++ {
		rOff := m.g.ReaderOffset(i)
		hold := m.h64(rOff + reHold)
		if hold == 0 || uint64(m.h32(rOff+reGroup)) != k+1 {
			continue
		}
		c, step := hold>>2, hold&3
		cursor, start := m.h64(gOff+geCursor), m.h64(gOff+geStart)
		received, lost, skipped := m.h64(gOff+geReceived), m.h64(gOff+geLost), m.h64(gOff+geSkipped)
		span := cursor - start
		switch {
		case cursor == c && step == holdCopy: // taken, never returned: lost (at most once)
			store64(m.ctrl, gOff+geLost, lost+1)
			store64(m.ctrl, gOff+geCursor, c+1)
		case cursor == c: // a lose or a skip that moved nothing: redone by the next take
		case step == holdCopy: // copied, then lost with its member
			store64(m.ctrl, gOff+geLost, lost+1)
			store64(m.ctrl, gOff+geReceived, span-(lost+1)-skipped)
		case step == holdLose:
			store64(m.ctrl, gOff+geLost, span-received-skipped)
		default:
			store64(m.ctrl, gOff+geSkipped, span-received-lost)
		}
		store64(m.ctrl, rOff+reHold, 0)
	}
	add32(m.ctrl, soSpaceEpoch, 1) // notify writers (nobody sleeps on a copy)
	mx := gOff + geMutex
	store32(m.ctrl, mx, 0) // the model's group mutex is consistent again, and free
}

// SimulateOldestReader runs the model: attach at "oldest" (26.1, recovering
// first if the mutex's futex word says its owner died), then take (26.2)
// until nothing more, judging every hole at once (a real reader judges it
// kHoleCheck after it first found it; only the delay differs).
func (s *Stream) SimulateOldestReader() (*ReaderModel, error) {
	if s.closed.Load() {
		return nil, errStreamClosed
	}
	size, abi, ok := OwnMutexABI()
	if !ok || s.id.MutexSize != size || s.id.MutexABI != abi {
		return nil, layoutErr("stream %s was created by a process with another C library or architecture: "+
			"attaching a reader takes its mutex, which this process cannot use (mutex_size %d, mutex_abi 0x%04x)",
			s.path, s.id.MutexSize, s.id.MutexABI)
	}
	m, keep := s.privateCopy()
	defer runtime.KeepAlive(keep)
	return m.simulateOldest(s.path, s.id.MutexABI)
}

func (m *streamMem) simulateOldest(who string, abi uint32) (*ReaderModel, error) {
	r := &ReaderModel{GroupRecovered: -1}
	g := m.g
	// Lock the mutex: the evidence of section 2 stands in for pthread_mutex_lock.
	ev := mutexEvidence(abi, m.h32(soMutex))
	switch {
	case ev.TID != 0:
		return nil, timeoutErr("stream %s: its mutex is held by thread %d (a real attach waits up to 10 s)", who, ev.TID)
	case ev.OwnerDied:
		m.recover()
		r.Recovered = true
	}
	// Pass 0, then (after reaping) pass 1.
	entry := int64(-1)
	for pass := 0; pass < 2 && entry < 0; pass++ {
		for i := uint64(0); i < g.MaxReaders; i++ {
			if m.h64(g.ReaderOffset(i)+reState) == 0 {
				entry = int64(i)
				break
			}
		}
		if entry >= 0 || pass == 1 {
			break
		}
		for i := uint64(0); i < g.MaxReaders; i++ { // 26.7
			off := g.ReaderOffset(i)
			if st := m.h64(off + reState); st != 0 && !m.locked(off) && cas64(m.ctrl, off+reState, st, 0) {
				add32(m.ctrl, soReaped, 1)
				add32(m.ctrl, soReadersGen, 1)
				r.Reaped++
			}
		}
		if r.Reaped == 0 {
			break
		}
	}
	if entry < 0 {
		return nil, &Error{Kind: KindError, Detail: fmt.Sprintf("stream %s has all %d reader entries in use by live readers "+
			"(max_readers)", who, g.MaxReaders)}
	}
	r.Entry = uint64(entry)
	h := m.h64(soHead)
	if h >= g.Capacity {
		r.Cursor0 = h - g.Capacity
	}
	off := g.ReaderOffset(r.Entry)
	// 26.1 step 3: a dead member's step left in this entry is finished first, by
	// a lock of its group's mutex (owner-dead: it died holding it).
	if old := uint64(m.h32(off + reGroup)); m.h64(off+reHold) != 0 && old != 0 && old <= g.MaxGroups {
		m.recoverGroup(old - 1)
		r.GroupRecovered = int64(old - 1)
	}
	store64(m.ctrl, off+reHold, 0)
	store32(m.ctrl, off+reGroup, 0)
	gen := m.h32(off+reGeneration) + 1
	store32(m.ctrl, off+reGeneration, gen)
	store64(m.ctrl, off+reCursor, r.Cursor0)
	store64(m.ctrl, off+reStart, r.Cursor0) // 26.1 step 3: the cursor it attached at
	store64(m.ctrl, off+reLost, 0)
	store64(m.ctrl, off+reReceived, 0)
	store64(m.ctrl, off+reSkipped, 0)
	store64(m.ctrl, off+reState, uint64(gen)<<8|1)
	add32(m.ctrl, soReadersGen, 1)
	r.Head = h
	r.Cursor = r.Cursor0

	// Takes (26.2), until empty, a live hole, or a refusal.
	for {
		msg, stop, err := m.take(r, who)
		if err != nil {
			r.StoppedAt, r.RecvErr = "error", err
			break
		}
		if stop != "" {
			r.StoppedAt = stop
			break
		}
		r.Messages = append(r.Messages, *msg)
	}
	store64(m.ctrl, off+reLost, r.Lost)
	store64(m.ctrl, off+reReceived, r.Received)
	store64(m.ctrl, off+reSkipped, r.Skipped)
	store64(m.ctrl, off+reCursor, r.Cursor)
	r.Counters = m.counters()
	return r, nil
}

// take is one take of 26.2 on the model's memory: a message, or why there is
// none yet ("empty", "hole"), or a refusal. A refusal leaves the cursor and
// the counts as they were, so the next take refuses again (22).
func (m *streamMem) take(r *ReaderModel, who string) (*Message, string, error) {
	g := m.g
	for {
		c := r.Cursor
		p := m.slot(c % g.Capacity)
		w := load64(p, slWord) // 1.
		x := w >> 2
		switch {
		case w == wordOf(c, tagCommitted): // 2.
			length := load64(p, slLength)
			ts := int64(load64(p, slTimestamp))
			pid := load32(p, slWriterPID)
			sane := g.saneLength(length)
			var payload []byte
			if sane {
				payload = make([]byte, length)
				copyAtomic(payload, at(p, slPayload), length)
			}
			if load64(p, slWord) != w {
				continue
			}
			if length > g.MaxBytes {
				return nil, "", layoutErr("stream %s: message %d claims %d bytes, more than max_bytes %d (corrupt segment)",
					who, c, length, g.MaxBytes)
			}
			if !sane {
				return nil, "", layoutErr("stream %s: message %d claims %d bytes, not the frame's %d (corrupt segment)",
					who, c, length, g.MaxBytes)
			}
			r.Received++
			r.Cursor = c + 1
			return &Message{Seq: c, Length: length, TimestampNs: ts, WriterPID: pid, Payload: payload}, "", nil
		case w != 0 && w&3 == 0: // 3. tag 0 with x > 0: never stored (20.2)
			return nil, "", layoutErr("stream %s: slot of message %d holds a word with no tag, for message %d "+
				"(corrupt segment)", who, c, x)
		case x > c: // 4. a later sequence number: a lap (26.3), if it is of this slot
			if x%g.Capacity != c%g.Capacity {
				return nil, "", layoutErr("stream %s: slot of message %d holds a word for message %d (corrupt segment)",
					who, c, x)
			}
			h := m.h64(soHead)
			next := uint64(0)
			if h >= g.Capacity {
				next = h - g.Capacity + 1
			}
			next = max(next, c+1, x-g.Capacity+1)
			r.Lost += next - c
			r.Cursor = next
		case w == wordOf(c, tagAbandoned): // 5. a dropped claim (cancelled = c + 1), or lost
			cancelled := load64(p, slCancelled) == c+1
			if load64(p, slWord) != w {
				continue // overwritten meanwhile
			}
			if cancelled {
				r.Skipped++
			} else {
				r.Lost++
			}
			r.Cursor = c + 1
		case w == wordOf(c, tagWriting): // 6. a hole: judge it (26.4)
			if m.writerAlive(load32(p, slWriterIndex), load64(p, slWriterState)) {
				return nil, "hole", nil
			}
			if cas64(p, slWord, w, wordOf(c, tagAbandoned)) {
				add64(m.ctrl, soAbandoned, 1)
				add32(m.ctrl, soDataEpoch, 1)
			}
		default: // 7. 0, or an older lap
			return nil, "empty", nil
		}
	}
}
