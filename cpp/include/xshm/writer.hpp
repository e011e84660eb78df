// The writer: taking the segment's writer mutex (and, when its last owner died, recovering
// the record before anything else) and the publish protocol under it, in steps that the
// write transaction and the lock guard (transaction.hpp) reuse. Only the holder of the mutex writes the
// record slots, header seq, epoch and owner_pid; readers (reader.hpp) and waiters (wait.hpp) only load them.
//
// One publish, in order (docs/LAYOUT.md section 9.3, same step numbers):
//   1. live slot lock odd; write meta, values, message; live slot lock even
//   2. header seq = n (release)
//   3. notify: epoch += 1; futex wake if anyone sleeps
//   4. backup slot lock odd; copy live into backup; backup slot lock even
// At every instant one slot holds a complete record of the newest returned publish (or of the
// one being made), so a reader never waits for a writer, alive or dead. A writer that dies
// leaves at most one slot odd; the next locker sees EOWNERDEAD and recover() copies the
// complete slot over the odd one before it goes on.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "cpu.hpp"
#include "errors.hpp"
#include "futex.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "record.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"
#include "seqlock.hpp"
#include "utf8.hpp"

namespace xshm {

namespace writer {

/// Epoch += 1, and a futex wake when a waiter sleeps.
inline void notify(const detail::Segment& s) noexcept {
  Header* h = s.header();
  // SYNC POINT: seq_cst pairs with the waiter's seq_cst waiters increment and epoch load
  // (wait.hpp): either this load sees the waiter's count, or the waiter sees the new epoch.
  h->epoch.fetch_add(1, std::memory_order_seq_cst);
  if (h->waiters.load(std::memory_order_seq_cst) != 0) futex::wake_all(&h->epoch);
}

/// Copies slot `src` over slot `dst` (LAYOUT.md 9.4): dst odd (kept odd if it already is),
/// bytes [8, record_size) of src into it, dst even. Recovery and the abort of an in-place
/// write transaction (the backup over the live slot) both use it.
inline void copy_slot(const detail::Segment& s, int dst, int src) noexcept {
  RecordMeta* d = s.meta(dst);
  const std::uint64_t odd = seqlock::begin_slot_write(d->lock);
  seqlock::copy_shared(&d->seq, &s.meta(src)->seq, s.geo.record_size - sizeof(std::uint64_t));
  seqlock::end_slot_write(d->lock, odd);
}

/// Mutex held after EOWNERDEAD: make both slots complete again and the header agree, count
/// the recovery and bump the epoch. The crash states and what each becomes:
///   live odd (died writing it)                 -> backup copied over live
///   backup odd (died refreshing it)            -> live copied over backup
///   both even, backup's seq != live's (died between steps 1 and 4) -> live copied over backup
///   live complete, header seq behind (died between steps 1 and 2)  -> header seq = live's
///   no backup, live odd                        -> stays odd: the record is torn
inline void recover(const detail::Segment& s) {
  Header* h = s.header();
  RecordMeta* live = s.meta(0);
  if (s.geo.backup) {
    RecordMeta* backup = s.meta(1);
    const std::uint64_t l0 = live->lock.load(std::memory_order_relaxed);
    const std::uint64_t l1 = backup->lock.load(std::memory_order_relaxed);
    if (l0 & 1) {  // died writing the live slot: the backup holds the last complete record
      copy_slot(s, 0, 1);
    } else if ((l1 & 1) || detail::load_meta(backup).seq != detail::load_meta(live).seq) {
      // Died refreshing the backup, or between completing the live slot and starting the
      // refresh (backup even but stale): the live slot is complete. A stale backup left in
      // place would send readers of the next publish back to an older record (found by the
      // loom model, rust/xshm/tests/loom.rs). Whether the word was odd or even, it ends even:
      // end_slot_write completes the odd value begin_slot_write returned.
      copy_slot(s, 1, 0);
    }
  }
  // A writer that died between completing the live slot and publishing seq: publish it.
  if ((live->lock.load(std::memory_order_relaxed) & 1) == 0) {
    const std::uint64_t live_seq = detail::load_meta(live).seq;
    // SYNC POINT: pairs with the acquire loads of seq in seq() and wait.hpp, like a publish.
    if (h->seq.load(std::memory_order_relaxed) < live_seq) h->seq.store(live_seq, std::memory_order_release);
  }
  h->recoveries.fetch_add(1, std::memory_order_relaxed);
  notify(s);
}

}  // namespace writer

/// The writer mutex, held. The one release path ("clear owner_pid, unlock") for publish(),
/// the write transaction and the lock guard. Movable, not copyable; releases on destruction.
class WriterLock {
 public:
  WriterLock(WriterLock&& o) noexcept : s_(std::exchange(o.s_, nullptr)), torn_(o.torn_) {}
  WriterLock& operator=(WriterLock&& o) noexcept {
    if (this != &o) {
      unlock();
      s_ = std::exchange(o.s_, nullptr);
      torn_ = o.torn_;
    }
    return *this;
  }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;
  ~WriterLock() { unlock(); }

  /// Clears owner_pid, then unlocks. Idempotent. Called on a thread that does not own the
  /// mutex (a guard moved to another thread), the unlock fails (EPERM): the mutex stays held
  /// by the thread that took it (until it exits: then the next writer recovers), so owner_pid
  /// is put back to say so.
  void unlock() noexcept {
    if (s_ == nullptr) return;
    // SYNC POINT: this seq_cst clear follows the slot's end_slot_write() release; it pairs
    // with the seq_cst load of owner_pid in reader::check_stuck().
    s_->header()->owner_pid.store(0, std::memory_order_seq_cst);
    if (robust_mutex::unlock(s_->mutex()) != 0)
      s_->header()->owner_pid.store(static_cast<std::uint32_t>(detail::current_pid()),
                                    std::memory_order_seq_cst);
    s_ = nullptr;
  }
  bool held() const noexcept { return s_ != nullptr; }
  /// Only without a backup: the live slot was left mid-write by a writer that died.
  bool torn() const noexcept { return torn_; }

  /// Takes the mutex of `s`, waiting at most `timeout` (robust_mutex::lock, with its slices
  /// and hook); recovers first when the last owner died. nullopt: the timeout passed.
  template <class Hook = NoHook>
  static std::optional<WriterLock> acquire(const detail::Segment& s, Timeout timeout = std::nullopt,
                                           Hook&& between_slices = {}) {
    std::optional<WriterLock> held;
    switch (robust_mutex::lock(s.mutex(), timeout, std::forward<Hook>(between_slices))) {
      case robust_mutex::LockResult::TimedOut:
        return held;
      case robust_mutex::LockResult::OwnerDied:
        held.emplace(WriterLock(s));  // released (owner cleared) if recovery throws
        writer::recover(s);
        robust_mutex::consistent(s.mutex());
        break;
      case robust_mutex::LockResult::Acquired:
        held.emplace(WriterLock(s));
        break;
    }
    s.header()->owner_pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_seq_cst);
    held->torn_ = (s.meta(0)->lock.load(std::memory_order_relaxed) & 1) != 0;
    return held;
  }

 private:
  explicit WriterLock(const detail::Segment& s) noexcept : s_(&s) {}
  const detail::Segment* s_;
  bool torn_ = false;
};

namespace writer {

inline void require_writable(const detail::Segment& s) {
  if (s.readonly) throw ReadOnlyError("segment " + s.name + " was opened read-only");
}

/// The message as it will be stored: longer than the slot throws MessageTooLongError unless
/// `truncate`, which cuts it on a code-point boundary.
inline std::string_view fit_message(const detail::Segment& s, std::string_view text, bool truncate) {
  if (text.size() <= s.geo.message_capacity) return text;
  if (!truncate)
    throw MessageTooLongError("message is " + std::to_string(text.size()) + " bytes; the slot holds " +
                              std::to_string(s.geo.message_capacity));
  return text.substr(0, utf8::cut(text, s.geo.message_capacity));
}

[[noreturn]] inline void throw_torn_for_partial_write() {
  throw TornRecordError(
      "the record was torn by a writer that died mid-write and has no "
      "backup: the next publish must give values, message and counter");
}

/// The writer mutex stayed taken for the whole `timeout` (never nullopt here): who held it,
/// when the header says.
[[noreturn]] inline void throw_lock_timeout(const detail::Segment& s, Timeout timeout) {
  const std::uint32_t owner = s.header()->owner_pid.load(std::memory_order_relaxed);
  throw WaitTimeoutError("the writer lock of " + s.name + " was not free within " +
                         format_duration(timeout.value_or(std::chrono::nanoseconds{0})) +
                         (owner != 0 ? " (held by pid " + std::to_string(owner) + ")" : std::string()));
}

/// Starts the transfers a publish will wait for, before it takes the mutex and the clock:
/// ownership of the live slot's lines it is about to write (the readers hold them since
/// their last copy) and a copy of the header's publish line (the spinning readers keep
/// pulling it away). Measured by the ladder in benchmarks/cpp/pingpong.cpp.
inline void prefetch_live(const detail::Segment& s, bool values, std::size_t message_bytes) noexcept {
  cpu::prefetch_for_write(s.meta(0), sizeof(RecordMeta));
  if (values) cpu::prefetch_for_write(s.values(0), s.geo.values_size);
  if (message_bytes != 0) cpu::prefetch_for_write(s.message(0), message_bytes);
  cpu::prefetch_for_read(&s.header()->seq);
}

/// Mutex held, live slot whole: a live message_len beyond the slot (only corruption makes
/// one) is refused before anything keeps it (a publish without a message, a transaction's
/// begin), rather than copied into the backup (LAYOUT.md 9.5). Throws LayoutError.
inline void require_sane_message_len(const detail::Segment& s) {
  const std::uint32_t len = detail::load_meta(s.meta(0)).message_len;
  if (len > s.geo.message_capacity)
    throw LayoutError("corrupt record of " + s.name + ": message length " + std::to_string(len) +
                      " exceeds the slot's " + std::to_string(s.geo.message_capacity) +
                      " bytes; publish a message to repair it");
}

/// The meta image of the next publish: numbered after the current record, stamped with the
/// clock and this pid; `counter`/`message` that are null keep the current ones.
inline detail::MetaImage next_meta(const detail::Segment& s, std::optional<std::uint64_t> counter,
                                   const std::string_view* message) noexcept {
  detail::MetaImage img = detail::load_meta(s.meta(0));
  // With a backup the live slot is whole under the mutex (recovery saw to it) and its seq is
  // the header's. Taking it from there spares a load of the header's publish line, which the
  // spinning readers keep pulling away from this core (+25 ns a hop: the ladder in
  // benchmarks/cpp/pingpong.cpp). Without a backup a torn slot's seq is not to be trusted.
  img.seq = (s.geo.backup ? img.seq : s.header()->seq.load(std::memory_order_relaxed)) + 1;
  if (counter) img.counter = *counter;
  img.timestamp_ns = detail::realtime_ns();
  img.writer_pid = static_cast<std::uint32_t>(detail::current_pid());
  if (message) img.message_len = static_cast<std::uint32_t>(message->size());
  return img;
}

/// Step 1 after the live slot went odd (`odd`, from begin_slot_write): the meta, the values
/// (null: kept, or already written in place) and the message (null: kept), then even.
inline void finish_live(const detail::Segment& s, std::uint64_t odd, const detail::MetaImage& img,
                        const void* values, const std::string_view* message) noexcept {
  RecordMeta* live = s.meta(0);
  detail::store_meta(live, img);
  if (values != nullptr) seqlock::store_bytes(s.values(0), values, s.geo.values_size);
  if (message) seqlock::store_bytes(s.message(0), message->data(), message->size());
  seqlock::end_slot_write(live->lock, odd);
}

/// Step 1 whole: the live slot odd, then finish_live().
inline void write_live(const detail::Segment& s, const detail::MetaImage& img, const void* values,
                       const std::string_view* message) noexcept {
  finish_live(s, seqlock::begin_slot_write(s.meta(0)->lock), img, values, message);
}

/// Step 2: the header's seq (step 3 is notify()).
inline void publish_seq(const detail::Segment& s, std::uint64_t seq) noexcept {
  // SYNC POINT: pairs with the acquire loads of seq in seq() and wait.hpp.
  s.header()->seq.store(seq, std::memory_order_release);
}

/// Step 4: copy what the publish changed (the meta, the values when `values`, the first
/// `message_bytes` of the message) from the live slot into the backup.
inline void refresh_backup(const detail::Segment& s, bool values, std::size_t message_bytes) noexcept {
  RecordMeta* backup = s.meta(1);
  const std::uint64_t odd = seqlock::begin_slot_write(backup->lock);
  seqlock::copy_shared(&backup->seq, &s.meta(0)->seq, sizeof(detail::MetaImage));
  if (values) seqlock::copy_shared(s.values(1), s.values(0), s.geo.values_size);
  if (message_bytes != 0) seqlock::copy_shared(s.message(1), s.message(0), message_bytes);
  seqlock::end_slot_write(backup->lock, odd);
}

/// Steps 1-4 from the live slot's meta on: the slot has been odd since `odd` (the values,
/// when the caller wrote them in place, are in it already). `values_changed`: the backup
/// refresh copies the values. The one publish sequence both publish_locked() and the
/// in-place write transaction (transaction.hpp) end with. Returns the new sequence.
inline std::uint64_t complete_publish(const detail::Segment& s, std::uint64_t odd,
                                      const detail::MetaImage& img, const void* values, bool values_changed,
                                      const std::string_view* message) noexcept {
  finish_live(s, odd, img, values, message);
  publish_seq(s, img.seq);
  notify(s);
  if (s.geo.backup) refresh_backup(s, values_changed, message ? message->size() : 0);
  return img.seq;
}

/// Steps 1-4 of the protocol; the writer mutex is held. `values`/`message`/`counter` that
/// are null keep the current ones. Returns the new sequence.
inline std::uint64_t publish_locked(const detail::Segment& s, const void* values,
                                    const std::string_view* message, std::optional<std::uint64_t> counter) {
  const detail::MetaImage img = next_meta(s, counter, message);
  const std::uint64_t odd = seqlock::begin_slot_write(s.meta(0)->lock);
  return complete_publish(s, odd, img, values, values != nullptr, message);
}

/// A whole publish: checks, prefetch, the mutex (waiting at most `timeout`), steps 1-4,
/// release. nullopt: the mutex stayed taken for the whole timeout; nothing was published.
template <class Hook = NoHook>
inline std::optional<std::uint64_t> publish(const detail::Segment& s, const void* values,
                                            std::size_t values_bytes, std::optional<std::string_view> message,
                                            std::optional<std::uint64_t> counter, bool truncate,
                                            Timeout timeout, Hook&& between_slices = {}) {
  require_writable(s);
  if (values != nullptr && values_bytes != s.geo.values_size)
    throw ArgumentError("publish: values have " + std::to_string(values_bytes) +
                        " bytes, the segment's array has " + std::to_string(s.geo.values_size));
  std::string_view msg;
  if (message) msg = fit_message(s, *message, truncate);
  prefetch_live(s, values != nullptr, message ? msg.size() : 0);  // overlaps the mutex and the clock
  std::optional<WriterLock> held = WriterLock::acquire(s, timeout, std::forward<Hook>(between_slices));
  if (!held) return std::nullopt;
  // A record without values (a shape with a zero extent) has none to give.
  const bool all_values = values != nullptr || s.geo.values_size == 0;
  if (held->torn() && (!all_values || !message || !counter)) throw_torn_for_partial_write();
  if (!message) require_sane_message_len(s);
  return publish_locked(s, values, message ? &msg : nullptr, counter);
}

}  // namespace writer

}  // namespace xshm
