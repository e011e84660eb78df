// Waiting for many segments without a thread per wait: the process's notifier. An event loop
// (asyncio through the Python binding, or a C++ reactor) prepares a sleep as a SleepTicket
// (sleep_ticket.hpp), hands it to the notifier with an Inbox and a key, and goes on with its
// other work; the notifier's thread sleeps on the futex words of every ticket at once and,
// once a word moves on (or a deadline passes), posts the key to the inbox, whose eventfd
// becomes readable: the loop wakes in its own poll, drains the keys and looks again (the
// ticket only says "something changed"; the loop decides whether its wait is over).
//
// One thread sleeps on up to kWordsPerThread distinct words with futex_waitv (Linux 5.16 or
// later), its own control word among them; more words start another thread. Older kernels
// (manylinux's 4.18 among them) have no futex_waitv: each thread then sleeps on one word with
// FUTEX_WAIT, so there is one thread per segment being waited on (never one per wait).
// XSHM_FUTEX_WAITV=0 in the environment forces that mode (the tests run both).
//
// Many waits on one segment share its word: a thread sleeps with the value it last loaded,
// and a new ticket whose value is that one joins without waking it. A word nobody watches
// stays in its thread's set for kIdleGrace (a loop that waits again at once finds it there),
// then goes, with the mapping it kept alive. The threads never touch Python or any loop: they
// only post to inboxes, so interpreter exit never waits for them. A forked child starts a
// fresh notifier (instance() notices the pid); the parent's is left alone (its lock may be
// held by a thread the child does not have).
#pragma once

#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "process.hpp"
#include "sleep_ticket.hpp"

namespace xshm {

/// Where the notifier hands over the keys of fired watches: an eventfd, readable while keys
/// wait, for the loop's poll (asyncio's add_reader, epoll).
class Inbox {
 public:
  Inbox() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw Error(std::string("eventfd: ") + std::strerror(errno));
  }
  ~Inbox() { ::close(fd_); }
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  int fd() const noexcept { return fd_; }

  /// The keys posted since the last drain, in order; the fd is not readable after it until
  /// the next post.
  std::vector<std::uint64_t> drain() {
    std::uint64_t n = 0;
    std::vector<std::uint64_t> out;
    std::lock_guard<std::mutex> g(m_);
    if (::read(fd_, &n, sizeof n) < 0) {
      // EAGAIN: nothing was signalled (a spurious poll); the keys, if any, are still taken
    }
    out.swap(keys_);
    signalled_ = false;
    return out;
  }

  /// Appends `key`; the first key since the last drain makes the fd readable.
  void post(std::uint64_t key) {
    std::lock_guard<std::mutex> g(m_);
    keys_.push_back(key);
    if (!signalled_) {
      const std::uint64_t one = 1;
      if (::write(fd_, &one, sizeof one) == sizeof one) signalled_ = true;
    }
  }

 private:
  int fd_;
  std::mutex m_;
  std::vector<std::uint64_t> keys_;
  bool signalled_ = false;
};

namespace notifier_impl {

/// The kernel's struct futex_waitv (linux/futex.h from 5.16; spelled out for older headers).
struct WaitV {
  std::uint64_t val;
  std::uint64_t uaddr;
  std::uint32_t flags;
  std::uint32_t reserved;
};
inline constexpr std::uint32_t kFutex2SizeU32 = 0x02;
inline constexpr std::uint32_t kFutex2Private = 128;
#ifdef SYS_futex_waitv
inline constexpr long kSysFutexWaitv = SYS_futex_waitv;
#else
inline constexpr long kSysFutexWaitv = 449;  // the same number on every architecture
#endif

inline long futex_waitv(WaitV* w, unsigned n, const timespec* abs_deadline) noexcept {
  return ::syscall(kSysFutexWaitv, w, n, 0, abs_deadline, CLOCK_MONOTONIC);
}

/// Whether this kernel has futex_waitv (and the environment does not forbid it).
inline bool have_futex_waitv() noexcept {
  if (const char* e = std::getenv("XSHM_FUTEX_WAITV"); e != nullptr && std::string(e) == "0") return false;
  // No waiters: EINVAL where the call exists, ENOSYS where it does not.
  return futex_waitv(nullptr, 0, nullptr) == -1 && errno != ENOSYS;
}

inline std::int64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline timespec to_timespec(std::int64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

}  // namespace notifier_impl

class Notifier {
 public:
  /// Distinct words one thread sleeps on with futex_waitv (the call takes 128, one is the
  /// thread's control word).
  static constexpr std::size_t kWordsPerThread = 127;
  /// How long a word nobody watches stays in its thread's set.
  static constexpr std::chrono::seconds kIdleGrace{1};
  static constexpr std::int64_t kNever = INT64_MAX;
  /// Futex mode: how often the timer wakes a word's thread again to let an idle word go.
  static constexpr std::int64_t kKickAgain = 100'000'000;

  /// The process's notifier (a new one after fork()).
  static Notifier& instance() {
    static std::atomic<Notifier*> current{nullptr};
    Notifier* n = current.load(std::memory_order_acquire);
    if (n != nullptr && n->pid_ == detail::current_pid()) return *n;
    // No lock (a forked child would inherit one another thread held): the first to swap its
    // new notifier in wins; a loser's starts no thread before it is used, so it just goes.
    auto* fresh = new Notifier();  // never deleted once in use: its threads may outlive users
    while (!current.compare_exchange_weak(n, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (n != nullptr && n->pid_ == detail::current_pid()) {
        delete fresh;
        return *n;
      }
    }
    return *fresh;
  }

  /// Whether this process's notifier is `n` (a handle made before fork() holds its parent's).
  static bool is_current(const Notifier* n) noexcept {
    return n != nullptr && n->pid_ == detail::current_pid();
  }

  /// Watches `t` (armed) for `inbox`: `key` is posted once, when the word moves on from the
  /// ticket's value, at `deadline_ns` (CLOCK_MONOTONIC; kNever: none) or when the ticket's
  /// recheck comes, whichever is first. `owner` groups watches for post_owner(). The ticket
  /// must stay alive until the key is posted or unwatch() returns (it holds the count that
  /// makes writers wake). Returns the watch's id, or 0 when the word had already moved on
  /// (the key is posted at once).
  std::uint64_t watch(const SleepTicket& t, const std::shared_ptr<Inbox>& inbox, std::uint64_t key,
                      std::int64_t deadline_ns = kNever, const void* owner = nullptr) {
    if (!t.armed()) throw ArgumentError("watch: the ticket is not armed (nothing to wait for)");
    if (!inbox) throw ArgumentError("watch: no inbox");
    if (t.recheck())
      deadline_ns =
          std::min(deadline_ns, notifier_impl::now_ns() + static_cast<std::int64_t>(t.recheck()->count()));
    std::lock_guard<std::mutex> g(m_);
    if (!waitv_) ensure_timer();  // may throw (no thread): before anything changes
    if (t.changed()) {
      inbox->post(key);
      return 0;
    }
    const std::uint64_t id = ++next_id_;
    const void* addr = t.word();
    std::size_t si = 0;
    Shard* sh = nullptr;
    if (auto it = word_shard_.find(addr); it != word_shard_.end()) {
      si = it->second;
      sh = shards_[si].get();
    } else {
      si = pick_shard();
      sh = shards_[si].get();
      Word w;
      w.addr = t.word();
      w.val = t.expected();
      w.keep = t.keepalive();
      sh->words.push_back(std::move(w));
      word_shard_.emplace(addr, si);
      sh->dirty = true;
    }
    Word& w = *find_word(*sh, addr);
    w.watches.push_back(WatchRec{id, t.expected(), deadline_ns, inbox, key, owner});
    w.idle_since = kNever;
    w.kicked_at = kNever;
    where_.emplace(id, si);
    ++watches_;
    if (sh->dirty) interrupt(*sh);
    Shard& keeper = deadline_keeper(*sh);
    if (deadline_ns < keeper.sleep_deadline) interrupt(keeper);
    return id;
  }

  /// Withdraws a watch whose key was not posted yet (nothing if it was, or id 0).
  void unwatch(std::uint64_t id) noexcept {
    if (id == 0) return;
    std::lock_guard<std::mutex> g(m_);
    auto it = where_.find(id);
    if (it == where_.end()) return;
    Shard& sh = *shards_[it->second];
    where_.erase(it);
    const std::int64_t now = notifier_impl::now_ns();
    for (Word& w : sh.words) {
      auto wi =
          std::find_if(w.watches.begin(), w.watches.end(), [&](const WatchRec& r) { return r.id == id; });
      if (wi == w.watches.end()) continue;
      w.watches.erase(wi);
      --watches_;
      if (w.watches.empty()) w.idle_since = now;
      return;
    }
  }

  /// Posts every watch of `owner` now (a handle being closed under its waiters).
  void post_owner(const void* owner) {
    if (owner == nullptr) return;
    std::lock_guard<std::mutex> g(m_);
    const std::int64_t now = notifier_impl::now_ns();
    for (auto& sh : shards_) {
      for (Word& w : sh->words) {
        fire_unless(w, now, [&](const WatchRec& r) { return r.owner != owner; });
      }
    }
  }

  /// Threads started (each sleeps on up to words_per_thread() words; in futex mode one more
  /// keeps the deadlines), watches pending.
  std::size_t threads() const {
    std::lock_guard<std::mutex> g(m_);
    return shards_.size() + (timer_ ? 1 : 0);
  }
  std::size_t pending() const {
    std::lock_guard<std::mutex> g(m_);
    return watches_;
  }
  std::size_t words_per_thread() const noexcept { return waitv_ ? kWordsPerThread : 1; }
  /// "futex_waitv" or "futex" (one thread per word).
  const char* mode() const noexcept { return waitv_ ? "futex_waitv" : "futex"; }

 private:
  struct WatchRec {
    std::uint64_t id;
    std::uint32_t expected;
    std::int64_t deadline;
    std::shared_ptr<Inbox> inbox;
    std::uint64_t key;
    const void* owner;
  };
  struct Word {
    const std::atomic<std::uint32_t>* addr = nullptr;
    std::uint32_t val = 0;  // what the thread sleeps with
    std::shared_ptr<const void> keep;
    std::vector<WatchRec> watches;
    std::int64_t idle_since = kNever;
    std::int64_t kicked_at = kNever;  // futex mode: its thread was last woken to let it go
  };
  struct Shard {
    std::vector<Word> words;
    std::atomic<std::uint32_t> ctl{0};
    bool asleep = false;
    bool dirty = false;  // its words changed since it went to sleep
    std::int64_t sleep_deadline = kNever;
    const std::atomic<std::uint32_t>* slept_on = nullptr;  // futex mode: the word it sleeps on
  };

  Notifier() : pid_(detail::current_pid()), waitv_(notifier_impl::have_futex_waitv()) {}

  static Word* find_word(Shard& sh, const void* addr) noexcept {
    for (Word& w : sh.words)
      if (w.addr == addr) return &w;
    return nullptr;
  }

  static void fire(const WatchRec& r) {
    try {
      r.inbox->post(r.key);
    } catch (...) {
      // post() only allocates; out of memory, the waiter finds out at its own deadline
    }
  }

  /// Fires and forgets the watches of `w` that `stays` does not keep; a word left with none is
  /// idle from `now`. Called with m_ held.
  template <class Stays>
  void fire_unless(Word& w, std::int64_t now, Stays stays) {
    auto gone = std::stable_partition(w.watches.begin(), w.watches.end(), stays);
    for (auto i = gone; i != w.watches.end(); ++i) {
      where_.erase(i->id);
      --watches_;
      fire(*i);
    }
    w.watches.erase(gone, w.watches.end());
    if (w.watches.empty() && w.idle_since == kNever) w.idle_since = now;
  }

  /// A shard with room for one more word, started if none has room. Called with m_ held.
  std::size_t pick_shard() {
    for (std::size_t i = 0; i < shards_.size(); ++i)
      if (shards_[i]->words.size() < words_per_thread()) return i;
    auto fresh = std::make_unique<Shard>();
    Shard* sh = fresh.get();
    shards_.reserve(shards_.size() + 1);  // the push below cannot throw once the thread runs
    // The thread first: one that cannot start (a pids limit) leaves no shard without a thread.
    // It waits for m_ (held here) before it looks at its shard.
    std::thread([this, sh] { run(*sh); }).detach();
    shards_.push_back(std::move(fresh));
    return shards_.size() - 1;
  }

  /// Makes a sleeping shard look again. Called with m_ held.
  void interrupt(Shard& sh) noexcept {
    if (!sh.asleep) return;  // it looks before it sleeps again
    sh.ctl.fetch_add(1, std::memory_order_seq_cst);
    if (sh.slept_on != nullptr) {
      // futex mode, asleep on a shared word (kept mapped while it is in the set): a wake on
      // that word; other processes' sleepers on it wake too, look, and sleep again. The wake
      // is lost if the thread is between its unlock and its FUTEX_WAIT: it stays `asleep` so
      // that the next interrupt wakes again (and the word still ends the sleep on a change).
      ::syscall(SYS_futex, const_cast<std::atomic<std::uint32_t>*>(sh.slept_on), FUTEX_WAKE, INT_MAX, nullptr,
                nullptr, 0);
      return;
    }
    // the control word is in the sleep's set with the value before this bump: never lost
    ::syscall(SYS_futex, &sh.ctl, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    sh.asleep = false;
  }

  /// Fires the watches of `sh` that are due and lowers `until` to its next deadline. `own`:
  /// the call is from the shard's own thread, which sleeps on these words: it loads each word
  /// (the value loaded is the one it sleeps with, so a change after the load ends the sleep at
  /// once), fires the watches whose word moved on, and drops words idle for kIdleGrace (their
  /// mapping may go: only the thread that sleeps on a word, awake, lets go of it). Otherwise
  /// (futex mode's timer thread) it fires deadlines only and wakes a shard whose word is due
  /// to go. Called with m_ held.
  void sweep(Shard& sh, std::int64_t now, bool own, std::int64_t& until) {
    const std::int64_t grace = std::chrono::nanoseconds(kIdleGrace).count();
    for (auto wi = sh.words.begin(); wi != sh.words.end();) {
      Word& w = *wi;
      if (own) w.val = w.addr->load(std::memory_order_seq_cst);
      fire_unless(w, now,
                  [&](const WatchRec& r) { return (!own || r.expected == w.val) && r.deadline > now; });
      if (w.watches.empty() && now - w.idle_since >= grace) {
        if (own) {
          word_shard_.erase(w.addr);
          wi = sh.words.erase(wi);
          continue;
        }
        // The wake is lost if the thread is on its way into FUTEX_WAIT: kick again until it
        // lets go (kKickAgain apart; each kick also wakes other processes' sleepers on the word).
        if (w.kicked_at == kNever || now - w.kicked_at >= kKickAgain) {
          w.kicked_at = now;
          interrupt(sh);
        }
        until = std::min(until, w.kicked_at + kKickAgain);
      } else if (w.watches.empty()) {
        until = std::min(until, w.idle_since + grace);
      }
      for (const WatchRec& r : w.watches) until = std::min(until, r.deadline);
      ++wi;
    }
  }

  /// A shard's thread. With futex_waitv: sleeps on its control word and its words until the
  /// first deadline. In futex mode: a word thread sleeps on its one word (or its control word
  /// while it has none) without a deadline, and the timer thread (timer_) keeps every
  /// deadline, sleeping on its control word alone: a wake sent to a thread on its way into
  /// FUTEX_WAIT on a shared word would be lost, one on a control word never is.
  void run(Shard& sh) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are for the process's other threads
    std::vector<notifier_impl::WaitV> v;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      const std::int64_t now = notifier_impl::now_ns();
      std::int64_t until = kNever;
      if (&sh == timer_.get()) {
        for (auto& other : shards_) sweep(*other, now, false, until);
      } else {
        sweep(sh, now, true, until);
        if (!waitv_) until = kNever;
      }
      const std::uint32_t ctl = sh.ctl.load(std::memory_order_seq_cst);
      v.clear();
      v.push_back({ctl, reinterpret_cast<std::uintptr_t>(&sh.ctl),
                   notifier_impl::kFutex2SizeU32 | notifier_impl::kFutex2Private, 0});
      for (const Word& w : sh.words)
        v.push_back({w.val, reinterpret_cast<std::uintptr_t>(w.addr), notifier_impl::kFutex2SizeU32, 0});
      sh.asleep = true;
      sh.dirty = false;
      sh.sleep_deadline = until;
      sh.slept_on = (!waitv_ && !sh.words.empty()) ? sh.words.front().addr : nullptr;
      const timespec ts = notifier_impl::to_timespec(until);
      const timespec* deadline = until == kNever ? nullptr : &ts;
      lk.unlock();
      if (waitv_) {
        notifier_impl::futex_waitv(v.data(), static_cast<unsigned>(v.size()), deadline);
      } else {
        // One word, or the control word alone: FUTEX_WAIT_BITSET takes an absolute deadline.
        const notifier_impl::WaitV& one = v.size() > 1 ? v[1] : v[0];
        const int op = v.size() > 1 ? FUTEX_WAIT_BITSET : (FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG);
        ::syscall(SYS_futex, reinterpret_cast<void*>(one.uaddr), op, static_cast<std::uint32_t>(one.val),
                  deadline, nullptr, FUTEX_BITSET_MATCH_ANY);
      }
      lk.lock();
      sh.asleep = false;
      sh.slept_on = nullptr;
    }
  }

  /// The shard that keeps deadlines: the shard itself with futex_waitv, the timer thread in
  /// futex mode (started with the first watch). Called with m_ held.
  Shard& deadline_keeper(Shard& sh) {
    if (waitv_) return sh;
    ensure_timer();
    return *timer_;
  }

  /// Futex mode: starts the timer thread if it is not running. Called with m_ held.
  void ensure_timer() {
    if (timer_) return;
    auto fresh = std::make_unique<Shard>();
    Shard* t = fresh.get();
    std::thread([this, t] { run(*t); }).detach();  // first, as in pick_shard()
    timer_ = std::move(fresh);
  }

  const int pid_;
  const bool waitv_;
  mutable std::mutex m_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<Shard> timer_;  // futex mode only
  std::unordered_map<const void*, std::size_t> word_shard_;
  std::unordered_map<std::uint64_t, std::size_t> where_;
  std::uint64_t next_id_ = 0;
  std::size_t watches_ = 0;
};

}  // namespace xshm
