// The writer mutex: a pthread mutex in the segment, process-shared, robust (the kernel hands
// it on with EOWNERDEAD when its owner dies) and error-checking (relocking from the owning
// thread is an error, not a deadlock). Only the creator initialises it, before the segment
// is marked ready; re-initialising a live mutex is undefined behaviour.
#pragma once

#include <pthread.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

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
  if (rc != 0) detail::throw_errno(rc, "pthread_mutex_init");
}

enum class LockResult { Acquired, OwnerDied, TimedOut };

/// Locks until the absolute CLOCK_REALTIME deadline (nullptr: forever). OwnerDied means the
/// caller now owns the mutex and must repair the protected state, then call consistent().
inline LockResult lock(pthread_mutex_t* m, const timespec* realtime_deadline) {
  const int rc = realtime_deadline == nullptr ? pthread_mutex_lock(m)
                                              : pthread_mutex_timedlock(m, realtime_deadline);
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
    default:
      detail::throw_errno(rc, "pthread_mutex_lock");
  }
}

inline void consistent(pthread_mutex_t* m) {
  const int rc = pthread_mutex_consistent(m);
  if (rc != 0) detail::throw_errno(rc, "pthread_mutex_consistent");
}

inline void unlock(pthread_mutex_t* m) noexcept { pthread_mutex_unlock(m); }

}  // namespace xshm::robust_mutex
