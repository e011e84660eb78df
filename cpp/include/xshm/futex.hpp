// Cross-process wait/wake on a 32-bit word in shared memory (the header's epoch: writers bump
// it and wake, waiters only load it and sleep on it; see writer.hpp and wait.hpp), and the
// CLOCK_MONOTONIC timespec arithmetic of a futex deadline. Not FUTEX_PRIVATE: private futexes
// are keyed by (mm, address) and never match a wake from another process, which is also why
// std::atomic::wait cannot be used here.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>

#include "clock.hpp"

namespace xshm::futex {

enum class WaitResult { Woken, Timeout };

/// Sleeps while *word == expected, until woken or the absolute CLOCK_MONOTONIC deadline
/// (nullptr: no deadline). Spurious returns are possible; callers re-check their condition.
inline WaitResult wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       const timespec* deadline) noexcept {
  long rc = ::syscall(SYS_futex, const_cast<std::atomic<std::uint32_t>*>(word), FUTEX_WAIT_BITSET, expected,
                      deadline, nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == -1 && errno == ETIMEDOUT) return WaitResult::Timeout;
  return WaitResult::Woken;  // 0, EAGAIN (value changed) or EINTR
}

/// Wakes every process sleeping on the word; returns how many it woke (-1 on an error).
inline long wake_all(std::atomic<std::uint32_t>* word) noexcept {
  return ::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

inline timespec monotonic_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts;
}

using xshm::add_ns;  // clock.hpp

inline bool before(const timespec& a, const timespec& b) noexcept {
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

}  // namespace xshm::futex
