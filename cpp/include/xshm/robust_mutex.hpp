// The writer mutex: a pthread mutex in the segment, process-shared, robust (the kernel hands
// it on with EOWNERDEAD when its owner dies) and error-checking (relocking from the owning
// thread is an error, not a deadlock). Only the creator initialises it, before the segment
// is marked ready; re-initialising a live mutex is undefined behaviour. Waiting for it takes a
// relative timeout on steady_clock (clock.hpp), in slices (see lock()).
#pragma once

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "clock.hpp"
#include "errors.hpp"

namespace xshm::robust_mutex {

inline void init(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  int rc = pthread_mutexattr_init(&attr);
  if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  if (rc == 0) rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) xshm::detail::throw_errno(rc, "pthread_mutex_init");
}

enum class LockResult { Acquired, OwnerDied, TimedOut };

/// Refuses a mutex in a segment that is not the kind init() makes, before glibc reads it: its
/// bytes come from the segment, and glibc asserts (aborting the process) on some kinds it
/// finds there (a priority-protect kind with a bad ceiling, say). glibc keeps the kind in
/// `__data.__kind`, at offset 16 on every 64-bit glibc ABI (segments record theirs in
/// `mutex_abi`), set by pthread_mutex_init and never changed for a robust error-checking
/// mutex. Elsewhere (another libc) nothing is checked.
inline void check_kind(const pthread_mutex_t* m) {
#if defined(__GLIBC__) && defined(__LP64__)
  static const int expected = [] {
    pthread_mutex_t probe;
    init(&probe);
    int k = 0;
    std::memcpy(&k, reinterpret_cast<const unsigned char*>(&probe) + 16, sizeof k);
    pthread_mutex_destroy(&probe);
    return k;
  }();
  // The word is never written after init; other processes' lock operations touch other words.
  const int kind = __atomic_load_n(
      reinterpret_cast<const int*>(reinterpret_cast<const unsigned char*>(m) + 16), __ATOMIC_RELAXED);
  if (kind != expected)
    throw LayoutError("a mutex in the segment is not one xshm makes (its kind word is " +
                      std::to_string(kind) + ", not " + std::to_string(expected) +
                      "): the segment is corrupt; re-create it");
#else
  (void)m;
#endif
}

/// Slices of a wait for the mutex: how often a wait with a hook calls it.
inline constexpr std::chrono::milliseconds kLockSlice{100};

namespace impl {

inline LockResult lock_result(int rc) {
  switch (rc) {
    case 0:
      return LockResult::Acquired;
    case EOWNERDEAD:
      return LockResult::OwnerDied;
    case ETIMEDOUT:
      return LockResult::TimedOut;
    case EDEADLK:
      throw ArgumentError(
          "this thread already holds the segment's writer lock (a publish or write inside "
          "a write() or lock() block?)");
    case ENOTRECOVERABLE:
      throw LayoutError("the segment's writer mutex is not recoverable; re-create the segment");
    case EINVAL:  // its bytes are no mutex glibc knows: corrupt (they are never validated)
      throw LayoutError(
          "a mutex in the segment is not a valid mutex (pthread_mutex_lock: EINVAL): the segment is "
          "corrupt; re-create it");
    default:
      xshm::detail::throw_errno(rc, "pthread_mutex_lock");
  }
}

inline timespec realtime_after(std::chrono::nanoseconds d) noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return add_ns(now, d.count());
}

}  // namespace impl

/// Locks, waiting at most `timeout` (nullopt: forever; zero: only if it is free). OwnerDied
/// means the caller now owns the mutex and must repair the protected state, then call
/// consistent(). TimedOut means it does not own it.
///
/// glibc 2.28 (the manylinux floor) has no pthread_mutex_clocklock, and
/// pthread_mutex_timedlock takes an absolute CLOCK_REALTIME deadline. So the time left is
/// measured on steady_clock and the wait is a series of timedlock slices of at most `slice`,
/// each recomputed from the steady time left: setting the wall clock forward ends a slice
/// early (the next one is recomputed) and never cuts the wait; setting it back can lengthen
/// only the slice in progress, by the jump. `between_slices()` runs after every slice that
/// did not get the mutex (the mutex is not held then); it may throw, which ends the wait.
/// Without a hook and without a timeout this is one pthread_mutex_lock.
template <class Hook = NoHook>
inline LockResult lock(pthread_mutex_t* m, Timeout timeout = std::nullopt, Hook&& between_slices = {},
                       std::chrono::nanoseconds slice = kLockSlice) {
  check_kind(m);
  if (!timeout && !kHasHook<Hook>) return impl::lock_result(pthread_mutex_lock(m));
  // First, the mutex only if it is free: trylock stays in user space (a timedlock with a past
  // deadline enters the kernel and sets FUTEX_WAITERS, so the holder's unlock would pay a
  // wake for nobody). On this robust error-checking mutex it reports a relock by its owner
  // as EDEADLK and a dead owner as EOWNERDEAD, like lock; EBUSY means held.
  const int tried = pthread_mutex_trylock(m);
  if (tried != EBUSY) return impl::lock_result(tried);
  const Deadline deadline(timeout);
  for (;;) {
    const std::chrono::nanoseconds left = deadline.left();
    if (left.count() == 0) return LockResult::TimedOut;
    const timespec until = impl::realtime_after(std::min(left, slice));
    const LockResult r = impl::lock_result(pthread_mutex_timedlock(m, &until));
    if (r != LockResult::TimedOut) return r;
    between_slices();
  }
}

inline void consistent(pthread_mutex_t* m) {
  const int rc = pthread_mutex_consistent(m);
  if (rc != 0) xshm::detail::throw_errno(rc, "pthread_mutex_consistent");
}

/// 0, or EPERM when the calling thread does not own the mutex (it stays locked).
inline int unlock(pthread_mutex_t* m) noexcept { return pthread_mutex_unlock(m); }

}  // namespace xshm::robust_mutex
