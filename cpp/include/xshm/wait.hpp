// Waiting for the next publish: poll the header's seq (optionally spinning first), then sleep
// on the futex epoch, counted in the header's waiters so that a writer knows to wake. A
// waiter writes only its own +1/-1 to `waiters` (through a writable alias of page 0 when its
// handle is read-only); it loads seq and epoch, which only writers store (writer.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

#include "clock.hpp"
#include "cpu.hpp"
#include "futex.hpp"
#include "layout.hpp"
#include "segment.hpp"
#include "sleep_ticket.hpp"

namespace xshm::wait {

/// How often a wait with a hook calls it, spinning or sleeping.
inline constexpr std::chrono::milliseconds kWaitSlice{100};

namespace impl {

/// The waiter count of one sleeping wait, given back on every way out (a hook may throw).
class Sleeper {
 public:
  explicit Sleeper(Header* h) noexcept : h_(h) {
    if (h_ != nullptr) h_->waiters.fetch_add(1, std::memory_order_seq_cst);
  }
  ~Sleeper() {
    if (h_ != nullptr) h_->waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;

 private:
  Header* h_;
};

}  // namespace impl

/// A spinning wait cut in two: its first `head` (spinning, within the timeout) and what is
/// left of the spin and the timeout after it. A binding spins the head holding its
/// interpreter lock (re-taking the lock costs more than a hop) and waits the rest without.
struct SpinSplit {
  std::chrono::nanoseconds head{0};
  Timeout rest_timeout;
  std::chrono::nanoseconds rest_spin{0};
};

inline SpinSplit split_spin(Timeout timeout, std::chrono::nanoseconds spin,
                            std::chrono::nanoseconds head_max) noexcept {
  SpinSplit out;
  out.head = std::max(std::min(spin, head_max), std::chrono::nanoseconds{0});
  if (timeout) out.head = std::max(std::min(out.head, *timeout), std::chrono::nanoseconds{0});
  out.rest_spin = std::max(spin - out.head, std::chrono::nanoseconds{0});
  out.rest_timeout = timeout;
  if (timeout) out.rest_timeout = std::max(*timeout - out.head, std::chrono::nanoseconds{0});
  return out;
}

/// Blocks until the header seq exceeds `last` or `timeout` passes (nullopt: never). Returns
/// the new sequence, or nullopt on timeout. `spin`: how long to poll with the CPU's pause
/// instruction before sleeping on the futex. `between_slices()` runs about every `slice`
/// while spinning or sleeping (it may throw, ending the wait); without a hook the sleep is
/// one futex wait.
template <class Hook = NoHook>
inline std::optional<std::uint64_t> wait_for(const detail::Segment& s, std::uint64_t last, Timeout timeout,
                                             std::chrono::nanoseconds spin = std::chrono::nanoseconds{0},
                                             Hook&& between_slices = {},
                                             std::chrono::nanoseconds slice = kWaitSlice) {
  const Header* h = s.header();
  // SYNC POINT (every acquire load of seq here): pairs with the writer's release store of
  // seq in writer::publish_locked() and writer::recover().
  std::uint64_t cur = h->seq.load(std::memory_order_acquire);
  if (cur > last) return cur;
  const timespec now = futex::monotonic_now();
  timespec deadline{};
  if (timeout) deadline = futex::add_ns(now, timeout->count());
  timespec next_hook = futex::add_ns(now, slice.count());
  if (spin.count() > 0) {
    const timespec spin_end = futex::add_ns(now, spin.count());
    for (unsigned i = 0;; ++i) {
      cpu::relax();
      cur = h->seq.load(std::memory_order_acquire);
      if (cur > last) return cur;
      if ((i & 63) == 63) {
        const timespec t = futex::monotonic_now();
        if (timeout && !futex::before(t, deadline)) return std::nullopt;
        if (!futex::before(t, spin_end)) break;
        if constexpr (kHasHook<Hook>) {
          if (!futex::before(t, next_hook)) {
            between_slices();
            next_hook = futex::add_ns(futex::monotonic_now(), slice.count());
          }
        }
      }
    }
  }
  Header* wh = s.waiter_header();
  // Without a writable header page (a read-only handle of a user who may not write), this
  // process cannot announce that it sleeps, so it sleeps in slices of 1 ms.
  constexpr std::int64_t kBlindSliceNs = 1'000'000;
  impl::Sleeper sleeper(wh);
  for (;;) {
    // SYNC POINT: seq_cst, paired with the writer's seq_cst epoch bump and waiters load
    // (writer::notify): either the writer sees our waiter count and wakes us, or we see its
    // new epoch.
    const std::uint32_t epoch = h->epoch.load(std::memory_order_seq_cst);
    cur = h->seq.load(std::memory_order_acquire);
    if (cur > last) return cur;
    const timespec t = futex::monotonic_now();
    if (timeout && !futex::before(t, deadline)) return std::nullopt;
    if constexpr (kHasHook<Hook>) {
      if (!futex::before(t, next_hook)) {
        between_slices();
        next_hook = futex::add_ns(futex::monotonic_now(), slice.count());
        continue;  // the hook took time: look again before sleeping
      }
    }
    timespec until = timeout ? deadline : futex::add_ns(t, INT64_C(3600) * 1'000'000'000);
    if constexpr (kHasHook<Hook>) {
      if (futex::before(next_hook, until)) until = next_hook;
    }
    if (wh == nullptr) {
      const timespec blind = futex::add_ns(t, kBlindSliceNs);
      if (futex::before(blind, until)) until = blind;
    }
    futex::wait(&h->epoch, epoch, &until);
  }
}

/// wait_for()'s steps up to its sleep, for a caller that sleeps elsewhere (an event loop; see
/// sleep_ticket.hpp): counts a sleeper, loads the epoch, then seq. An unarmed ticket when seq
/// already exceeds `last` (nothing to sleep for), else one armed on the epoch. A handle that
/// cannot count itself (read-only, no writable alias) gets a blind ticket that says to look
/// again every millisecond, as wait_for() sleeps in 1 ms slices.
inline SleepTicket prepare(const std::shared_ptr<detail::Segment>& s, std::uint64_t last) {
  const Header* h = s->header();
  // SYNC POINT: as wait_for(): seq's acquire loads pair with the writer's release store.
  if (h->seq.load(std::memory_order_acquire) > last) return {};
  Header* wh = s->waiter_header();
  SleepTicket t = SleepTicket::count_in(s, wh == nullptr ? nullptr : &wh->waiters);
  // SYNC POINT: seq_cst, paired with the writer's epoch bump and waiters load (as wait_for()).
  const std::uint32_t epoch = h->epoch.load(std::memory_order_seq_cst);
  if (h->seq.load(std::memory_order_acquire) > last) return {};  // t gives its count back
  std::optional<std::chrono::nanoseconds> recheck;
  if (wh == nullptr) recheck = std::chrono::milliseconds(1);
  t.arm(&h->epoch, epoch, recheck);
  return t;
}

}  // namespace xshm::wait
