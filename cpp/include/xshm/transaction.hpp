// The writer's two held-mutex objects: the write transaction (a publish whose values the caller
// writes between taking the mutex and committing) and the lock guard (the mutex for a section
// of the caller's own, publishing nothing). Both reuse writer.hpp's steps: a transaction's
// commit is the rest of a publish, never a second copy of its rules.
//
// In place (the default with a backup): begin = mutex, then the live slot odd, so readers
// fall back to the backup, which holds the same complete record; the caller writes the values
// straight into the live slot; commit = meta, message, live slot even, header seq, notify,
// backup refresh (writer::complete_publish); abort = the backup copied back over the live slot
// (writer::copy_slot), nothing published. A writer killed inside leaves the live slot odd,
// exactly the state recovery repairs (backup over live). Staged (the default without a
// backup, which could not restore an aborted block): the values are a private copy published
// by a whole publish at commit.
#pragma once

#include <algorithm>
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
#include "segment.hpp"
#include "seqlock.hpp"
#include "typed.hpp"
#include "writer.hpp"

namespace xshm {

/// Where a write transaction's values live.
enum class WriteMode {
  /// in_place with a backup, staged without.
  automatic,
  /// A private copy, published at commit: three copies of the values, and a promise that
  /// holds without a backup (an abort or a crash inside changes nothing shared).
  staged,
  /// The live slot itself: no copy. With a backup, readers get the last record meanwhile and an
  /// abort restores it. Without one, readers of the record stall while the transaction runs
  /// (TornRecordError after their stall timeout), and an abort or a crash inside leaves the
  /// record torn until the next publish of every field.
  in_place,
};

/// A publish in the making, holding the writer mutex. values() is where the caller writes the
/// values (the live slot in place, a private copy staged); the counter and message are staged
/// either way and published at commit(). Dropping it without commit() aborts: nothing is
/// published and the record is as it was (in place without a backup: torn, see WriteMode).
class WriteTransaction {
 public:
  WriteTransaction(WriteTransaction&&) noexcept = default;
  WriteTransaction& operator=(WriteTransaction&&) = delete;
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  ~WriteTransaction() { abort(); }

  /// Takes the writer mutex of `seg` (waiting at most `timeout`) and opens the record for
  /// writing as `mode` says. nullopt: the timeout passed.
  template <class Hook = NoHook>
  static std::optional<WriteTransaction> begin(std::shared_ptr<detail::Segment> seg,
                                               WriteMode mode = WriteMode::automatic,
                                               Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    const detail::Segment& s = *seg;
    writer::require_writable(s);
    std::optional<WriterLock> held = WriterLock::acquire(s, timeout, std::forward<Hook>(between_slices));
    if (!held) return std::nullopt;
    if (held->torn())
      throw TornRecordError(
          "the record was torn by a writer that died mid-write and has no "
          "backup: publish every field with publish() first");
    writer::require_sane_message_len(s);
    const bool in_place = mode == WriteMode::in_place || (mode == WriteMode::automatic && s.geo.backup);
    std::optional<WriteTransaction> tx(WriteTransaction(std::move(seg), std::move(*held), in_place));
    tx->counter = detail::load_meta(s.meta(0)).counter;
    if (in_place) {
      tx->odd_ = seqlock::begin_slot_write(s.meta(0)->lock);  // readers go to the backup
      tx->values_ = s.values(0);
    } else {
      tx->staged_.resize(std::max<std::uint64_t>(s.geo.values_size, 1));  // values() never null
      seqlock::load_bytes(tx->staged_.data(), s.values(0), s.geo.values_size);
      tx->values_ = tx->staged_.data();
    }
    return tx;
  }

  /// Where the values go (geometry().values_size bytes, aligned for the dtype). In place it
  /// is the live slot: valid until commit() or abort(), after which writing there changes a
  /// published record under nobody's lock. Staged it is private to the transaction.
  void* values() noexcept { return values_; }
  std::size_t values_bytes() const noexcept { return seg_->geo.values_size; }
  /// values() as T*, T the segment's element type (typed.hpp; std::byte for the raw bytes):
  /// DtypeError otherwise.
  template <class T>
  T* values_as() {
    check_dtype<T>(seg_->geo.dtype, "values_as<{}>()");
    return static_cast<T*>(values_);
  }
  /// True when values() is the live slot.
  bool in_place() const noexcept { return in_place_; }

  /// The message to publish: the current one until set_message(). ArgumentError once the
  /// transaction has ended (the live slot may only be read under the mutex).
  const std::string& message() {
    require_active();
    if (!message_set_ && !message_loaded_) {
      const detail::Segment& s = *seg_;
      const std::uint32_t len = std::min(detail::load_meta(s.meta(0)).message_len, s.geo.message_capacity);
      message_.resize(len);
      seqlock::load_bytes(message_.data(), s.message(0), len);
      message_loaded_ = true;
    }
    return message_;
  }
  /// Sets the message; longer than the slot throws MessageTooLongError unless `truncate`,
  /// which cuts on a code-point boundary.
  void set_message(std::string_view text, bool truncate = false) {
    require_active();  // after the end it would be silently lost
    message_.assign(writer::fit_message(*seg_, text, truncate));
    message_set_ = true;
  }

  /// Publishes the record and releases the mutex. Returns the new sequence.
  std::uint64_t commit() {
    require_active();
    const detail::Segment& s = *seg_;
    const std::string_view msg = message_;
    const std::string_view* m = message_set_ ? &msg : nullptr;
    std::uint64_t seq;
    if (in_place_) {
      // The caller's own stores into values() may have been non-temporal (a streaming memcpy):
      // order them before the end-write release, as the library's streaming copies are.
#if XSHM_STREAM_STORES
      cpu::stream_fence();
#endif
      seq = writer::complete_publish(s, odd_, writer::next_meta(s, counter, m), nullptr, true, m);
    } else {
      writer::prefetch_live(s, true, message_set_ ? msg.size() : 0);  // overlaps the clock
      seq = writer::publish_locked(s, staged_.data(), m, counter);
    }
    lock_.unlock();
    return seq;
  }

  /// Publishes nothing and releases the mutex. In place, the backup is copied back over the
  /// live slot first (without a backup the live slot stays odd: torn). Idempotent.
  void abort() noexcept {
    if (!lock_.held()) return;
    if (in_place_ && seg_->geo.backup) writer::copy_slot(*seg_, 0, 1);
    lock_.unlock();
  }
  bool active() const noexcept { return lock_.held(); }

  std::uint64_t counter = 0;

 private:
  void require_active() const {
    if (!lock_.held())
      throw ArgumentError("the write transaction is no longer active (committed or aborted)");
  }
  WriteTransaction(std::shared_ptr<detail::Segment> seg, WriterLock lock, bool in_place) noexcept
      : seg_(std::move(seg)), lock_(std::move(lock)), in_place_(in_place) {}
  std::shared_ptr<detail::Segment> seg_;  // declared before lock_: the mutex is released first
  WriterLock lock_;
  bool in_place_;
  std::uint64_t odd_ = 0;  // the live slot's odd lock value, in place
  void* values_ = nullptr;
  std::vector<unsigned char> staged_;
  std::string message_;
  bool message_set_ = false;
  bool message_loaded_ = false;
};

/// Holds the writer mutex for a critical section of the caller's own.
class LockGuard {
 public:
  LockGuard(LockGuard&&) noexcept = default;
  LockGuard& operator=(LockGuard&&) = delete;
  ~LockGuard() = default;

  /// Takes the writer mutex of `seg`, waiting at most `timeout`. nullopt: the timeout passed.
  template <class Hook = NoHook>
  static std::optional<LockGuard> acquire(std::shared_ptr<detail::Segment> seg,
                                          Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    writer::require_writable(*seg);
    std::optional<WriterLock> held = WriterLock::acquire(*seg, timeout, std::forward<Hook>(between_slices));
    if (!held) return std::nullopt;
    return LockGuard(std::move(seg), std::move(*held));
  }

  /// Releases the mutex. Idempotent.
  void unlock() noexcept { lock_.unlock(); }

 private:
  LockGuard(std::shared_ptr<detail::Segment> seg, WriterLock lock) noexcept
      : seg_(std::move(seg)), lock_(std::move(lock)) {}
  std::shared_ptr<detail::Segment> seg_;  // declared before lock_: the mutex is released first
  WriterLock lock_;
};

}  // namespace xshm
