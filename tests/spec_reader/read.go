package specreader

import (
	"errors"
	"math"
	"syscall"
	"time"
)

// Snapshot is one consistent copy of a record slot (section 10.2).
type Snapshot struct {
	Seq         uint64 // the slot's seq: the publish number the snapshot holds
	Counter     uint64
	TimestampNs int64
	WriterPID   uint32
	Message     []byte // message_len bytes, UTF-8 as the writer gave it
	Values      []byte // values_size raw little-endian bytes, C order
	Slot        int    // 0: the live slot, 1: the backup slot
}

// Tunables of the read loop (section 10.2).
const (
	spinRounds  = 64
	stuckPeriod = 1024
)

// Read returns a consistent snapshot with the seqlock protocol of section 10:
// the live slot, then (with BACKUP) the backup slot, retrying until one copy
// is consistent. It never writes to the segment and never blocks on a writer,
// but gives up with a LayoutError when both slots stay odd (corrupt) and,
// without BACKUP, with a TornRecordError when the live slot stays odd under a
// dead or stalled writer.
func (s *Segment) Read() (*Snapshot, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	g := &s.geo
	snap := &Snapshot{
		Values:  make([]byte, g.ValuesSize),
		Message: make([]byte, 0, g.MessageCapacity),
	}
	var st stuckState
	for round := uint64(1); ; round++ {
		for slot := 0; slot < 2; slot++ {
			if slot == 1 && !g.Backup {
				break
			}
			ok, err := s.attempt(slot, snap)
			if err != nil {
				return nil, err
			}
			if ok {
				snap.Slot = slot
				return snap, nil
			}
		}
		if round%stuckPeriod == 0 {
			if err := s.stuckCheck(&st); err != nil {
				return nil, err
			}
		}
		if round > spinRounds {
			syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
		}
		// Go has no portable CPU spin hint (PAUSE/YIELD); the first rounds
		// retry at once.
	}
}

// attempt is section 10.1 on one slot. It reports whether the copy in snap is
// consistent; a consistent copy whose message_len exceeds the capacity is a
// LayoutError.
func (s *Segment) attempt(slot int, snap *Snapshot) (bool, error) {
	g := &s.geo
	rec := g.RecordOffset[slot]
	// 1. s0 = lock.load(acquire); odd: fail.
	s0 := load64(s.base, rec+recLock)
	if s0&1 != 0 {
		return false, nil
	}
	// 2. The meta words, the values and the message, with atomic loads
	//    (sync/atomic loads are at least acquire, which also gives step 3).
	seq := load64(s.base, rec+recSeq)
	counter := load64(s.base, rec+recCounter)
	ts := load64(s.base, rec+recTimestamp)
	w4 := load64(s.base, rec+recWriterPID) // writer_pid | message_len << 32
	pid, mlen := uint32(w4), uint32(w4>>32)
	copyAtomic(snap.Values, at(s.base, rec+uint64(g.ValuesOffset)), g.ValuesSize)
	n := min(mlen, g.MessageCapacity)
	snap.Message = snap.Message[:n]
	copyAtomic(snap.Message, at(s.base, rec+uint64(g.MessageOffset)), uint64(n))
	// 3. Acquire fence: implied, every load above is a sync/atomic load.
	// 4. s1 = lock.load(); consistent iff s1 == s0.
	if load64(s.base, rec+recLock) != s0 {
		return false, nil
	}
	if mlen > g.MessageCapacity {
		return false, layoutErr("corrupt record in slot %d: message length %d exceeds the capacity %d",
			slot, mlen, g.MessageCapacity)
	}
	snap.Seq, snap.Counter, snap.TimestampNs, snap.WriterPID = seq, counter, int64(ts), pid
	return true, nil
}

// stuckState is one Read call's memory of the previous stuck check (10.3).
type stuckState struct {
	valid  bool
	l0, l1 uint64
	since  time.Time
}

func (st *stuckState) remember(l0, l1 uint64) {
	st.valid, st.l0, st.l1, st.since = true, l0, l1, time.Now()
}

// stuckCheck is section 10.3.
func (s *Segment) stuckCheck(st *stuckState) error {
	g := &s.geo
	l0 := load64(s.base, g.RecordOffset[0]+recLock)
	var l1 uint64
	if g.Backup {
		l1 = load64(s.base, g.RecordOffset[1]+recLock)
	}
	if l0&1 == 0 || !st.valid || l0 != st.l0 || l1 != st.l1 {
		st.remember(l0, l1)
		return nil
	}
	// The same odd l0 twice, at least 1024 rounds apart.
	if g.Backup {
		if l1&1 != 0 {
			return layoutErr("corrupt segment: both record slots are marked as being written (locks %d and %d)", l0, l1)
		}
		return nil
	}
	owner := load32(s.base, offOwnerPID)
	if now := load64(s.base, g.RecordOffset[0]+recLock); now != l0 {
		st.remember(now, l1) // the writer finished meanwhile
		return nil
	}
	if !pidAlive(owner) {
		return tornErr("the live record is torn by a writer that died mid-write (owner_pid %d, lock %d); "+
			"it stays torn until a complete publish", owner, l0)
	}
	if time.Since(st.since) > s.stall {
		return tornErr("the live record is stalled mid-write by process %d for over %v (lock %d)", owner, s.stall, l0)
	}
	return nil
}

// pidAlive: kill(pid, 0) succeeds or fails with EPERM. 0 is "no owner"; a
// value that is not a positive pid_t would address a process group, so it
// counts as dead too.
func pidAlive(pid uint32) bool {
	if pid == 0 || pid > math.MaxInt32 {
		return false
	}
	err := syscall.Kill(int(pid), 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
