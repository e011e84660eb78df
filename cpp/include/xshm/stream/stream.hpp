// xshm::Stream: every message, in order, through a ring of slots in one shared-memory segment
// (layout version 2, layout.hpp; docs/LAYOUT.md "Streams").
//
// The protocol in one paragraph. Writers take the stream's robust mutex only to claim: under
// it a writer reads `head`, checks room (under "block", the slowest attached reader must be
// less than a ring behind), marks the slot WRITING for that sequence with its writer-table
// entry, and advances `head`. It then copies the payload with the mutex free and stores the
// slot word COMMITTED (release), and wakes sleeping readers. So sequence numbers give one
// total order, writers copy in parallel, and a writer killed anywhere leaves either nothing
// (killed before its mark: the next writer sees EOWNERDEAD and repairs `head`) or a slot
// marked WRITING by a writer-table entry whose kernel lock is gone: a reader that finds a
// slot WRITING for kHoleCheck judges its writer and, if it is dead, marks the slot ABANDONED
// (counted in `abandoned`); every reader counts it in its `lost` and moves on. Readers own a
// cursor line each and take messages by sequence number: a committed slot of their sequence
// is copied and re-checked (seqlock style: under "drop_oldest" a writer may overwrite it
// meanwhile; the copy is then discarded and the lap counted as lost). Liveness of readers and
// writers is an OFD lock on their table entry (liveness.hpp), never a pid. A claim
// (claim.hpp) is the same claim with the copy left to its caller; a dropped claim's slot is
// stored ABANDONED with the slot's `cancelled` naming its sequence, and readers count it
// `skipped`, not lost (it was never sent).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
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
#include "claim.hpp"
#include "group.hpp"
#include "layout.hpp"
#include "protocol.hpp"
#include "reader.hpp"
#include "segment.hpp"

namespace xshm {

/// A handle to a stream. Copies share the mapping; any thread may send through it.
class Stream {
 public:
  Stream() = default;

  /// Creates a stream: exclusive, `mode` permissions (0600), pages reserved up front.
  static Stream create(std::string_view name, const StreamOptions& opt = {}) {
    return Stream(detail::create_stream(name, opt));
  }
  /// Opens an existing stream, validating every header field against the mapping.
  /// `between_slices()` runs about every 100 ms while it waits for the name (it may throw).
  template <class Hook = NoHook>
  static Stream open(std::string_view name, const StreamOpenOptions& opt = {}, Hook&& between_slices = {}) {
    return Stream(detail::open_stream(name, opt, std::forward<Hook>(between_slices)));
  }
  /// Removes a stream's name (as SharedMemoryManager::unlink: an xshm segment of any kind).
  static void unlink(std::string_view name, bool force = false) { detail::unlink_segment(name, force); }

  bool is_open() const noexcept { return s_ != nullptr; }
  const std::string& name() const { return seg().name; }
  std::uint64_t capacity() const { return seg().geo.capacity; }
  std::uint64_t max_bytes() const { return seg().geo.max_bytes; }
  Backpressure backpressure() const { return seg().geo.backpressure; }
  std::uint32_t max_readers() const { return seg().geo.max_readers; }
  std::uint32_t max_writers() const { return seg().geo.max_writers; }
  bool readonly() const { return seg().readonly; }
  const StreamGeometry& geometry() const { return seg().geo; }
  /// The sequence number the next message will get.
  std::uint64_t head() const { return seg().header()->head.load(std::memory_order_acquire); }
  /// Messages overwritten while no reader was attached.
  std::uint64_t dropped() const { return seg().header()->dropped.load(std::memory_order_relaxed); }
  /// Messages lost because their writer died between its claim and its commit.
  std::uint64_t abandoned() const { return seg().header()->abandoned.load(std::memory_order_relaxed); }
  std::uint32_t recoveries() const { return seg().header()->recoveries.load(std::memory_order_relaxed); }
  const StreamHeader* header() const { return seg().header(); }

  /// Sends one message of `size` bytes; returns its sequence number. Under "block", waits up
  /// to `timeout` (nullopt: forever) while the ring is full, then throws StreamFullError.
  /// `between_slices()` runs about every kStreamSlice while it waits (it may throw).
  template <class Hook = NoHook>
  std::uint64_t send(const void* data, std::size_t size, Timeout timeout = std::nullopt,
                     Hook&& between_slices = {}) {
    const std::pair<const void*, std::size_t> one{data, size};
    std::size_t done = 0;
    std::uint64_t last = 0;
    const Sent r = send_some(&one, 1, timeout, std::forward<Hook>(between_slices), done, last);
    if (r != Sent::all) throw_full(seg(), 0, r);
    return last;
  }
  std::uint64_t send(std::string_view bytes, Timeout timeout = std::nullopt) {
    return send(bytes.data(), bytes.size(), timeout);
  }

  /// Sends if there is room now; nullopt when a "block" stream is full, its mutex stays held
  /// (a stopped writer) for kLockPoll, or the next slot's earlier writer is still writing it
  /// (a ring lapped within one send, either policy). Never sleeps.
  std::optional<std::uint64_t> try_send(const void* data, std::size_t size) {
    const std::pair<const void*, std::size_t> one{data, size};
    std::size_t done = 0;
    std::uint64_t last = 0;
    if (send_some(&one, 1, std::chrono::nanoseconds{0}, NoHook{}, done, last) != Sent::all)
      return std::nullopt;
    return last;
  }
  std::optional<std::uint64_t> try_send(std::string_view bytes) {
    return try_send(bytes.data(), bytes.size());
  }

  /// Sends every message in order, claiming as many slots at once as there is room for;
  /// returns the sequence number of the last. On timeout, StreamFullError says how many went
  /// (they are in the stream).
  template <class Hook = NoHook>
  std::uint64_t send_many(const std::vector<std::pair<const void*, std::size_t>>& items,
                          Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    if (items.empty()) throw ArgumentError("send_many: no messages");
    std::size_t done = 0;
    std::uint64_t last = 0;
    const Sent r =
        send_some(items.data(), items.size(), timeout, std::forward<Hook>(between_slices), done, last);
    if (r != Sent::all) throw_full(seg(), done, r);
    return last;
  }

  /// Attaches a new reader. Needs a handle whose file is open for writing (its cursor line).
  /// `between_slices()` runs about every 100 ms while it waits for the mutex (it may throw).
  template <class Hook = NoHook, class = std::enable_if_t<!std::is_convertible_v<Hook, std::string_view>>>
  StreamReader reader(Start start = Start::oldest, Hook&& between_slices = {}) {
    return attach(start, std::string_view{}, std::forward<Hook>(between_slices));
  }

  /// Attaches a new member of the group named `group` (1 to 40 printable bytes, no '/'): its
  /// members share one cursor, and each message goes to one of them. The first member creates
  /// the group at `start`; later ones, and members that come back after every member left,
  /// take up the group's cursor where it is (`start` then does not apply). Under "block" a
  /// group with an attached member gates writers like one reader; one with none gates nothing
  /// and counts what it missed meanwhile as lost.
  template <class Hook = NoHook>
  StreamReader reader(Start start, std::string_view group, Hook&& between_slices = {}) {
    if (group.empty()) throw ArgumentError("a group name is 1 to 40 bytes, got 0");
    return attach(start, group, std::forward<Hook>(between_slices));
  }

  /// The groups of this stream (created, with or without members).
  std::vector<GroupInfo> groups() { return stream_impl::list_groups(seg()); }

 private:
  template <class Hook>
  StreamReader attach(Start start, std::string_view group, Hook&& between_slices) {
    detail::StreamSegment& s = seg();
    if (!group.empty()) stream_impl::check_group_name(group);
    if (!s.writable_fd)
      throw ReadOnlyError("stream " + s.name +
                          ": a reader writes its cursor into the segment, and this process may only read it");
    if (!s.mutex_ok)
      throw LayoutError("stream " + s.name +
                        " was created by a process with another C library or architecture: attaching a "
                        "reader takes its mutex, which this process cannot use");
    std::optional<stream_impl::StreamLock> lock =
        stream_impl::StreamLock::acquire(s, std::chrono::seconds(10), std::forward<Hook>(between_slices));
    if (!lock) throw WaitTimeoutError("stream " + s.name + ": its mutex stayed held for 10 s");
    StreamHeader* h = s.header();
    std::uint32_t gi = 0;  // group index + 1: the group is made first (it outlives its members)
    if (!group.empty()) {
      const std::uint64_t head = h->head.load(std::memory_order_relaxed);
      const std::uint64_t cursor = start == Start::oldest && head >= s.geo.capacity ? head - s.geo.capacity
                                   : start == Start::oldest                         ? 0
                                                                                    : head;
      bool created = false;
      gi = stream_impl::find_or_create_group(s, group, cursor, created) + 1;
    }
    for (int pass = 0; pass < 2; ++pass) {
      for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
        ReaderEntry* r = s.reader(i);
        const std::uint64_t st = r->state.load(std::memory_order_acquire);
        // A free entry; one still marked asleep belongs to a closed reader whose wait has not
        // returned yet (its count is its own to give back).
        if (st != 0 || r->sleeping.load(std::memory_order_acquire) != 0) continue;
        if (!liveness::hold(s.fd.fd, s.reader_lock_offset(i))) continue;
        const std::uint64_t head = h->head.load(std::memory_order_relaxed);
        std::uint64_t cursor = head;
        if (start == Start::oldest) cursor = head >= s.geo.capacity ? head - s.geo.capacity : 0;
        if (gi != 0) cursor = s.group(gi - 1)->cursor.load(std::memory_order_relaxed);
        // A dead member's step left half done in this entry is finished before the entry is
        // reused (its group's next lock does it, here or in a member).
        const std::uint32_t old_group = r->group.load(std::memory_order_relaxed);
        if (r->hold.load(std::memory_order_relaxed) != 0 && old_group != 0 && old_group <= s.geo.max_groups) {
          try {
            (void)stream_impl::GroupLock::acquire(s, old_group - 1, std::chrono::seconds(1));
          } catch (...) {  // a corrupt group mutex: give the entry's lock back, then refuse
            liveness::release(s.fd.fd, s.reader_lock_offset(i));
            throw;
          }
        }
        r->hold.store(0, std::memory_order_relaxed);
        r->group.store(gi, std::memory_order_relaxed);
        // Under the mutex; tells this attachment from the entry's earlier ones.
        r->generation = next_generation(r->generation);
        const std::uint64_t mine = entry_state(r->generation);
        r->start.store(cursor, std::memory_order_relaxed);
        r->cursor.store(cursor, std::memory_order_relaxed);
        r->lost.store(0, std::memory_order_relaxed);
        r->received.store(0, std::memory_order_relaxed);
        r->skipped.store(0, std::memory_order_relaxed);
        r->pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
        r->attached_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
        {
          std::lock_guard<std::mutex> g(s.local);
          s.own_readers.insert(i);
        }
        // SYNC POINT: release, with the fields above; writers scan under the mutex we hold.
        r->state.store(mine, std::memory_order_release);
        h->readers_gen.fetch_add(1, std::memory_order_acq_rel);
        return StreamReader(s_, i, mine, cursor, gi);
      }
      if (pass == 0 && !stream_impl::reap_readers(s)) break;
    }
    throw Error("stream " + s.name + " has all " + std::to_string(s.geo.max_readers) +
                " reader entries in use by live readers (max_readers); close a reader or create the "
                "stream with more");
  }

 public:
  /// The mapped segment, for bindings and tests that drive the protocol steps themselves.
  const std::shared_ptr<detail::StreamSegment>& segment() const {
    seg();
    return s_;
  }

  /// Unmaps; readers made from this handle keep the mapping until they close.
  void close() noexcept { s_.reset(); }
  /// Removes this stream's name, if the name still refers to this stream.
  void unlink() {
    const detail::StreamSegment& s = seg();
    Fd fd = detail::shm_open_checked(s.name, O_RDONLY, 0);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) detail::throw_errno(errno, "fstat");
    if (st.st_dev != s.dev || st.st_ino != s.ino)
      detail::throw_errno(ENOENT, "shm_unlink(" + s.name + "): the name now belongs to another segment");
    if (::shm_unlink(s.name.c_str()) != 0) detail::throw_errno(errno, "shm_unlink(" + s.name + ")");
  }

  /// What send_some() did: everything, or it stopped early because the ring stayed full or
  /// the mutex stayed held (by a stopped writer) past the timeout.
  enum class Sent { all, full, mutex_held, busy };

  /// The form of send_many() that reports instead of throwing: sends items[0, n) in order;
  /// `done` counts those sent, `last` is the sequence of the last of them.
  template <class Hook>
  Sent send_some(const std::pair<const void*, std::size_t>* items, std::size_t n, Timeout timeout,
                 Hook&& between_slices, std::size_t& done, std::uint64_t& last) {
    detail::StreamSegment& s = seg();
    check_writable(s);
    for (std::size_t i = 0; i < n; ++i) check_size(s, items[i].second);
    ClaimWait wait(timeout);
    std::size_t lost_commits = 0;  // slots readers abandoned before this writer committed them
    done = 0;
    while (done < n) {
      std::uint64_t first = 0;
      std::uint64_t got = 0;
      bool filled = false;
      const Sent r = claim_loop(
          std::min<std::uint64_t>(n - done, s.geo.capacity), wait, between_slices,
          [&](std::uint64_t x, std::uint64_t k) {
            std::size_t bytes = 0;
            for (std::uint64_t j = 0; j < k; ++j) bytes += items[done + j].second;
            if (bytes > kFillUnderLock) return;
            for (std::uint64_t j = 0; j < k; ++j)
              lost_commits +=
                  !stream_impl::fill_and_commit(s, x + j, items[done + j].first, items[done + j].second);
            filled = true;
          },
          first, got);
      if (r != Sent::all) return r;
      if (!filled)
        for (std::uint64_t j = 0; j < got; ++j)
          lost_commits +=
              !stream_impl::fill_and_commit(s, first + j, items[done + j].first, items[done + j].second);
      stream_impl::notify_readers(s);
      done += got;
      last = first + got - 1;
    }
    if (lost_commits != 0)
      throw Error("stream " + s.name + ": " + std::to_string(lost_commits) +
                  " of the messages sent were abandoned by readers that judged this writer dead (was its "
                  "handle closed while it sent?)");
    return Sent::all;
  }

  /// Claims a slot of `nbytes` payload bytes for the caller to fill in place (StreamClaim::data())
  /// and commit. Waits as send() does: under "block" up to `timeout` (nullopt: forever) while
  /// the ring is full, under either policy while the slot's earlier claim is still open, then
  /// throws StreamFullError. `between_slices()` runs about every kStreamSlice while it waits.
  ///
  /// An open claim pins its slot: a writer that laps the ring onto it waits until it is
  /// committed or dropped, or its writer dies (the slot is then abandoned and reused). This
  /// holds under "drop_oldest" too, where a lapped claim could instead fail at its commit:
  /// letting a writer overwrite a slot its claimant may still be writing would tear the
  /// messages readers copy from it. Under "block" an open claim holds back the readers behind
  /// it, and through them the writers, until it ends.
  template <class Hook = NoHook>
  StreamClaim claim(std::size_t nbytes, Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    std::optional<StreamClaim> c = claim_some(nbytes, timeout, between_slices, true);
    return std::move(*c);
  }

  /// A claim if a slot is free now, else nullopt (as try_send: never sleeps).
  std::optional<StreamClaim> try_claim(std::size_t nbytes) {
    NoHook none;
    return claim_some(nbytes, std::chrono::nanoseconds{0}, none, false);
  }

  /// The StreamFullError for a send that stopped early after `done` messages.
  [[noreturn]] static void throw_full(detail::StreamSegment& s, std::size_t done, Sent why) {
    const std::string sent = done == 0 ? "" : " (" + std::to_string(done) + " of the batch were sent)";
    if (why == Sent::mutex_held)
      throw StreamFullError("stream " + s.name + ": its mutex stayed held past the timeout" + sent);
    if (why == Sent::busy)
      throw StreamFullError("stream " + s.name +
                            ": the next slot's earlier writer was still writing it past the timeout (a ring "
                            "lapped within one send)" +
                            sent);
    const stream_impl::GateInfo g = stream_impl::slowest_reader(s);
    const std::string who = g.group != 0 ? "group " + stream_impl::group_name(s.group(g.group - 1))
                                         : "pid " + std::to_string(g.pid);
    throw StreamFullError("stream " + s.name + " is full: the slowest reader (" + who + ", at message " +
                          std::to_string(g.cursor) + ") is " + std::to_string(s.geo.capacity) +
                          " messages behind" + sent);
  }

 private:
  /// What a claim keeps across its attempts (and send_some across its batches): the deadline
  /// (no clock read unless it has to wait), a sleeping writer's mark, the next hook call.
  struct ClaimWait {
    explicit ClaimWait(Timeout t) noexcept : deadline(t) {}
    stream_impl::LazyDeadline deadline;
    stream_impl::WriterSleeper sleeping;
    std::optional<timespec> next_hook;
    bool polled = false;
  };

  static void check_writable(const detail::StreamSegment& s) {
    if (s.readonly) throw ReadOnlyError("stream " + s.name + " was opened read-only");
  }

  static void check_size(const detail::StreamSegment& s, std::size_t size) {
    if (s.geo.dtype != 0 && size != s.geo.max_bytes)
      throw ArgumentError("a frame of stream " + s.name + " is " + std::to_string(s.geo.max_bytes) +
                          " bytes, not " + std::to_string(size));
    if (size > s.geo.max_bytes)
      throw MessageTooLongError("message is " + std::to_string(size) + " bytes; stream " + s.name +
                                " takes at most " + std::to_string(s.geo.max_bytes) + " (max_bytes)");
  }

  template <class Hook>
  std::optional<StreamClaim> claim_some(std::size_t nbytes, Timeout timeout, Hook& between_slices,
                                        bool raise) {
    detail::StreamSegment& s = seg();
    check_writable(s);
    check_size(s, nbytes);
    ClaimWait wait(timeout);
    std::uint64_t first = 0;
    std::uint64_t got = 0;
    const Sent r = claim_loop(
        1, wait, between_slices, [](std::uint64_t, std::uint64_t) {}, first, got);
    if (r != Sent::all) {
      if (raise) throw_full(s, 0, r);
      return std::nullopt;
    }
    return StreamClaim(s_, first, nbytes);
  }

  /// The one claim loop of send_some() and claim(): claims up to `want` (1 to capacity)
  /// consecutive slots, as many as there is room for, waiting per the policy while there is
  /// none. `under_lock(first, k)` runs with the mutex still held after a claim (send fills
  /// small messages there). Sets `first` and `got` (the slots claimed, marked WRITING).
  template <class Hook, class UnderLock>
  Sent claim_loop(std::uint64_t want, ClaimWait& wait, Hook& between_slices, UnderLock&& under_lock,
                  std::uint64_t& first, std::uint64_t& got) {
    detail::StreamSegment& s = seg();
    StreamHeader* h = s.header();
    for (;;) {
      // SYNC POINT (once sleeping): seq_cst, pairs with the reader's notify_writers fence.
      const std::uint32_t epoch = h->space_epoch.load(std::memory_order_seq_cst);
      stream_impl::Claim claimed = stream_impl::Claim::full;
      {
        const std::chrono::nanoseconds left = wait.deadline.left();
        std::optional<stream_impl::StreamLock> lock = stream_impl::StreamLock::acquire(
            s, left == std::chrono::nanoseconds::max() ? Timeout{} : Timeout{left}, between_slices);
        if (!lock) return Sent::mutex_held;
        claimed = stream_impl::claim_locked(s, want, first);
        if (claimed == stream_impl::Claim::full && want > 1) {
          // Take what room there is now rather than wait for the whole batch.
          const std::uint64_t head = h->head.load(std::memory_order_relaxed);
          const std::uint64_t room = s.gate + s.geo.capacity > head ? s.gate + s.geo.capacity - head : 0;
          if (room > 0) {
            want = std::min(want, room);
            claimed = stream_impl::claim_locked(s, want, first);
          }
        }
        if (claimed == stream_impl::Claim::made) {
          got = want;
          under_lock(first, want);
          return Sent::all;
        }
        if (claimed == stream_impl::Claim::full && wait.deadline.left().count() > 0) {
          if (wait.polled && !wait.sleeping.counted()) {
            const int w = s.writer_index.load(std::memory_order_relaxed);  // registered by the claim
            wait.sleeping.count_in(s, static_cast<std::uint32_t>(w),
                                   entry_generation(s.writer_state.load(std::memory_order_relaxed)));
            // SYNC POINT: pairs with the reader's fence in notify_writers: either it sees this
            // waiter, or the next claim's scan sees its cursor.
#if !XSHM_TSAN
            std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
            continue;
          }
          if (wait.sleeping.counted() && stream_impl::reap_readers(s)) continue;
        }
      }
      const std::chrono::nanoseconds left = wait.deadline.left();
      if (left.count() == 0) return claimed == stream_impl::Claim::busy ? Sent::busy : Sent::full;
      if (claimed == stream_impl::Claim::full && !wait.polled) {
        // A reader that is taking messages frees a slot within microseconds: poll for it
        // before paying a sleep and the reader's wake.
        wait.polled = true;
        const auto poll_end =
            std::chrono::steady_clock::now() + std::min<std::chrono::nanoseconds>(kFullPoll, left);
        for (unsigned i = 0; !stream_impl::has_room(s, want); ++i) {
          cpu::relax();
          if ((i & 15) == 15 && std::chrono::steady_clock::now() >= poll_end) break;
        }
        continue;
      }
      const timespec now = futex::monotonic_now();
      if (!wait.next_hook)
        wait.next_hook = futex::add_ns(now, std::chrono::nanoseconds(kStreamSlice).count());
      if constexpr (kHasHook<Hook>) {
        if (!futex::before(now, *wait.next_hook)) {
          between_slices();
          wait.next_hook =
              futex::add_ns(futex::monotonic_now(), std::chrono::nanoseconds(kStreamSlice).count());
        }
      }
      // Busy (a slot's earlier writer still copying, or its claim open): a short pause. Full:
      // sleep until a reader moves, and look at the gating readers' liveness every kGateCheck.
      const std::int64_t nap =
          claimed == stream_impl::Claim::busy ? 50'000 : std::chrono::nanoseconds(kGateCheck).count();
      timespec until = futex::add_ns(now, std::min<std::int64_t>(nap, left.count()));
      if constexpr (kHasHook<Hook>) {
        if (futex::before(*wait.next_hook, until)) until = *wait.next_hook;
      }
      futex::wait(&h->space_epoch, epoch, &until);
    }
  }

  explicit Stream(std::shared_ptr<detail::StreamSegment> s) : s_(std::move(s)) {}

  detail::StreamSegment& seg() const {
    if (s_ == nullptr) throw ClosedError("the stream handle is closed");
    s_->check_usable();
    return *s_;
  }

  std::shared_ptr<detail::StreamSegment> s_;
};

}  // namespace xshm
