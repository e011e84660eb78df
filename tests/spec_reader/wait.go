package specreader

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	futexWaitBitset = 9 // FUTEX_WAIT_BITSET, without FUTEX_PRIVATE_FLAG: shared
	futexBitsetAny  = 0xFFFFFFFF
	clockMonotonic  = 1
	blindSlice      = time.Millisecond
)

func monoNow() time.Duration {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Sec)*time.Second + time.Duration(ts.Nsec)
}

// futexWait sleeps while the u32 at addr equals val, until the absolute
// CLOCK_MONOTONIC time deadline (< 0: no deadline). Every outcome (woken,
// EAGAIN, ETIMEDOUT, EINTR) just returns: the caller re-checks.
func futexWait(addr unsafe.Pointer, val uint32, deadline time.Duration) {
	var tsp uintptr
	var ts syscall.Timespec
	if deadline >= 0 {
		ts = syscall.NsecToTimespec(int64(deadline))
		tsp = uintptr(unsafe.Pointer(&ts))
	}
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(addr), futexWaitBitset, uintptr(val), tsp, 0, futexBitsetAny)
}

// Wait returns once the header's seq exceeds last (section 11), with the new
// seq. A negative timeout waits forever; on timeout it returns the current
// seq and a WaitTimeoutError. A handle with the header alias counts itself in
// `waiters` while it waits; one without it waits blind, in 1 ms slices.
func (s *Segment) Wait(last uint64, timeout time.Duration) (uint64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	// 1.
	if cur := load64(s.base, offSeq); cur > last {
		return cur, nil
	}
	deadline := time.Duration(-1)
	if timeout >= 0 {
		deadline = monoNow() + timeout
	}
	// 2. No spin.
	// 3. Count ourselves if we can write page 0.
	counted := s.abase != nil
	if counted {
		w := (*uint32)(at(s.abase, offWaiters))
		atomic.AddUint32(w, 1)
		defer atomic.AddUint32(w, ^uint32(0)) // 5.
	}
	epoch := at(s.base, offEpoch)
	// 4.
	for {
		e := atomic.LoadUint32((*uint32)(epoch))
		if cur := load64(s.base, offSeq); cur > last {
			return cur, nil
		}
		now := monoNow()
		if deadline >= 0 && now >= deadline {
			return load64(s.base, offSeq), timeoutErr("no publish after seq %d within %v", last, timeout)
		}
		d := deadline
		if !counted && (d < 0 || d > now+blindSlice) {
			d = now + blindSlice
		}
		futexWait(epoch, e, d)
	}
}
