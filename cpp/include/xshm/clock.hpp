// The one clock vocabulary of every bounded wait in the C++ API: a relative timeout,
// std::optional<std::chrono::nanoseconds> (nullopt: forever; zero: do not wait), measured on
// steady_clock so that setting the wall clock neither stretches nor cuts it; and the
// between-slices hook a long wait calls every slice (a binding checks for signals there).
// Process-local; touches no shared memory.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <type_traits>

#include <time.h>

namespace xshm {

/// How long a call may wait: nullopt forever, zero not at all.
using Timeout = std::optional<std::chrono::nanoseconds>;

/// Longer than any wait is meant to be; a duration beyond it counts as forever (nanoseconds
/// in an int64 reach only 292 years, and a deadline must still fit beside now()).
inline constexpr std::chrono::nanoseconds kForever = std::chrono::hours(24 * 365 * 100);

/// Seconds (a binding's float) as a Timeout: negative counts as zero; NaN, infinity and
/// anything beyond kForever as forever (a plain duration_cast of those is undefined).
inline Timeout from_seconds(double seconds) noexcept {
  if (!(seconds < std::chrono::duration<double>(kForever).count())) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(std::max(seconds, 0.0)));
}

/// `t` + `ns` (either sign), normalised: the absolute deadlines futex and pthread waits take.
inline timespec add_ns(timespec t, std::int64_t ns) noexcept {
  constexpr std::int64_t kSec = 1'000'000'000;
  std::int64_t total = static_cast<std::int64_t>(t.tv_nsec) + ns % kSec;
  t.tv_sec += static_cast<time_t>(ns / kSec + total / kSec);
  t.tv_nsec = static_cast<long>(total % kSec);
  if (t.tv_nsec < 0) {
    t.tv_nsec += kSec;
    t.tv_sec -= 1;
  }
  return t;
}

/// The hook of a wait that needs none; waits without a hook do not slice.
struct NoHook {
  void operator()() const noexcept {}
};

template <class Hook>
inline constexpr bool kHasHook = !std::is_same_v<std::decay_t<Hook>, NoHook>;

/// The end of a Timeout, fixed when the wait starts.
class Deadline {
 public:
  explicit Deadline(Timeout t) noexcept {
    if (t && *t < kForever) {
      forever_ = false;
      end_ = std::chrono::steady_clock::now() + std::max(*t, std::chrono::nanoseconds{0});
    }
  }
  /// Time left, never negative; nanoseconds::max() when forever.
  std::chrono::nanoseconds left() const noexcept {
    if (forever_) return std::chrono::nanoseconds::max();
    const auto d = end_ - std::chrono::steady_clock::now();
    return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(d), std::chrono::nanoseconds{0});
  }

 private:
  bool forever_ = true;
  std::chrono::steady_clock::time_point end_{};
};

}  // namespace xshm
