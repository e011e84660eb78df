// A sleep prepared but not slept: what an event loop (asyncio through the Python binding, or a
// C++ reactor with notifier.hpp) needs to wait for a segment without a thread per wait. A
// blocking wait counts itself as a sleeper, loads the futex word, finds nothing to take and
// sleeps on the word (wait.hpp, stream/reader.hpp); SharedMemoryManager::prepare_wait() and
// StreamReader::prepare_wait() do the first three steps and hand the fourth to the caller as a
// SleepTicket: the word, the value it held, and the sleeper count, given back when the ticket
// is released or destroyed. Whoever sleeps on the word for the ticket (futex_wait(v)) is woken
// by the next publish or send exactly as the blocking wait is: the count makes writers wake,
// and a change after the load makes the sleep return at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "process.hpp"

namespace xshm {

class SleepTicket {
 public:
  SleepTicket() = default;
  SleepTicket(const SleepTicket&) = delete;
  SleepTicket& operator=(const SleepTicket&) = delete;
  SleepTicket(SleepTicket&& o) noexcept { *this = std::move(o); }
  SleepTicket& operator=(SleepTicket&& o) noexcept {
    if (this != &o) {
      release();
      keep_ = std::move(o.keep_);
      word_ = std::exchange(o.word_, nullptr);
      expected_ = o.expected_;
      waiters_ = std::exchange(o.waiters_, nullptr);
      mark_ = std::exchange(o.mark_, nullptr);
      gen_ = o.gen_;
      pid_ = o.pid_;
      recheck_ = o.recheck_;
    }
    return *this;
  }
  ~SleepTicket() { release(); }

  /// False for a ticket that says "nothing to sleep for": the wait's condition already held.
  bool armed() const noexcept { return word_ != nullptr; }
  explicit operator bool() const noexcept { return armed(); }

  /// The futex word to sleep on (shared, not FUTEX_PRIVATE) and the value it held.
  const std::atomic<std::uint32_t>* word() const noexcept { return word_; }
  std::uint32_t expected() const noexcept { return expected_; }
  /// True once the word moved on: the sleep would return at once; look again.
  bool changed() const noexcept {
    return word_ != nullptr && word_->load(std::memory_order_seq_cst) != expected_;
  }
  /// Look again after at most this long even without a wake (nullopt: only a wake or the
  /// caller's own deadline ends the sleep). A stream reader's ticket says kLostWakeCheck, or
  /// kHoleCheck when a slot is being written by a writer that may have died; a read-only
  /// record handle that cannot count itself as a sleeper says 1 ms (it sleeps blind).
  std::optional<std::chrono::nanoseconds> recheck() const noexcept { return recheck_; }
  /// What keeps the word's mapping alive while it is held (the segment's shared_ptr).
  const std::shared_ptr<const void>& keepalive() const noexcept { return keep_; }

  /// Gives the sleeper count back (once). A ticket inherited across fork() gives nothing back:
  /// the count is its parent's.
  void release() noexcept {
    if (waiters_ != nullptr && pid_ == detail::current_pid()) {
      if (mark_ == nullptr) {
        waiters_->fetch_sub(1, std::memory_order_seq_cst);
      } else {
        // Whoever clears the mark gives the count back: a sweep that judged this reader dead
        // may have done it already (it cannot while the reader lives; the CAS keeps it once).
        std::uint32_t g = gen_;
        if (gen_ != 0 && mark_->compare_exchange_strong(g, 0, std::memory_order_seq_cst))
          waiters_->fetch_sub(1, std::memory_order_seq_cst);
      }
    }
    waiters_ = nullptr;
    mark_ = nullptr;
    word_ = nullptr;
    keep_.reset();
  }

  /// For prepare_wait(): counts a sleeper in `waiters` (and marks `mark` with `gen`, for a
  /// stream reader's entry; see stream_impl::Sleeper). `waiters` null: a blind sleeper.
  static SleepTicket count_in(std::shared_ptr<const void> keep, std::atomic<std::uint32_t>* waiters,
                              std::atomic<std::uint32_t>* mark = nullptr, std::uint32_t gen = 0) noexcept {
    SleepTicket t;
    t.keep_ = std::move(keep);
    t.pid_ = detail::current_pid();
    t.waiters_ = waiters;
    if (waiters != nullptr) waiters->fetch_add(1, std::memory_order_seq_cst);
    if (mark != nullptr) {
      t.mark_ = mark;
      t.gen_ = gen;
      mark->store(gen, std::memory_order_seq_cst);
    }
    return t;
  }
  /// For prepare_wait(): the word and the value loaded (after count_in), and the recheck.
  void arm(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
           std::optional<std::chrono::nanoseconds> recheck) noexcept {
    word_ = word;
    expected_ = expected;
    recheck_ = recheck;
  }

 private:
  std::shared_ptr<const void> keep_;
  const std::atomic<std::uint32_t>* word_ = nullptr;
  std::uint32_t expected_ = 0;
  std::atomic<std::uint32_t>* waiters_ = nullptr;
  std::atomic<std::uint32_t>* mark_ = nullptr;
  std::uint32_t gen_ = 0;
  int pid_ = 0;
  std::optional<std::chrono::nanoseconds> recheck_;
};

}  // namespace xshm
