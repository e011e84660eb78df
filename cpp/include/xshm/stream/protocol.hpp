// The stream protocol's shared steps, which writers and readers both take (LAYOUT.md "Streams":
// 24 recovery, 25 send, 26 receive): whether a table entry's owner lives, the two futex
// wakes, the stream mutex with its recovery, the writer's registration and claim, the reader
// table's scan and reaping, and the fill and commit of a slot. stream.hpp (writers) and
// reader.hpp (readers) are built from these.
#pragma once

#include <algorithm>
#include <atomic>
#include <bitset>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../clock.hpp"
#include "../cpu.hpp"
#include "../errors.hpp"
#include "../futex.hpp"
#include "../liveness.hpp"
#include "../process.hpp"
#include "../robust_mutex.hpp"
#include "../seqlock.hpp"
#include "layout.hpp"
#include "segment.hpp"

namespace xshm {

/// How long a slot may stay WRITING before a waiting reader asks whether its writer lives,
/// and how often a writer blocked by a full ring asks whether the readers gating it live.
inline constexpr std::chrono::milliseconds kHoleCheck{10};
inline constexpr std::chrono::milliseconds kGateCheck{10};
/// A sleeping reader looks again at least this often: a message whose wake was lost with its
/// writer (killed between its commit and its wake) is taken within it.
inline constexpr std::chrono::seconds kLostWakeCheck{1};
/// How long a claim polls a held stream mutex before it waits for it; how long a writer that
/// finds the ring full polls for room before it sleeps; how long a reader polls for a message
/// before it sleeps (at least). Polling a few microseconds saves a futex round trip per
/// message when the other side is busy and keeps up.
inline constexpr std::chrono::microseconds kLockPoll{20};
inline constexpr std::chrono::microseconds kFullPoll{50};
inline constexpr std::chrono::microseconds kEmptyPoll{2};
inline constexpr unsigned kPollPauses = 16;
/// Claims of at most this many payload bytes are filled and committed before the mutex is
/// released: the slot's line is then taken from a polling reader once per message, not twice.
inline constexpr std::size_t kFillUnderLock = 4096;
/// How often a long send or receive calls its between-slices hook.
inline constexpr std::chrono::milliseconds kStreamSlice{100};

namespace stream_impl {

using detail::get;
using detail::put;
using detail::StreamSegment;

/// Whether the writer-table entry `index`, seen with `state`, still belongs to a live writer.
inline bool writer_alive(StreamSegment& s, std::uint32_t index, std::uint64_t state) {
  if (index >= s.geo.max_writers) return false;  // a corrupt slot: nobody to wait for
  if (static_cast<int>(index) == s.writer_index.load(std::memory_order_acquire) &&
      state == s.writer_state.load(std::memory_order_acquire))
    return true;
  if (s.writer(index)->state.load(std::memory_order_acquire) != state) return false;
  return liveness::held_by_other(s.fd.fd, s.writer_lock_offset(index));
}

inline bool reader_alive(StreamSegment& s, std::uint32_t index) {
  {
    std::lock_guard<std::mutex> g(s.local);
    if (s.own_readers.count(index) != 0) return true;
  }
  return liveness::held_by_other(s.fd.fd, s.reader_lock_offset(index));
}

/// Gives back the count of a sleeping wait marked with generation `gen` in `mark` (an entry's
/// `sleeping`), once: whoever clears the mark decrements. True if this call did.
inline bool clear_sleeper(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& mark,
                          std::uint32_t gen) noexcept {
  std::uint32_t g = gen;
  if (gen == 0 || !mark.compare_exchange_strong(g, 0, std::memory_order_seq_cst)) return false;
  waiters.fetch_sub(1, std::memory_order_seq_cst);
  return true;
}

/// One sleeping wait: counted in the header's waiters (so the other side wakes it) and marked
/// in the sleeper's own table entry with its generation, so that whoever finds the entry's
/// owner dead gives the count back (a process killed asleep must not make every send or
/// receive pay a wake syscall for ever). The count goes up first: a death between the two
/// steps (a few instructions) leaves it one too high, never below the sleepers.
class Sleeper {
 public:
  Sleeper(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& mark, std::uint32_t gen) noexcept
      : waiters_(waiters), mark_(mark), gen_(gen) {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    mark_.store(gen_, std::memory_order_seq_cst);
  }
  ~Sleeper() { clear_sleeper(waiters_, mark_, gen_); }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;

 private:
  std::atomic<std::uint32_t>& waiters_;
  std::atomic<std::uint32_t>& mark_;
  std::uint32_t gen_;
};

/// A writer handle counts once in space_waiters however many of its threads sleep for room
/// (docs/LAYOUT.md 23.4): the first in counts and marks the handle's writer entry, the last
/// out clears the mark and gives the count back. (A count per thread would leave one for ever
/// behind: the second thread's clear of the one mark fails.)
class WriterSleeper {
 public:
  WriterSleeper() = default;
  WriterSleeper(const WriterSleeper&) = delete;
  WriterSleeper& operator=(const WriterSleeper&) = delete;
  ~WriterSleeper() {
    if (s_ == nullptr) return;
    std::lock_guard<std::mutex> g(s_->local);
    if (--s_->writer_sleepers == 0) clear_sleeper(s_->header()->space_waiters, *mark_, gen_);
  }

  bool counted() const noexcept { return s_ != nullptr; }
  /// Counts this thread in (once; the handle in space_waiters if it is the first).
  void count_in(StreamSegment& s, std::uint32_t entry, std::uint32_t gen) {
    if (s_ != nullptr) return;
    std::lock_guard<std::mutex> g(s.local);
    s_ = &s;
    mark_ = &s.writer(entry)->sleeping;
    gen_ = gen;
    if (s.writer_sleepers++ == 0) {
      s.header()->space_waiters.fetch_add(1, std::memory_order_seq_cst);
      mark_->store(gen_, std::memory_order_seq_cst);
    }
  }

 private:
  StreamSegment* s_ = nullptr;
  std::atomic<std::uint32_t>* mark_ = nullptr;
  std::uint32_t gen_ = 0;
};

/// Whether this handle may sweep now: at most once every kGateCheck, across its threads.
inline bool sweep_due(StreamSegment& s) noexcept {
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  std::int64_t last = s.last_sweep_ns.load(std::memory_order_relaxed);
  if (now - last < std::chrono::nanoseconds(kGateCheck).count()) return false;
  return s.last_sweep_ns.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

/// A wake of readers woke nobody while data_waiters said some sleep: perhaps one died asleep.
/// Gives back the counts marked in entries whose reader is gone.
inline void sweep_sleeping_readers(StreamSegment& s) noexcept {
  if (!sweep_due(s)) return;
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    const std::uint32_t gen = r->sleeping.load(std::memory_order_acquire);
    if (gen == 0) continue;
    bool alive = true;
    try {
      alive = reader_alive(s, i);
    } catch (...) {  // the handle's local mutex failed: never clear on a doubt
    }
    if (!alive) clear_sleeper(s.header()->data_waiters, r->sleeping, gen);
  }
}

/// The same for writers sleeping for room.
inline void sweep_sleeping_writers(StreamSegment& s) noexcept {
  if (!sweep_due(s)) return;
  for (std::uint32_t i = 0; i < s.geo.max_writers; ++i) {
    WriterEntry* e = s.writer(i);
    const std::uint32_t gen = e->sleeping.load(std::memory_order_acquire);
    if (gen == 0 || static_cast<int>(i) == s.writer_index.load(std::memory_order_acquire)) continue;
    if (!liveness::held_by_other(s.fd.fd, s.writer_lock_offset(i)))
      clear_sleeper(s.header()->space_waiters, e->sleeping, gen);
  }
}

/// Wakes readers sleeping on data_epoch. SYNC POINT: the seq_cst bump and waiters load pair
/// with the reader's seq_cst waiters increment and epoch load (wait_for_message): either the
/// reader sees the new epoch (and the commits before it), or this load sees the reader.
inline void notify_readers(StreamSegment& s) noexcept {
  StreamHeader* h = s.header();
  h->data_epoch.fetch_add(1, std::memory_order_seq_cst);
  if (h->data_waiters.load(std::memory_order_seq_cst) != 0 && futex::wake_all(&h->data_epoch) == 0)
    sweep_sleeping_readers(s);
}

/// Wakes writers waiting for room. SYNC POINT: the seq_cst fence after the cursor store pairs
/// with the writer's fence after its waiters increment (send_batch): either this load sees the
/// writer, or the writer's next scan sees the cursor. ThreadSanitizer has no fences: there the
/// load is a read-modify-write of the waiter count, which orders the same way (the writer's
/// increment and this one are ordered, and each synchronizes with the one before it).
inline void notify_writers(StreamSegment& s) noexcept {
  StreamHeader* h = s.header();
#if XSHM_TSAN
  const std::uint32_t waiting = h->space_waiters.fetch_add(0, std::memory_order_acq_rel);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint32_t waiting = h->space_waiters.load(std::memory_order_relaxed);
#endif
  if (waiting != 0) {
    h->space_epoch.fetch_add(1, std::memory_order_seq_cst);
    if (futex::wake_all(&h->space_epoch) == 0) sweep_sleeping_writers(s);
  }
}

/// A Deadline that reads the clock only when asked for the time left of a finite, non-zero
/// timeout: the first attempt of a send costs no clock read.
class LazyDeadline {
 public:
  explicit LazyDeadline(Timeout t) noexcept : t_(t) {}
  std::chrono::nanoseconds left() {
    if (!t_ || *t_ >= kForever) return std::chrono::nanoseconds::max();
    if (t_->count() <= 0) return std::chrono::nanoseconds{0};
    const auto now = std::chrono::steady_clock::now();
    if (!started_) {
      end_ = now + *t_;
      started_ = true;
    }
    return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(end_ - now),
                    std::chrono::nanoseconds{0});
  }

 private:
  Timeout t_;
  bool started_ = false;
  std::chrono::steady_clock::time_point end_{};
};

/// Mutex held after EOWNERDEAD (LAYOUT.md "Streams: recovery"): a claim the dead holder left
/// half made is finished as ABANDONED, `head` is put past every slot it marked, and readers
/// and writers are told to look again.
inline void recover(StreamSegment& s) {
  StreamHeader* h = s.header();
  const std::uint64_t pending = h->claim_seq.load(std::memory_order_relaxed);
  if (pending != 0) {
    const std::uint64_t x = pending - 1;
    // Marked (WRITING, or already ABANDONED by a reader that judged it): its overwrite happened.
    const std::uint64_t w = s.slot(x)->word.load(std::memory_order_relaxed);
    if (w == slot_word::make(x, slot_word::kWriting) || w == slot_word::make(x, slot_word::kAbandoned))
      h->dropped.store(h->claim_dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
    h->claim_seq.store(0, std::memory_order_relaxed);
  }
  std::uint64_t head = h->head.load(std::memory_order_relaxed);
  for (std::uint64_t n = 0; n < s.geo.capacity; ++n, ++head) {
    // Under the mutex a slot is marked for `head` or later only by the holder that died: still
    // WRITING (abandon it here), or ABANDONED already by a reader that judged it. Either way
    // its sequence number is used up: head goes past it, never to reuse it.
    std::uint64_t w = slot_word::make(head, slot_word::kWriting);
    if (s.slot(head)->word.compare_exchange_strong(w, slot_word::make(head, slot_word::kAbandoned),
                                                   std::memory_order_acq_rel)) {
      h->abandoned.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (w != slot_word::make(head, slot_word::kAbandoned)) break;
  }
  // SYNC POINT: pairs with the reader's acquire load of head when it is lapped.
  h->head.store(head, std::memory_order_release);
  h->readers_gen.fetch_add(1, std::memory_order_relaxed);
  h->recoveries.fetch_add(1, std::memory_order_relaxed);
  notify_readers(s);
}

/// The stream mutex, held; released on destruction.
class StreamLock {
 public:
  /// Takes the mutex, waiting at most `timeout` (nullopt: forever). It is held for claims
  /// only (well under a microsecond), so it is first tried for up to kLockPoll before any
  /// wait: a call that may not wait at all (timeout zero) still gets it from a live holder.
  template <class Hook = NoHook>
  static std::optional<StreamLock> acquire(StreamSegment& s, Timeout timeout, Hook&& hook = {}) {
    std::optional<StreamLock> held;
    robust_mutex::LockResult r = robust_mutex::LockResult::TimedOut;
    robust_mutex::check_kind(s.mutex());
    int rc = pthread_mutex_trylock(s.mutex());
    std::chrono::steady_clock::time_point poll_end{};
    if (rc == EBUSY) poll_end = std::chrono::steady_clock::now() + kLockPoll;
    for (unsigned i = 0;; ++i, rc = pthread_mutex_trylock(s.mutex())) {
      if (rc != EBUSY) {
        r = robust_mutex::impl::lock_result(rc);
        break;
      }
      cpu::relax();
      if ((i & 15) == 15 && std::chrono::steady_clock::now() >= poll_end) {
        if (!timeout || timeout->count() > 0)
          r = robust_mutex::lock(s.mutex(), timeout, std::forward<Hook>(hook));
        break;
      }
    }
    switch (r) {
      case robust_mutex::LockResult::TimedOut:
        return held;
      case robust_mutex::LockResult::OwnerDied:
        held.emplace(StreamLock(s));
        recover(s);
        robust_mutex::consistent(s.mutex());
        break;
      case robust_mutex::LockResult::Acquired:
        held.emplace(StreamLock(s));
        break;
    }
    s.header()->owner_pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
    return held;
  }
  StreamLock(StreamLock&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  StreamLock& operator=(StreamLock&&) = delete;
  StreamLock(const StreamLock&) = delete;
  StreamLock& operator=(const StreamLock&) = delete;
  ~StreamLock() {
    if (s_ == nullptr) return;
    s_->header()->owner_pid.store(0, std::memory_order_relaxed);
    robust_mutex::unlock(s_->mutex());
  }

 private:
  explicit StreamLock(StreamSegment& s) noexcept : s_(&s) {}
  StreamSegment* s_;
};

/// Mutex held: this handle's writer entry, registered at its first send.
inline void ensure_writer(StreamSegment& s) {
  if (s.writer_index.load(std::memory_order_relaxed) >= 0) return;
  for (std::uint32_t i = 0; i < s.geo.max_writers; ++i) {
    WriterEntry* e = s.writer(i);
    const std::uint64_t st = e->state.load(std::memory_order_acquire);
    // A free entry, or one whose writer is gone (its slots then judge dead: the state changes).
    if (st != 0 && liveness::held_by_other(s.fd.fd, s.writer_lock_offset(i))) continue;
    if (!liveness::hold(s.fd.fd, s.writer_lock_offset(i))) continue;
    if (st != 0) clear_sleeper(s.header()->space_waiters, e->sleeping, entry_generation(st));
    // Under the mutex; never reset, so a dead writer's slots never match.
    e->generation = next_generation(e->generation);
    const std::uint64_t mine = entry_state(e->generation);
    e->pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
    e->sent.store(0, std::memory_order_relaxed);
    e->attached_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
    e->state.store(mine, std::memory_order_release);
    if (st != 0) s.header()->reaped.fetch_add(1, std::memory_order_relaxed);  // a dead writer's entry
    s.writer_state.store(mine, std::memory_order_release);
    s.writer_index.store(static_cast<int>(i), std::memory_order_release);
    return;
  }
  throw Error("stream " + s.name + " has all " + std::to_string(s.geo.max_writers) +
              " writer entries in use by live writers (max_writers)");
}

/// Visits every cursor that gates writers, each once, as f(cursor, pid, group): each attached reader
/// outside a group (its own cursor), and each group with at least one attached member (the
/// group's cursor; a group with none keeps its cursor and gates nothing, and counts what it
/// missed as lost when a member returns). A cursor is never past head; a corrupt one is taken
/// as head (it gates nothing). The one place that decides what gates.
template <class F>
inline void for_each_gate(StreamSegment& s, std::uint64_t head, F&& f) {
  std::bitset<kMaxStreamGroups> gating;
  bool any_group = false;
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    if (r->state.load(std::memory_order_acquire) == 0) continue;
    const std::uint32_t g = r->group.load(std::memory_order_relaxed);
    if (g != 0 && g <= s.geo.max_groups) {
      gating.set(g - 1);
      any_group = true;
      continue;
    }
    // SYNC POINT: pairs with the reader's release store of its cursor after it copied out.
    f(std::min(r->cursor.load(std::memory_order_acquire), head), r->pid.load(std::memory_order_relaxed), 0u);
  }
  if (!any_group) return;
  for (std::uint32_t g = 0; g < s.geo.max_groups; ++g) {
    if (!gating.test(g)) continue;
    // SYNC POINT: pairs with a member's release store of the group cursor after it copied out.
    f(std::min(s.group(g)->cursor.load(std::memory_order_acquire), head), 0u, g + 1);
  }
}

/// Mutex held: the smallest gating cursor (for_each_gate), from a fresh look at the tables.
inline void scan_readers(StreamSegment& s) {
  StreamHeader* h = s.header();
  const std::uint64_t head = h->head.load(std::memory_order_relaxed);
  s.scan_gen = h->readers_gen.load(std::memory_order_acquire);
  s.any_reader = false;
  s.gate = UINT64_MAX;
  for_each_gate(s, head, [&](std::uint64_t c, std::uint32_t, std::uint32_t) {
    s.any_reader = true;
    s.gate = std::min(s.gate, c);
  });
  s.scanned = true;
}

/// Mutex held: detaches attached readers whose liveness lock is gone. True if any was.
inline bool reap_readers(StreamSegment& s) {
  bool any = false;
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    std::uint64_t st = r->state.load(std::memory_order_acquire);
    if (st == 0 || reader_alive(s, i)) continue;
    if (r->state.compare_exchange_strong(st, 0, std::memory_order_acq_rel)) {
      clear_sleeper(s.header()->data_waiters, r->sleeping, entry_generation(st));
      s.header()->reaped.fetch_add(1, std::memory_order_relaxed);
      s.header()->readers_gen.fetch_add(1, std::memory_order_acq_rel);
      any = true;
    }
  }
  return any;
}

/// Without the mutex: whether `n` more messages would fit in front of every gate now (a hint
/// for polling; the claim decides under the mutex).
inline bool has_room(StreamSegment& s, std::uint64_t n) noexcept {
  const std::uint64_t head = s.header()->head.load(std::memory_order_acquire);
  bool room = true;
  for_each_gate(s, head, [&](std::uint64_t c, std::uint32_t, std::uint32_t) {
    room = room && head + n <= c + s.geo.capacity;
  });
  return room;
}

/// Why a claim did not happen.
enum class Claim { made, full, busy };

struct GateInfo {
  std::uint64_t cursor = 0;
  std::uint32_t pid = 0;    // a reader's
  std::uint32_t group = 0;  // a group's index + 1, else 0
};

inline GateInfo slowest_reader(StreamSegment& s) {
  GateInfo g{UINT64_MAX, 0, 0};
  for_each_gate(s, s.header()->head.load(std::memory_order_acquire),
                [&](std::uint64_t c, std::uint32_t pid, std::uint32_t group) {
                  if (c < g.cursor) g = GateInfo{c, pid, group};
                });
  return g;
}

/// Mutex held: claims `n` consecutive sequences, marking their slots WRITING. `first` gets the
/// first of them. `full` under "block" when the slowest attached reader is less than `n`
/// slots from a full ring behind; `busy` when a slot's previous writer is still copying into it.
inline Claim claim_locked(StreamSegment& s, std::uint64_t n, std::uint64_t& first) {
  StreamHeader* h = s.header();
  ensure_writer(s);
  const std::uint64_t head = h->head.load(std::memory_order_relaxed);
  if (head > kMaxStreamSeq - (n - 1))
    throw Error("stream " + s.name + " has used all 2**62 sequence numbers");
  if (!s.scanned || h->readers_gen.load(std::memory_order_acquire) != s.scan_gen) scan_readers(s);
  const std::uint64_t cap = s.geo.capacity;
  // Dead readers are detached when they would gate a claim (at most every kGateCheck: it asks
  // the kernel about each reader) and once per lap of the ring (a "drop_oldest" stream's
  // dead reader gates nothing, but it must not keep `dropped` from counting).
  if (s.any_reader && (head + n) / cap != head / cap) {
    const auto now = std::chrono::steady_clock::now();
    if (now - s.last_lap_reap >= kGateCheck) {
      s.last_lap_reap = now;
      if (reap_readers(s)) scan_readers(s);
    }
  }
  if (s.geo.backpressure == Backpressure::block && s.any_reader && head + n > s.gate + cap) {
    scan_readers(s);  // the cached cursors may be old
    if (s.any_reader && head + n > s.gate + cap) {
      const auto now = std::chrono::steady_clock::now();
      if (now - s.last_reap < kGateCheck) return Claim::full;
      s.last_reap = now;
      if (!reap_readers(s)) return Claim::full;
      scan_readers(s);
      if (s.any_reader && head + n > s.gate + cap) return Claim::full;
    }
  }
  // A slot whose previous claim is still WRITING: wait for a live writer, abandon a dead one.
  for (std::uint64_t j = 0; j < n; ++j) {
    if (head + j < cap) continue;  // never written
    SlotHeader* sl = s.slot(head + j);
    std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (slot_word::tag(w) != slot_word::kWriting || slot_word::seq(w) >= head) continue;
    if (writer_alive(s, get(sl->writer_index), get(sl->writer_state))) return Claim::busy;
    if (sl->word.compare_exchange_strong(w, slot_word::make(slot_word::seq(w), slot_word::kAbandoned),
                                         std::memory_order_acq_rel))
      h->abandoned.fetch_add(1, std::memory_order_relaxed);
  }
  const int widx = s.writer_index.load(std::memory_order_relaxed);
  const std::uint64_t wstate = s.writer_state.load(std::memory_order_relaxed);
  WriterEntry* me = s.writer(static_cast<std::uint32_t>(widx));
  // Every writer changes only its own entry, and only under the mutex: no read-modify-write.
  me->sent.store(me->sent.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  const bool drops = !s.any_reader;
  for (std::uint64_t j = 0; j < n; ++j) {
    const std::uint64_t x = head + j;
    SlotHeader* sl = s.slot(x);
    const bool overwrites = drops && x >= cap;
    if (overwrites) {
      // Recovery can tell whether this slot was marked, hence whether `dropped` counts it.
      h->claim_dropped.store(h->dropped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      h->claim_seq.store(x + 1, std::memory_order_relaxed);
    }
    put(sl->writer_index, static_cast<std::uint32_t>(widx));
    put(sl->writer_state, wstate);
    // SYNC POINT: release, so a reader judging this slot (acquire load of the word) sees the
    // writer fields above; the fence after it pairs with a lapped reader's acquire fence, as
    // in seqlock::begin_slot_write: a reader that sees any byte written after it re-reads
    // the word as changed.
    sl->word.store(slot_word::make(x, slot_word::kWriting), std::memory_order_release);
    seqlock::release_fence();
    if (overwrites)
      h->dropped.store(h->claim_dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  // SYNC POINT: pairs with the acquire load of head by a lapped reader and Stream::head().
  h->head.store(head + n, std::memory_order_release);
  h->claim_seq.store(0, std::memory_order_relaxed);
  first = head;
  return Claim::made;
}

/// Publishes the claimed slot `x` whose payload is in place: its length, time and pid, then
/// the word COMMITTED. False when a reader abandoned the slot first (it judged this writer
/// dead: its handle was closed while it wrote); the slot then stays abandoned.
inline bool publish(StreamSegment& s, std::uint64_t x, std::uint64_t len) noexcept {
  SlotHeader* sl = s.slot(x);
  put(sl->length, len);
  put(sl->timestamp_ns, detail::realtime_ns());
  put(sl->writer_pid, static_cast<std::uint32_t>(detail::current_pid()));
  // SYNC POINT: pairs with the reader's acquire load of the word: a reader that sees COMMITTED
  // sees the payload and fields above.
  // A CAS, not a store: a slot a reader abandoned (its writer judged dead) stays abandoned.
  std::uint64_t w = slot_word::make(x, slot_word::kWriting);
  return sl->word.compare_exchange_strong(w, slot_word::make(x, slot_word::kCommitted),
                                          std::memory_order_release, std::memory_order_relaxed);
}

/// Fills a claimed slot and commits it, without the wake (send wakes once per batch).
inline bool fill_and_commit(StreamSegment& s, std::uint64_t x, const void* data, std::uint64_t len) noexcept {
  if (len != 0) seqlock::store_bytes(StreamSegment::payload(s.slot(x)), data, static_cast<std::size_t>(len));
  return publish(s, x, len);
}

/// Commits a claim whose writer filled the payload in place, and wakes readers.
inline bool commit_filled(StreamSegment& s, std::uint64_t x, std::uint64_t len) noexcept {
  const bool ok = publish(s, x, len);
  notify_readers(s);
  return ok;
}

/// Drops a claim: the slot turns ABANDONED with `cancelled` naming its sequence, so readers
/// step over it without counting it lost (it was never sent), and wakes readers waiting on it.
inline void cancel_claim(StreamSegment& s, std::uint64_t x) noexcept {
  SlotHeader* sl = s.slot(x);
  put(sl->cancelled, x + 1);
  // SYNC POINT: release, pairs with the reader's acquire load of the word: a reader that sees
  // this ABANDONED word sees `cancelled` above. A CAS: a slot a reader already abandoned (its
  // writer judged dead) stays counted as that.
  std::uint64_t w = slot_word::make(x, slot_word::kWriting);
  sl->word.compare_exchange_strong(w, slot_word::make(x, slot_word::kAbandoned), std::memory_order_release,
                                   std::memory_order_relaxed);
  notify_readers(s);
}

}  // namespace stream_impl

}  // namespace xshm
