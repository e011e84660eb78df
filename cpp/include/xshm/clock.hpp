// The one clock vocabulary of every bounded wait in the C++ API: a relative timeout,
// std::optional<std::chrono::nanoseconds> (nullopt: forever; zero: do not wait), measured on
// steady_clock so that setting the wall clock neither stretches nor cuts it; and the
// between-slices hook a long wait calls every slice (a binding checks for signals there); and
// how a duration is written in an error message (format_duration: every timeout message of the
// core and of the bindings says "within 250 ms" through it). Process-local; touches no shared
// memory.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
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

/// `d` as people write it, for error messages: "1 s", "1.5 s", "250 ms", "20 µs", "0 s": the
/// largest unit that keeps a whole part (s, ms, µs, ns), at most three decimals, trailing zeros
/// dropped (1.000000 s is "1 s"). Negative durations get a minus sign.
inline std::string format_duration(std::chrono::nanoseconds d) {
  const std::int64_t ns = d.count();
  std::uint64_t mag =
      ns < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(ns) : static_cast<std::uint64_t>(ns);
  static constexpr std::uint64_t kUnit[] = {1'000'000'000, 1'000'000, 1'000, 1};
  static constexpr const char* kName[] = {"s", "ms", "µs", "ns"};
  std::size_t u = 0;
  while (u < 3 && mag < kUnit[u]) ++u;
  if (mag == 0) u = 0;
  std::uint64_t whole = 0;
  std::uint64_t milli = 0;  // thousandths of the unit, rounded to nearest
  for (;;) {
    whole = mag / kUnit[u];
    milli = kUnit[u] >= 1000 ? ((mag % kUnit[u]) * 1000 + kUnit[u] / 2) / kUnit[u] : 0;
    if (milli == 1000) {
      whole += 1;
      milli = 0;
    }
    if (whole < 1000 || u == 0) break;
    --u;  // 999.9996 ms rounds to 1000 ms: say 1 s
  }
  std::string out = ns < 0 ? "-" : "";
  out += std::to_string(whole);
  if (milli != 0) {
    std::string frac = std::to_string(milli);
    frac.insert(0, 3 - frac.size(), '0');
    frac.erase(frac.find_last_not_of('0') + 1);
    out += "." + frac;
  }
  out += " ";
  out += kName[u];
  return out;
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
