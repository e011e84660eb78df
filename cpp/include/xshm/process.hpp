// The calling process and its peers, as the protocol sees them: this process's pid (cached,
// because a publish stamps it every time), whether another pid is still alive, and the wall
// clock a record is stamped with. Reads only process-local state and the kernel's.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace xshm::detail {

inline std::atomic<int> g_cached_pid{0};

/// getpid() costs a syscall on current glibc; publish needs it every time. Cached per
/// process and cleared in the child after fork.
inline int current_pid() noexcept {
  int pid = g_cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    static const int registered =
        pthread_atfork(nullptr, nullptr, [] { g_cached_pid.store(0, std::memory_order_relaxed); });
    (void)registered;
    pid = static_cast<int>(::getpid());
    g_cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

/// CLOCK_REALTIME in nanoseconds since the epoch: the timestamp of a record.
inline std::int64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// True when a process with this pid exists (EPERM: it exists but belongs to another user).
inline bool process_alive(std::uint32_t pid) noexcept {
  // 0 and anything above INT32_MAX are no process: cast to pid_t they would name a process
  // group (-1: every process), which kill(2) reports alive. A corrupt owner_pid is dead.
  if (pid == 0 || pid > static_cast<std::uint32_t>(INT32_MAX)) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace xshm::detail
