// xshm::StreamReader: one reader of a stream, with its own cursor: every message, in order,
// from where it attached. It takes a message by its sequence number: a committed slot of its
// sequence is copied and re-checked (seqlock style: under "drop_oldest" a writer may overwrite
// it meanwhile; the copy is then discarded and the lap counted as lost); a slot left WRITING
// by a dead writer is judged and skipped (counted lost). It writes only its own cursor line.
// A member of a group (group.hpp) takes the group's cursor instead, under the group's mutex.
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
#include "../sleep_ticket.hpp"
#include "group.hpp"
#include "layout.hpp"
#include "protocol.hpp"
#include "segment.hpp"

namespace xshm {

/// Where a new reader starts: the oldest message the ring still holds, or the next one sent.
enum class Start { oldest, latest };

/// What a receive returns besides the bytes.
struct MessageInfo {
  std::uint64_t seq = 0;
  std::int64_t timestamp_ns = 0;  // CLOCK_REALTIME when it was sent
  std::uint32_t writer_pid = 0;
  std::uint64_t size = 0;  // payload bytes
};

struct Message : MessageInfo {
  std::vector<unsigned char> data;
};

class StreamReader;

/// A message read in place (StreamReader::recv_view()): data() points into the slot, inside
/// the stream's mapping; nothing is copied. The reader's cursor stays on the message until the
/// view is released, so under "block" a held view gates writers like an unread message (the
/// slot cannot be reused meanwhile). Under "drop_oldest" a writer may lap it: overwritten()
/// says so, and release() then counts the message lost and throws OverwrittenError. The view
/// refers to its reader: keep the reader alive and in place (not moved) until the view is
/// released, as an iterator refers to its container. Move-only; destroyed held, it releases
/// without throwing.
class MessageView {
 public:
  MessageView() = default;
  MessageView(MessageView&& o) noexcept { *this = std::move(o); }
  MessageView& operator=(MessageView&& o) noexcept;
  MessageView(const MessageView&) = delete;
  MessageView& operator=(const MessageView&) = delete;
  ~MessageView() { end(); }

  /// Whether it is still held (not yet released).
  bool is_held() const noexcept { return r_ != nullptr; }
  const unsigned char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(info_.size); }
  std::uint64_t seq() const noexcept { return info_.seq; }
  const MessageInfo& info() const noexcept { return info_; }
  /// Whether a writer has reused the slot since the view was taken ("drop_oldest" only).
  bool overwritten() const noexcept;
  /// Ends the view: the reader moves past the message (received). Throws OverwrittenError
  /// when the slot was overwritten while held (the message is then counted lost). Idempotent.
  void release();

 private:
  friend class StreamReader;
  bool end() noexcept;  // false: it was overwritten

  StreamReader* r_ = nullptr;
  std::shared_ptr<detail::StreamSegment> s_;  // keeps the mapping while held
  const SlotHeader* slot_ = nullptr;
  const unsigned char* data_ = nullptr;
  MessageInfo info_;
  std::uint64_t word_ = 0;
};

/// One reader of a stream: its own cursor (every message, in order, from where it started),
/// attached until close() or destruction. Not copyable; one thread at a time.
class StreamReader {
 public:
  StreamReader() = default;
  StreamReader(StreamReader&& o) noexcept
      : s_(std::move(o.s_)),
        index_(o.index_),
        state_(o.state_),
        cursor_(o.cursor_),
        group_(o.group_),
        lost_(o.lost_),
        received_(o.received_),
        skipped_(o.skipped_),
        hole_seen_(o.hole_seen_),
        hole_seq_(o.hole_seq_),
        hole_since_(o.hole_since_),
        viewing_(o.viewing_),
        interrupted_(o.interrupted_.load(std::memory_order_relaxed)) {
    o.s_.reset();
  }
  StreamReader& operator=(StreamReader&& o) noexcept {
    if (this != &o) {
      close();
      s_ = std::move(o.s_);
      o.s_.reset();
      index_ = o.index_;
      state_ = o.state_;
      cursor_ = o.cursor_;
      group_ = o.group_;
      lost_ = o.lost_;
      received_ = o.received_;
      skipped_ = o.skipped_;
      hole_seen_ = o.hole_seen_;
      hole_seq_ = o.hole_seq_;
      hole_since_ = o.hole_since_;
      viewing_ = o.viewing_;
      interrupted_.store(o.interrupted_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    return *this;
  }
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;
  ~StreamReader() { close(); }

  bool is_attached() const noexcept { return s_ != nullptr; }
  /// The sequence number of the next message this reader takes.
  /// A group member's is its group's.
  std::uint64_t cursor() const {
    detail::StreamSegment& s = seg();
    return group_ == 0 ? cursor_ : s.group(group_ - 1)->cursor.load(std::memory_order_acquire);
  }
  /// Messages this reader missed: overwritten before it got to them ("drop_oldest"), or
  /// abandoned by a writer that died before it committed them.
  std::uint64_t lost() const { return seg(), lost_; }
  std::uint64_t received() const { return seg(), received_; }
  /// Claims their writers dropped, stepped over: never sent, so not lost. received() + lost()
  /// + skipped() = cursor() - the cursor it started at.
  std::uint64_t skipped() const { return seg(), skipped_; }
  /// Messages sent (or being sent) that this reader has not taken yet.
  std::uint64_t lag() const {
    const std::uint64_t head = seg().header()->head.load(std::memory_order_acquire);
    const std::uint64_t c = cursor();
    return head > c ? head - c : 0;
  }
  std::uint32_t index() const { return seg(), index_; }
  /// The name of the group it is a member of, or empty. A member's received(), lost() and
  /// skipped() are its own share of the group's; the group's are in Stream::groups().
  std::string group() const {
    detail::StreamSegment& s = seg();
    return group_ == 0 ? std::string() : stream_impl::group_name(s.group(group_ - 1));
  }

  /// Takes the next message if one is committed: `f(const unsigned char* src, const
  /// MessageInfo&)` copies it out of the slot (with seqlock::load_bytes, or anything that only
  /// reads `info.size` bytes). `f` may run more than once for one call when a "drop_oldest"
  /// writer overwrote the slot meanwhile: only the last run is a message. False when there
  /// is nothing to take yet.
  template <class F>
  bool try_visit(F&& f) {
    if (s_ != nullptr) check_interrupted();
    check_not_viewing();
    return take(f) == Took::message;
  }

  /// Waits up to `timeout` (nullopt: forever) for the next message and visits it as
  /// try_visit() does; polls `spin` (at least kEmptyPoll) first, then sleeps. False on timeout.
  /// `between_slices()` runs about every `slice` while waiting (it may throw).
  template <class F, class Hook = NoHook>
  bool visit(F&& f, Timeout timeout = std::nullopt,
             std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}, Hook&& between_slices = {},
             std::chrono::nanoseconds slice = std::chrono::milliseconds(100)) {
    check_not_viewing();
    Took t = take(f);
    if (t == Took::message) return true;
    check_interrupted();
    StreamHeader* h = seg().header();
    const timespec start = futex::monotonic_now();
    timespec deadline{};
    if (timeout) deadline = futex::add_ns(start, std::max<std::int64_t>(timeout->count(), 0));
    timespec next_hook = futex::add_ns(start, slice.count());
    spin = std::max<std::chrono::nanoseconds>(spin, kEmptyPoll);
    if (timeout) spin = std::min<std::chrono::nanoseconds>(spin, *timeout);
    if (spin.count() > 0) {
      const timespec spin_end = futex::add_ns(start, spin.count());
      unsigned pauses = 1;
      for (unsigned i = 0;; ++i) {
        // Back off between looks, up to kPollPauses: each look takes the slot's line from a
        // writer that is about to fill it, and a look every few nanoseconds makes every send
        // wait for the line (measured: 2.2 M against 5.9 M messages/s, Python to Python). A
        // reader that finds messages again takes them from a backlog without looking in vain.
        for (unsigned k = 0; k < pauses; ++k) cpu::relax();
        if (pauses < kPollPauses) pauses *= 2;
        if ((t = take(f)) == Took::message) return true;
        if ((i & 15) == 15) {
          check_interrupted();
          const timespec now = futex::monotonic_now();
          if (timeout && !futex::before(now, deadline)) return false;
          if (!futex::before(now, spin_end)) break;
        }
      }
    }
    stream_impl::Sleeper sleeping(h->data_waiters, seg().reader(index_)->sleeping, entry_generation(state_));
    for (;;) {
      // SYNC POINT: pairs with stream_impl::notify_readers (seq_cst on both sides).
      const std::uint32_t epoch = h->data_epoch.load(std::memory_order_seq_cst);
      if ((t = take(f)) == Took::message) return true;
      check_interrupted();
      timespec now = futex::monotonic_now();
      if (timeout && !futex::before(now, deadline)) return false;
      if constexpr (kHasHook<Hook>) {
        if (!futex::before(now, next_hook)) {
          between_slices();
          next_hook = futex::add_ns(futex::monotonic_now(), slice.count());
          continue;
        }
      }
      timespec until = futex::add_ns(now, std::chrono::nanoseconds(kLostWakeCheck).count());
      if (timeout && futex::before(deadline, until)) until = deadline;
      if constexpr (kHasHook<Hook>) {
        if (futex::before(next_hook, until)) until = next_hook;
      }
      if (t == Took::hole) {  // wake to judge it (take() does, once it is kHoleCheck old)
        const timespec judge = futex::add_ns(now, std::chrono::nanoseconds(kHoleCheck).count());
        if (futex::before(judge, until)) until = judge;
      }
      futex::wait(&h->data_epoch, epoch, &until);
    }
  }

  /// Waits as visit() does until the next message can be taken, and leaves it there:
  /// try_visit() then takes it where the caller chooses (a binding waits without its
  /// interpreter lock and copies with it held, straight into its own object: one copy). Slots
  /// lapped or abandoned meanwhile are counted lost on the way, as a receive counts them.
  /// Under "drop_oldest" a writer may lap the message before the take: the take counts that
  /// as lost like any lap, then takes the oldest message still there or finds none yet (wait
  /// again). False on timeout.
  template <class Hook = NoHook>
  bool wait(Timeout timeout = std::nullopt, std::chrono::nanoseconds spin = std::chrono::nanoseconds{0},
            Hook&& between_slices = {}, std::chrono::nanoseconds slice = std::chrono::milliseconds(100)) {
    Peek peek;
    return visit(peek, timeout, spin, std::forward<Hook>(between_slices), slice);
  }

  /// visit()'s steps up to its sleep, for an event loop that sleeps elsewhere (see
  /// sleep_ticket.hpp): an unarmed ticket when the next message can be taken now (take it with
  /// try_visit() or recv()), else one armed on data_epoch, counted as this reader's sleeping
  /// receive, that says to look again within kLostWakeCheck (kHoleCheck while a slot is being
  /// written by a writer that may have died). The ticket stands for a receive of this reader:
  /// no other receive on it while the ticket is held (a reader is one thread's, as ever).
  SleepTicket prepare_wait() {
    check_not_viewing();
    detail::StreamSegment& s = seg();
    check_interrupted();
    Peek peek;
    Took t = take(peek);
    if (t == Took::message) return {};
    StreamHeader* h = s.header();
    // One sleep per reader: a second ticket would mark the same entry, and one count would
    // never be given back (the second release's clear of the one mark fails).
    if (s.reader(index_)->sleeping.load(std::memory_order_relaxed) == entry_generation(state_))
      throw ArgumentError("prepare_wait: this reader already has a prepared wait; release that ticket first");
    SleepTicket ticket =
        SleepTicket::count_in(s_, &h->data_waiters, &s.reader(index_)->sleeping, entry_generation(state_));
    // SYNC POINT: as visit(): pairs with stream_impl::notify_readers (seq_cst on both sides).
    const std::uint32_t epoch = h->data_epoch.load(std::memory_order_seq_cst);
    if ((t = take(peek)) == Took::message) return {};  // the ticket gives its count back
    ticket.arm(
        &h->data_epoch, epoch,
        t == Took::hole ? std::chrono::nanoseconds(kHoleCheck) : std::chrono::nanoseconds(kLostWakeCheck));
    return ticket;
  }

  /// The next message, waiting up to `timeout`; WaitTimeoutError when none came.
  Message recv(Timeout timeout = std::nullopt, std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) {
    Message m;
    if (!visit([&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); }, timeout, spin))
      throw WaitTimeoutError("no message on stream " + seg().name + " within the timeout");
    return m;
  }

  std::optional<Message> try_recv() {
    Message m;
    if (!try_visit([&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); }))
      return std::nullopt;
    return m;
  }

  /// Receives into `buf` (at least max_bytes() long, so any message fits). nullopt on timeout.
  std::optional<MessageInfo> recv_into(void* buf, std::size_t size, Timeout timeout = std::nullopt,
                                       std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) {
    if (size < seg().geo.max_bytes)
      throw ArgumentError("recv_into: the buffer holds " + std::to_string(size) +
                          " bytes; a message may have " + std::to_string(seg().geo.max_bytes));
    MessageInfo out;
    auto copy = [&](const unsigned char* src, const MessageInfo& info) {
      seqlock::load_bytes(buf, src, static_cast<std::size_t>(info.size));
      out = info;
    };
    if (!visit(copy, timeout, spin)) return std::nullopt;
    return out;
  }

  /// Waits up to `timeout` for one message, then takes every message already committed, up
  /// to `max_n`. Empty on timeout.
  std::vector<Message> recv_many(std::size_t max_n, Timeout timeout = std::nullopt) {
    std::vector<Message> out;
    if (max_n == 0) return out;
    Message m;
    auto f = [&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); };
    if (!visit(f, timeout)) return out;
    out.push_back(std::move(m));
    while (out.size() < max_n && try_visit(f)) out.push_back(std::move(m));
    return out;
  }

  /// The next message read in place, waiting up to `timeout` (nullopt: forever) as recv() does;
  /// nullopt on timeout. See MessageView. Until it is released every receive of this reader
  /// throws ArgumentError. Not for a group member (ArgumentError): its messages are taken
  /// under the group's mutex.
  template <class Hook = NoHook>
  std::optional<MessageView> recv_view(Timeout timeout = std::nullopt,
                                       std::chrono::nanoseconds spin = std::chrono::nanoseconds{0},
                                       Hook&& between_slices = {},
                                       std::chrono::nanoseconds slice = std::chrono::milliseconds(100)) {
    check_can_view();
    Grab g;
    if (!visit(g, timeout, spin, std::forward<Hook>(between_slices), slice)) return std::nullopt;
    return make_view(g);
  }

  /// The next message read in place if one is there now, else nullopt (never waits).
  std::optional<MessageView> try_recv_view() {
    check_can_view();
    Grab g;
    if (!try_visit(g)) return std::nullopt;
    return make_view(g);
  }

  /// Makes a receive waiting in another thread throw ClosedError now (and every later one):
  /// the way to stop a consumer thread before close(). The only member another thread may
  /// call while this reader is in use.
  void interrupt() noexcept {
    interrupted_.store(true, std::memory_order_seq_cst);
    if (s_ == nullptr) return;
    StreamHeader* h = s_->header();
    // The epoch moves too: a reader between its look and its sleep then does not sleep.
    h->data_epoch.fetch_add(1, std::memory_order_seq_cst);
    futex::wake_all(&h->data_epoch);
  }

  /// Detaches: a "block" writer stops waiting for this reader. Idempotent.
  void close() noexcept {
    if (s_ == nullptr) return;
    detail::StreamSegment& s = *s_;
    if (!s.fd.forked && s.pid == detail::current_pid()) {
      StreamHeader* h = s.header();
      ReaderEntry* r = s.reader(index_);
      // Under the mutex when it comes within kGateCheck (writers then see the detach at their
      // next claim, no reaper runs meanwhile, and no reader attaches to this entry); without
      // it otherwise (a stopped writer holds it), which only delays what the writers see.
      std::optional<stream_impl::StreamLock> lock = lock_for_close(s);
      // The entry stays this handle's own (never judged dead by a reaper of this handle) until
      // its state is 0; the lock byte goes first: once the state is 0 another reader of this
      // handle (same open file description) may take the entry, and a release after that would
      // drop its lock.
      liveness::release(s.fd.fd, s.reader_lock_offset(index_));
      std::uint64_t st = state_;
      if (r->state.compare_exchange_strong(st, 0, std::memory_order_acq_rel))
        h->readers_gen.fetch_add(1, std::memory_order_acq_rel);
      {
        std::lock_guard<std::mutex> g(s.local);
        auto it = s.own_readers.find(index_);  // one instance: a later attachment keeps its own
        if (it != s.own_readers.end()) s.own_readers.erase(it);
      }
      lock.reset();
      h->space_epoch.fetch_add(1, std::memory_order_seq_cst);
      futex::wake_all(&h->space_epoch);
    }
    s_.reset();
  }

 private:
  friend class Stream;
  enum class Took { message, empty, hole };
  /// What wait() visits with: a committed message at the cursor is found, not taken (take()
  /// returns before any visit; the call operator only keeps the code after that compiling).
  struct Peek {
    void operator()(const unsigned char*, const MessageInfo&) const noexcept {}
  };
  /// What recv_view() visits with: a committed message at the cursor is checked (its length)
  /// and left there, not taken: the view then reads it in place.
  struct Grab {
    const unsigned char* data = nullptr;
    MessageInfo info;
    std::uint64_t word = 0;
    void operator()(const unsigned char* p, const MessageInfo& i) noexcept {
      data = p;
      info = i;
    }
  };

  StreamReader(std::shared_ptr<detail::StreamSegment> s, std::uint32_t index, std::uint64_t state,
               std::uint64_t cursor, std::uint32_t group)
      : s_(std::move(s)), index_(index), state_(state), cursor_(cursor), group_(group) {}

  detail::StreamSegment& seg() const {
    if (s_ == nullptr) throw ClosedError("the stream reader is closed");
    s_->check_usable();
    return *s_;
  }

  friend class MessageView;

  /// The end of a view of message `c`, whose slot held `w`: taken if the slot still holds it,
  /// else counted lost (overwritten while held). Past it either way.
  enum class ViewEnd { taken, overwritten, detached };
  ViewEnd end_view(std::uint64_t c, std::uint64_t w) noexcept {
    viewing_ = false;
    // Closed while the view was held (writers stopped waiting for it), or a view inherited
    // across fork() (the entry is the parent's): nothing to move; the caller still says
    // whether the slot was overwritten (MessageView::end).
    if (s_ == nullptr || s_->fd.forked || s_->pid != detail::current_pid()) return ViewEnd::detached;
    // SYNC POINT: as a copy's re-check: pairs with the release fence after a lapping writer's
    // mark, so that reads through the view that saw its bytes see the word changed.
    seqlock::acquire_fence();
    if (s_->slot(c)->word.load(std::memory_order_relaxed) == w) {
      advance(c + 1, true);
      return ViewEnd::taken;
    }
    count_lost(1);
    advance(c + 1, false);
    return ViewEnd::overwritten;
  }

  void check_can_view() const {
    if (seg(), group_ != 0)
      throw ArgumentError("recv_view: a member of group " + group() +
                          " takes its messages under the group's mutex; use recv()");
  }

  MessageView make_view(const Grab& g) {
    viewing_ = true;
    MessageView v;
    v.r_ = this;
    v.s_ = s_;
    v.slot_ = s_->slot(g.info.seq);
    v.data_ = g.data;
    v.info_ = g.info;
    v.word_ = g.word;
    return v;
  }

  void check_not_viewing() const {
    if (viewing_ && s_ != nullptr)  // (closed: the receive says ClosedError)
      throw ArgumentError("this reader holds a view of message " + std::to_string(cursor_) +
                          ": release it before the next receive");
  }

  void check_interrupted() const {
    if (interrupted_.load(std::memory_order_seq_cst))
      throw ClosedError("stream " + s_->name + ": the reader was interrupted (closed from another thread)");
  }

  static void fill(Message& m, const unsigned char* src, const MessageInfo& info) {
    static_cast<MessageInfo&>(m) = info;
    m.data.resize(static_cast<std::size_t>(info.size));
    if (info.size != 0) seqlock::load_bytes(m.data.data(), src, static_cast<std::size_t>(info.size));
  }

  static std::optional<stream_impl::StreamLock> lock_for_close(detail::StreamSegment& s) noexcept {
    if (!s.mutex_ok) return std::nullopt;
    try {
      return stream_impl::StreamLock::acquire(s, std::chrono::nanoseconds(kGateCheck));
    } catch (...) {
      return std::nullopt;
    }
  }

  void advance(std::uint64_t next, bool took) noexcept {
    ReaderEntry* r = s_->reader(index_);
    if (took) {
      ++received_;
      r->received.store(received_, std::memory_order_relaxed);
    }
    cursor_ = next;
    // SYNC POINT: pairs with the writer's acquire load of cursors (scan_readers): the writer
    // that sees this cursor may overwrite the slots before it, which this reader has copied.
    r->cursor.store(next, std::memory_order_release);
    if (s_->geo.backpressure == Backpressure::block) stream_impl::notify_writers(*s_);
  }

  void count_lost(std::uint64_t n) noexcept {
    lost_ += n;
    s_->reader(index_)->lost.store(lost_, std::memory_order_relaxed);
  }

  void count_skipped() noexcept {
    ++skipped_;
    s_->reader(index_)->skipped.store(skipped_, std::memory_order_relaxed);
  }

  /// A reader's own cursor, for take_at().
  struct Solo {
    StreamReader& r;
    std::uint64_t cursor() const noexcept { return r.cursor_; }
    void begin_copy(std::uint64_t) noexcept {}
    void took(std::uint64_t c) noexcept { r.advance(c + 1, true); }
    void missed(std::uint64_t c, std::uint64_t next) noexcept {
      r.count_lost(next - c);
      r.advance(next, false);
    }
    void skip(std::uint64_t c) noexcept {
      r.count_skipped();
      r.advance(c + 1, false);
    }
  };

  /// A group's cursor, shared by its members, for take_at() under the group mutex. Each step
  /// records itself in the member's `hold`, moves the group cursor, then the one counter it
  /// changes, then clears `hold` (group.hpp recover_group finishes a step cut short).
  struct Member {
    StreamReader& r;
    GroupEntry* g;
    ReaderEntry* me;
    std::uint64_t cursor() const noexcept { return g->cursor.load(std::memory_order_relaxed); }
    void begin_copy(std::uint64_t c) noexcept {
      me->hold.store(stream_impl::hold_word(c, stream_impl::GroupStep::copy), std::memory_order_relaxed);
    }
    void took(std::uint64_t c) noexcept {
      move(c + 1);
      g->received.store(g->received.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the count before the step's end
      me->hold.store(0, std::memory_order_relaxed);
      ++r.received_;
      me->received.store(r.received_, std::memory_order_relaxed);
    }
    void missed(std::uint64_t c, std::uint64_t next) noexcept {
      me->hold.store(stream_impl::hold_word(c, stream_impl::GroupStep::lose), std::memory_order_relaxed);
      move(next);
      g->lost.store(g->lost.load(std::memory_order_relaxed) + (next - c), std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the count before the step's end
      me->hold.store(0, std::memory_order_relaxed);
      r.lost_ += next - c;
      me->lost.store(r.lost_, std::memory_order_relaxed);
    }
    void skip(std::uint64_t c) noexcept {
      me->hold.store(stream_impl::hold_word(c, stream_impl::GroupStep::skip), std::memory_order_relaxed);
      move(c + 1);
      g->skipped.store(g->skipped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the count before the step's end
      me->hold.store(0, std::memory_order_relaxed);
      r.count_skipped();
    }
    void move(std::uint64_t next) noexcept {
      r.cursor_ = next;
      // SYNC POINT: pairs with the writer's acquire load of gating cursors (for_each_gate): the
      // writer that sees this cursor may overwrite the slots before it, which were copied.
      g->cursor.store(next, std::memory_order_release);
      if (r.s_->geo.backpressure == Backpressure::block) stream_impl::notify_writers(*r.s_);
    }
  };

  /// One look at the slot of the cursor: the reader's own, or its group's (under the group
  /// mutex; a mutex that stays held, by a stopped member, reads as a hole: look again soon).
  template <class F>
  Took take(F& f) {
    detail::StreamSegment& s = seg();
    if (group_ == 0) {
      Solo solo{*this};
      return take_at(f, solo);
    }
    {
      // Nothing there yet, said without the group mutex: members waiting for a message then
      // never contend with the one taking it. (A racy look: what it misses, the wait's next
      // look finds; anything but "empty" is decided under the mutex.)
      const std::uint64_t c = s.group(group_ - 1)->cursor.load(std::memory_order_acquire);
      const std::uint64_t w = s.slot(c)->word.load(std::memory_order_acquire);
      if (w == 0 || (slot_word::tag(w) != 0 && slot_word::seq(w) < c)) return Took::empty;
    }
    std::optional<stream_impl::GroupLock> lock = stream_impl::GroupLock::acquire(s, group_ - 1, kHoleCheck);
    if (!lock) return Took::hole;
    Member member{*this, s.group(group_ - 1), s.reader(index_)};
    struct Unhold {  // a visitor that throws leaves the message to the group, held by nobody
      ReaderEntry* me;
      ~Unhold() { me->hold.store(0, std::memory_order_relaxed); }
    } unhold{member.me};
    return take_at(f, member);
  }

  template <class F, class Cursor>
  Took take_at(F& f, Cursor& cur) {
    detail::StreamSegment& s = seg();
    const std::uint64_t cap = s.geo.capacity;
    for (;;) {
      const std::uint64_t c = cur.cursor();
      SlotHeader* sl = s.slot(c);
      // SYNC POINT: pairs with the release store of COMMITTED in fill_and_commit().
      const std::uint64_t w = sl->word.load(std::memory_order_acquire);
      if (w == slot_word::make(c, slot_word::kCommitted)) {
        if constexpr (std::is_same_v<F, Peek>) return Took::message;  // found; the take checks it
        MessageInfo info;
        info.seq = c;
        info.size = detail::get(sl->length);
        info.timestamp_ns = detail::get(sl->timestamp_ns);
        info.writer_pid = detail::get(sl->writer_pid);
        // A frame is whole: a frame stream's message is max_bytes long, never shorter.
        const bool sane = s.geo.dtype != 0 ? info.size == s.geo.max_bytes : info.size <= s.geo.max_bytes;
        if (sane) {
          cur.begin_copy(c);
          f(detail::StreamSegment::payload(sl), info);
        }
        // SYNC POINT: pairs with the release fence after a lapping writer's WRITING mark.
        seqlock::acquire_fence();
        if (sl->word.load(std::memory_order_relaxed) != w) continue;  // overwritten meanwhile: look again
        // A corrupt slot is refused where it stands, at every look: never skipped in silence.
        if (!sane)
          throw LayoutError("stream " + s.name + ": message " + std::to_string(c) + " claims " +
                            std::to_string(info.size) + " bytes, " +
                            (s.geo.dtype != 0 ? "not the frame's " : "more than max_bytes ") +
                            std::to_string(s.geo.max_bytes) + " (corrupt segment)");
        if constexpr (std::is_same_v<F, Grab>) {
          f.word = w;
          return Took::message;  // left at the cursor: the view's release takes it
        }
        cur.took(c);
        return Took::message;
      }
      const std::uint64_t ws = slot_word::seq(w);
      if (w != 0 && slot_word::tag(w) == 0)  // no writer stores a word without a tag
        throw LayoutError("stream " + s.name + ": slot of message " + std::to_string(c) +
                          " holds a word with no tag, for message " + std::to_string(ws) +
                          " (corrupt segment)");
      if (w != 0 && ws > c) {  // lapped: the ring has moved past the cursor
        // A real lap left a later sequence of the same slot; anything else is a corrupt word,
        // which must not walk the cursor forward one number at a time.
        if (ws % cap != c % cap || ws > kMaxStreamSeq)
          throw LayoutError("stream " + s.name + ": slot of message " + std::to_string(c) +
                            " holds a word for message " + std::to_string(ws) + " (corrupt segment)");
        const std::uint64_t head = s.header()->head.load(std::memory_order_acquire);
        std::uint64_t next = head >= cap ? head - cap + 1 : 0;
        if (cap == 1) next = head;
        // Every sequence up to ws - capacity has had its slot claimed again: lost for sure.
        next = std::max({next, c + 1, ws - cap + 1});
        cur.missed(c, next);
        continue;
      }
      if (w == slot_word::make(c, slot_word::kAbandoned)) {
        // Dropped by its claimant (cancel_claim: never sent), or lost with its writer.
        const bool cancelled = detail::get(sl->cancelled) == c + 1;
        // SYNC POINT: as for a copy, pairs with the release fence after a lapping writer's mark.
        seqlock::acquire_fence();
        if (sl->word.load(std::memory_order_relaxed) != w) continue;  // overwritten meanwhile
        if (cancelled)
          cur.skip(c);
        else
          cur.missed(c, c + 1);
        continue;
      }
      if (w != slot_word::make(c, slot_word::kWriting)) return Took::empty;
      // A hole: judged once it has stayed WRITING for kHoleCheck, counted across calls (a
      // reader that only polls, or waits in short timeouts, judges it too).
      const auto now = std::chrono::steady_clock::now();
      if (!hole_seen_ || hole_seq_ != c) {
        hole_seen_ = true;
        hole_seq_ = c;
        hole_since_ = now;
        return Took::hole;
      }
      if (now - hole_since_ < kHoleCheck) return Took::hole;
      hole_since_ = now;  // judge again after another kHoleCheck if its writer lives
      if (!judge_hole(c)) return Took::hole;
      // abandoned: the next look counts it and moves on
    }
  }

  /// The slot of the cursor has been WRITING for kHoleCheck: abandon it if its writer died.
  /// True when it is abandoned now.
  bool judge_hole(std::uint64_t c) {
    detail::StreamSegment& s = seg();
    SlotHeader* sl = s.slot(c);
    std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (w != slot_word::make(c, slot_word::kWriting)) return true;  // moved on: look again
    if (stream_impl::writer_alive(s, detail::get(sl->writer_index), detail::get(sl->writer_state)))
      return false;
    if (sl->word.compare_exchange_strong(w, slot_word::make(c, slot_word::kAbandoned),
                                         std::memory_order_acq_rel)) {
      s.header()->abandoned.fetch_add(1, std::memory_order_relaxed);
      stream_impl::notify_readers(s);
    }
    return true;
  }

  std::shared_ptr<detail::StreamSegment> s_;
  std::uint32_t index_ = 0;
  std::uint64_t state_ = 0;
  std::uint64_t cursor_ = 0;
  std::uint32_t group_ = 0;  // group index + 1 of a member, else 0
  std::uint64_t lost_ = 0;
  std::uint64_t received_ = 0;
  std::uint64_t skipped_ = 0;
  bool hole_seen_ = false;  // the cursor's slot was found WRITING, since hole_since_
  std::uint64_t hole_seq_ = 0;
  std::chrono::steady_clock::time_point hole_since_{};
  bool viewing_ = false;  // a MessageView of the message at the cursor is held
  std::atomic<bool> interrupted_{false};
};

inline MessageView& MessageView::operator=(MessageView&& o) noexcept {
  if (this != &o) {
    end();
    r_ = std::exchange(o.r_, nullptr);
    s_ = std::move(o.s_);
    slot_ = o.slot_;
    data_ = o.data_;
    info_ = o.info_;
    word_ = o.word_;
  }
  return *this;
}

inline bool MessageView::overwritten() const noexcept {
  // SYNC POINT: acquire, as a reader's look at a slot word.
  return slot_ != nullptr && slot_->word.load(std::memory_order_acquire) != word_;
}

inline bool MessageView::end() noexcept {
  if (r_ == nullptr) return true;
  const StreamReader::ViewEnd how = std::exchange(r_, nullptr)->end_view(info_.seq, word_);
  bool kept = how == StreamReader::ViewEnd::taken;
  if (how == StreamReader::ViewEnd::detached) {
    // A reader closed (or a view inherited across fork) moved nothing: what was read is still
    // a message only if the slot was not reused meanwhile (the check of LAYOUT.md 26.9).
    seqlock::acquire_fence();
    kept = slot_->word.load(std::memory_order_relaxed) == word_;
  }
  s_.reset();
  return kept;
}

inline void MessageView::release() {
  const std::string name = s_ != nullptr ? s_->name : std::string();
  const Backpressure bp = s_ != nullptr ? s_->geo.backpressure : Backpressure::drop_oldest;
  const std::uint64_t seq = info_.seq;
  if (!end())
    throw OverwrittenError(
        "stream " + name + ": message " + std::to_string(seq) + " was overwritten while its view was held (" +
        (bp == Backpressure::drop_oldest ? "a drop_oldest writer lapped it"
                                         : "its reader was closed, so writers stopped waiting") +
        "): what was read through it may be torn");
}

}  // namespace xshm
