// Reader groups (work queues): readers that join the same named group share its cursor in the
// group table (layout.hpp GroupEntry), and each message goes to one of them. A member takes a
// message under the group's robust mutex (reader.hpp): it records the step it is in (`hold`
// in its reader entry: the group cursor it started from and what it is doing), moves the group
// cursor (release: writers gate on it), then the one counter the step changes, then clears
// `hold`. A member that dies holding the mutex leaves at most one step half done; the next
// member to lock the group (EOWNERDEAD) finishes it from `hold` (recover_group), so received +
// lost + skipped = cursor - start holds after any kill. A group outlives its members: created
// once under the stream mutex, never freed.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "../clock.hpp"
#include "../cpu.hpp"
#include "../errors.hpp"
#include "../robust_mutex.hpp"
#include "layout.hpp"
#include "protocol.hpp"
#include "segment.hpp"

namespace xshm {

/// What Stream::groups() reports of one group.
struct GroupInfo {
  std::string name;
  std::uint64_t cursor = 0;  // the next sequence a member takes
  std::uint64_t received = 0;
  std::uint64_t lost = 0;
  std::uint64_t skipped = 0;
  std::uint32_t members = 0;  // attached members whose process lives
  std::uint64_t start = 0;    // the cursor it was created at
};

namespace stream_impl {

/// A member's `hold` (ReaderEntry offset 48): 0 when it is in no step, else (c << 2) | step,
/// where c is the group cursor the step started from.
enum class GroupStep : std::uint64_t { copy = 1, lose = 2, skip = 3 };
inline constexpr std::uint64_t hold_word(std::uint64_t c, GroupStep step) noexcept {
  return (c << 2) | static_cast<std::uint64_t>(step);
}

inline std::string group_name(const GroupEntry* g) {
  return std::string(g->name, std::min<std::size_t>(g->name_len, kMaxGroupName));
}

inline void check_group_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxGroupName)
    throw ArgumentError("a group name is 1 to 40 bytes, got " + std::to_string(name.size()));
  for (char ch : name)
    if (ch < 0x20 || ch > 0x7e || ch == '/')
      throw ArgumentError("a group name is printable ASCII without '/': " + std::string(name) + " is not");
}

/// Stream mutex held: the index of the group named `name`, created at `cursor` if there is
/// none yet (`created` says which).
inline std::uint32_t find_or_create_group(StreamSegment& s, std::string_view name, std::uint64_t cursor,
                                          bool& created) {
  check_group_name(name);
  if (s.geo.max_groups == 0)
    throw Error("stream " + s.name + " has no group table (it was created with max_groups 0)");
  std::optional<std::uint32_t> free;
  for (std::uint32_t i = 0; i < s.geo.max_groups; ++i) {
    GroupEntry* g = s.group(i);
    if (g->state.load(std::memory_order_acquire) != kGroupActive) {
      if (!free) free = i;
      continue;
    }
    if (g->name_len == name.size() && std::memcmp(g->name, name.data(), name.size()) == 0) {
      created = false;
      return i;
    }
  }
  if (!free)
    throw Error("stream " + s.name + " has all " + std::to_string(s.geo.max_groups) +
                " group entries in use (max_groups); create the stream with more");
  GroupEntry* g = s.group(*free);
  robust_mutex::init(reinterpret_cast<pthread_mutex_t*>(g->mutex));  // a free entry: nobody uses it
  g->start.store(cursor, std::memory_order_relaxed);
  g->cursor.store(cursor, std::memory_order_relaxed);
  g->received.store(0, std::memory_order_relaxed);
  g->lost.store(0, std::memory_order_relaxed);
  g->skipped.store(0, std::memory_order_relaxed);
  g->generation = next_generation(g->generation);
  g->name_len = static_cast<std::uint32_t>(name.size());
  std::memset(g->name, 0, sizeof g->name);
  std::memcpy(g->name, name.data(), name.size());
  g->created_ns = detail::realtime_ns();
  // SYNC POINT: release, pairs with the acquire load of state by Stream::groups() and joiners.
  g->state.store(kGroupActive, std::memory_order_release);
  created = true;
  return *free;
}

/// Group mutex held after EOWNERDEAD: finishes the step its dead holder left half done. Every
/// `hold` of this group found now is the dead holder's (a live member sets one only under the
/// mutex, and clears it before it unlocks). The step moved the cursor first and its counter
/// second: a step whose cursor did not move changed nothing (a copy is then counted lost, at
/// most once delivered, and the cursor steps past it; the others are left for the next member
/// to redo); a step whose cursor moved gets its counter from the identity.
inline void recover_group(StreamSegment& s, std::uint32_t gi) {
  GroupEntry* g = s.group(gi);
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    const std::uint64_t hold = r->hold.load(std::memory_order_relaxed);
    if (hold == 0 || r->group.load(std::memory_order_relaxed) != gi + 1) continue;
    const std::uint64_t c = hold >> 2;
    const auto step = static_cast<GroupStep>(hold & 3);
    const std::uint64_t cursor = g->cursor.load(std::memory_order_relaxed);
    const std::uint64_t start = g->start.load(std::memory_order_relaxed);
    const std::uint64_t received = g->received.load(std::memory_order_relaxed);
    const std::uint64_t lost = g->lost.load(std::memory_order_relaxed);
    const std::uint64_t skipped = g->skipped.load(std::memory_order_relaxed);
    // Every branch is idempotent: a locker killed in the middle of it leaves the group
    // owner-dead again, and the next locker's recovery, rerun from what is stored, ends where
    // this one would have (the compiler may not reorder the stores: signal fences).
    const auto in_order = [] { std::atomic_signal_fence(std::memory_order_seq_cst); };
    if (cursor == c) {
      if (step == GroupStep::copy) {  // taken by a member that never returned it: lost
        // Rewritten as a lose step first: a rerun then finishes it as one (or, if the cursor
        // has not moved yet, leaves the message to the next member, counting nothing).
        r->hold.store(hold_word(c, GroupStep::lose), std::memory_order_relaxed);
        in_order();
        g->cursor.store(c + 1, std::memory_order_release);
        in_order();
        g->lost.store(c + 1 - start - received - skipped, std::memory_order_relaxed);
      }
    } else if (step == GroupStep::copy) {  // copied, then lost with its member
      const std::uint64_t span = cursor - start;
      // Counted received already (the member died after its counter store) or not: lost now.
      const bool counted = received + lost + skipped == span;
      r->hold.store(hold_word(c, GroupStep::lose), std::memory_order_relaxed);
      in_order();
      const std::uint64_t took = counted ? received - 1 : received;
      g->received.store(took, std::memory_order_relaxed);
      in_order();
      g->lost.store(span - took - skipped, std::memory_order_relaxed);
    } else if (step == GroupStep::lose) {
      g->lost.store(cursor - start - received - skipped, std::memory_order_relaxed);
    } else {
      g->skipped.store(cursor - start - received - lost, std::memory_order_relaxed);
    }
    in_order();
    r->hold.store(0, std::memory_order_relaxed);
  }
  notify_writers(s);
}

/// A group's mutex, held; released on destruction. Held for one step of one member (a copy at
/// most), so it is polled for kLockPoll first; then waited for up to `wait`.
class GroupLock {
 public:
  static std::optional<GroupLock> acquire(StreamSegment& s, std::uint32_t gi, std::chrono::nanoseconds wait) {
    pthread_mutex_t* m = s.group_mutex(gi);
    std::optional<GroupLock> held;
    robust_mutex::check_kind(m);
    int rc = pthread_mutex_trylock(m);
    if (rc == EBUSY) {
      const auto poll_end = std::chrono::steady_clock::now() + kLockPoll;
      for (unsigned i = 0; rc == EBUSY; ++i, rc = pthread_mutex_trylock(m)) {
        cpu::relax();
        if ((i & 15) == 15 && std::chrono::steady_clock::now() >= poll_end) break;
      }
    }
    robust_mutex::LockResult r = robust_mutex::LockResult::TimedOut;
    if (rc != EBUSY)
      r = robust_mutex::impl::lock_result(rc);
    else if (wait.count() > 0)
      r = robust_mutex::lock(m, Timeout{wait});
    if (r == robust_mutex::LockResult::TimedOut) return held;
    held.emplace(GroupLock(m));
    if (r == robust_mutex::LockResult::OwnerDied) {
      recover_group(s, gi);
      robust_mutex::consistent(m);
    }
    return held;
  }
  GroupLock(GroupLock&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  GroupLock& operator=(GroupLock&&) = delete;
  GroupLock(const GroupLock&) = delete;
  GroupLock& operator=(const GroupLock&) = delete;
  ~GroupLock() {
    if (m_ != nullptr) robust_mutex::unlock(m_);
  }

 private:
  explicit GroupLock(pthread_mutex_t* m) noexcept : m_(m) {}
  pthread_mutex_t* m_;
};

/// The groups in use, with their live members.
inline std::vector<GroupInfo> list_groups(StreamSegment& s) {
  std::vector<GroupInfo> out;
  for (std::uint32_t i = 0; i < s.geo.max_groups; ++i) {
    const GroupEntry* g = s.group(i);
    if (g->state.load(std::memory_order_acquire) != kGroupActive) continue;
    GroupInfo info;
    info.name = group_name(g);
    info.cursor = g->cursor.load(std::memory_order_acquire);
    info.received = g->received.load(std::memory_order_relaxed);
    info.lost = g->lost.load(std::memory_order_relaxed);
    info.skipped = g->skipped.load(std::memory_order_relaxed);
    info.start = g->start.load(std::memory_order_relaxed);
    for (std::uint32_t r = 0; r < s.geo.max_readers; ++r) {
      ReaderEntry* e = s.reader(r);
      if (e->state.load(std::memory_order_acquire) != 0 &&
          e->group.load(std::memory_order_relaxed) == i + 1 && reader_alive(s, r))
        ++info.members;
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace stream_impl

}  // namespace xshm
