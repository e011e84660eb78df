// Futex waits an event loop polls, without a thread: io_uring's FUTEX_WAIT (Linux 6.7 or later).
// An event loop (asyncio through the Python binding) owns one FutexRing, polls its fd (readable
// while completions wait) and arms a wait per prepared sleep (sleep_ticket.hpp): the kernel
// compares the word with the ticket's value at once (a change since: the wait completes at
// once) and otherwise queues the wait on the futex, so a writer's FUTEX_WAKE completes it. The
// completion runs as task work of the thread that armed it, which wakes that thread out of its
// poll: the publish wakes the loop's own thread, one hop, as a pipe write does. Where io_uring
// or its futex operations are missing (kernels before 6.7, io_uring disabled by sysctl or by a
// seccomp filter, as container runtimes do), supported() says no and the notifier
// (notifier.hpp) serves instead.
#pragma once

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "errors.hpp"
#include "process.hpp"
#include "sleep_ticket.hpp"

namespace xshm {

namespace futex_ring_impl {

// io_uring's ABI, spelled out (the kernel's <linux/io_uring.h> of older build images, such as
// manylinux's, lacks the fields used here; the layout is the kernel's stable ABI).
struct SqOffsets {
  std::uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
  std::uint64_t user_addr;
};
struct CqOffsets {
  std::uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
  std::uint64_t user_addr;
};
struct Params {
  std::uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
  SqOffsets sq_off;
  CqOffsets cq_off;
};
struct Sqe {
  std::uint8_t opcode;
  std::uint8_t flags;
  std::uint16_t ioprio;
  std::int32_t fd;
  std::uint64_t off;  // addr2
  std::uint64_t addr;
  std::uint32_t len;
  std::uint32_t op_flags;
  std::uint64_t user_data;
  std::uint16_t buf_index;
  std::uint16_t personality;
  std::int32_t splice_fd_in;
  std::uint64_t addr3;
  std::uint64_t pad2;
};
struct Cqe {
  std::uint64_t user_data;
  std::int32_t res;
  std::uint32_t flags;
};
static_assert(sizeof(Params) == 120 && sizeof(Sqe) == 64 && sizeof(Cqe) == 16, "io_uring's ABI");

inline constexpr long kSysSetup = 425;  // io_uring_setup, io_uring_enter: the same number on
inline constexpr long kSysEnter = 426;  // every architecture (the unified syscall table)
inline constexpr std::uint32_t kSetupCqSize = 1u << 3;
inline constexpr std::uint32_t kFeatSingleMmap = 1u << 0;
inline constexpr std::uint32_t kFeatNoDrop = 1u << 1;
inline constexpr off_t kOffSqRing = 0;
inline constexpr off_t kOffSqes = 0x10000000;
inline constexpr std::uint32_t kEnterGetEvents = 1u << 0;
inline constexpr std::uint32_t kSqCqOverflow = 1u << 1;  // IORING_SQ_CQ_OVERFLOW in the SQ flags
inline constexpr std::uint8_t kOpAsyncCancel = 14;
inline constexpr std::uint8_t kOpFutexWait = 51;  // IORING_OP_FUTEX_WAIT (Linux 6.7)
inline constexpr std::uint32_t kFutex2SizeU32 = 0x02;
inline constexpr std::uint64_t kCancelTag = std::uint64_t{1} << 63;  // user_data of a cancel

inline int setup(unsigned entries, Params* p) noexcept {
  return static_cast<int>(::syscall(kSysSetup, entries, p));
}
inline int enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) noexcept {
  return static_cast<int>(::syscall(kSysEnter, fd, submit, min_complete, flags, nullptr, 0));
}

}  // namespace futex_ring_impl

class FutexRing {
 public:
  /// Room for this many armed waits between two drains; more are kept by the kernel (NODROP).
  static constexpr unsigned kEntries = 64;
  static constexpr unsigned kCompletions = 4096;

  /// Sets the ring up; throws Error when io_uring is not available (see supported()).
  FutexRing() {
    futex_ring_impl::Params p{};
    p.flags = futex_ring_impl::kSetupCqSize;
    p.cq_entries = kCompletions;
    fd_ = futex_ring_impl::setup(kEntries, &p);
    if (fd_ < 0) throw Error(std::string("io_uring_setup: ") + std::strerror(errno));
    if ((p.features & futex_ring_impl::kFeatSingleMmap) == 0 ||
        (p.features & futex_ring_impl::kFeatNoDrop) == 0) {
      ::close(fd_);
      throw Error("io_uring: this kernel lacks the single mapping or NODROP (older than 5.5)");
    }
    ring_bytes_ = std::max(p.sq_off.array + p.sq_entries * sizeof(std::uint32_t),
                           p.cq_off.cqes + p.cq_entries * sizeof(futex_ring_impl::Cqe));
    ring_ = ::mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                   futex_ring_impl::kOffSqRing);
    if (ring_ == MAP_FAILED) {
      const int e = errno;
      ::close(fd_);
      throw Error(std::string("io_uring mmap: ") + std::strerror(e));
    }
    sqes_bytes_ = p.sq_entries * sizeof(futex_ring_impl::Sqe);
    void* s = ::mmap(nullptr, sqes_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                     futex_ring_impl::kOffSqes);
    if (s == MAP_FAILED) {
      const int e = errno;
      ::munmap(ring_, ring_bytes_);
      ::close(fd_);
      throw Error(std::string("io_uring mmap: ") + std::strerror(e));
    }
    sqes_ = static_cast<futex_ring_impl::Sqe*>(s);
    auto* base = static_cast<unsigned char*>(ring_);
    sq_head_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.sq_off.head);
    sq_tail_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.sq_off.tail);
    sq_flags_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.sq_off.flags);
    sq_mask_ = *reinterpret_cast<std::uint32_t*>(base + p.sq_off.ring_mask);
    sq_array_ = reinterpret_cast<std::uint32_t*>(base + p.sq_off.array);
    cq_head_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.cq_off.head);
    cq_tail_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.cq_off.tail);
    cq_mask_ = *reinterpret_cast<std::uint32_t*>(base + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<futex_ring_impl::Cqe*>(base + p.cq_off.cqes);
  }
  ~FutexRing() {
    ::munmap(sqes_, sqes_bytes_);
    ::munmap(ring_, ring_bytes_);
    ::close(fd_);  // the kernel cancels the waits still armed
  }
  FutexRing(const FutexRing&) = delete;
  FutexRing& operator=(const FutexRing&) = delete;

  /// Whether io_uring futex waits work here (probed once per process; XSHM_IO_URING=0 in the
  /// environment says no, as the tests do to run the notifier too).
  static bool supported() {
    static const bool ok = [] {
      if (const char* e = std::getenv("XSHM_IO_URING"); e != nullptr && std::string(e) == "0") return false;
      try {
        FutexRing r;
        std::atomic<std::uint32_t> word{1};
        r.submit_wait(&word, 0, 7);  // the value differs: completes at once with -EAGAIN
        std::vector<std::uint64_t> keys;
        for (int i = 0; i < 100 && keys.empty(); ++i) {
          futex_ring_impl::enter(r.fd_, 0, 1, futex_ring_impl::kEnterGetEvents);
          r.reap_ring(keys, &r.probe_res_);
        }
        return keys.size() == 1 && keys[0] == 7 && r.probe_res_ == -EAGAIN;
      } catch (const Error&) {
        return false;
      }
    }();
    return ok;
  }

  /// The fd to poll: readable while completions wait.
  int fd() const noexcept { return fd_; }

  /// Arms a wait for `t` (armed): `key` completes once the word moves on from the ticket's
  /// value (at once if it already has). The ticket must stay alive (its count makes writers
  /// wake) until the key completes or cancel() is called. From the loop's thread: the
  /// completion is that thread's task work.
  void wait(const SleepTicket& t, std::uint64_t key) {
    if (!t.armed()) throw ArgumentError("wait: the ticket is not armed (nothing to wait for)");
    if ((key & futex_ring_impl::kCancelTag) != 0) throw ArgumentError("wait: keys are below 2**63");
    if (forked()) throw Error("this io_uring belongs to the parent process (made before fork())");
    std::lock_guard<std::mutex> g(m_);
    submit_wait(t.word(), t.expected(), key);
  }

  /// Withdraws the wait of `key`; its key then completes (a cancelled wait reports like a woken
  /// one: the waiter looks again). Any thread. Nothing in a forked child: the ring and its
  /// mapped queues are still the parent's, and a cancel would end the parent's wait.
  void cancel(std::uint64_t key) {
    if (forked()) return;
    std::lock_guard<std::mutex> g(m_);
    futex_ring_impl::Sqe* sqe = next_sqe();
    sqe->opcode = futex_ring_impl::kOpAsyncCancel;
    sqe->fd = -1;
    sqe->addr = key;
    sqe->user_data = key | futex_ring_impl::kCancelTag;
    submit();
  }

  /// The keys completed since the last drain (none in a forked child: they are the parent's).
  std::vector<std::uint64_t> drain() {
    std::vector<std::uint64_t> keys;
    if (forked()) return keys;
    std::lock_guard<std::mutex> g(m_);
    keys.swap(backlog_);
    reap_ring(keys, nullptr);
    // Completions the queue had no room for wait in the kernel (NODROP) until asked for.
    // SYNC POINT: acquire, paired with the kernel's setting of the flag.
    if ((sq_flags_->load(std::memory_order_acquire) & futex_ring_impl::kSqCqOverflow) != 0) {
      futex_ring_impl::enter(fd_, 0, 0, futex_ring_impl::kEnterGetEvents);
      reap_ring(keys, nullptr);
    }
    return keys;
  }

  /// True when a wait() or cancel() had to take completions off a full queue itself: the fd may
  /// not be readable for them, so the loop should drain() soon.
  bool backlog() {
    std::lock_guard<std::mutex> g(m_);
    return !backlog_.empty();
  }

 private:
  /// A child of fork() shares the ring and its queues with its parent: it only lets go of them.
  bool forked() const noexcept { return pid_ != detail::current_pid(); }

  futex_ring_impl::Sqe* next_sqe() noexcept {
    const std::uint32_t tail = sq_tail_->load(std::memory_order_relaxed);
    futex_ring_impl::Sqe* sqe = &sqes_[tail & sq_mask_];
    std::memset(sqe, 0, sizeof *sqe);
    sq_array_[tail & sq_mask_] = tail & sq_mask_;
    return sqe;
  }

  /// Publishes the one SQE next_sqe() filled and has the kernel take it now (the futex's value
  /// is compared before this returns). When completions back up, takes them off the queue into
  /// backlog_ (drain() hands them over) and tries again; on a failure the entry is withdrawn.
  void submit() {
    const std::uint32_t tail = sq_tail_->load(std::memory_order_relaxed);
    // SYNC POINT: release, paired with the kernel's acquire of the SQ tail: the SQE is written.
    sq_tail_->store(tail + 1, std::memory_order_release);
    for (int tries = 0;; ++tries) {
      const int n = futex_ring_impl::enter(fd_, 1, 0, 0);
      if (n >= 0) return;
      const int e = errno;
      if (e == EINTR) continue;
      if ((e == EAGAIN || e == EBUSY) && tries < 100) {
        reap_ring(backlog_, nullptr);
        futex_ring_impl::enter(fd_, 0, 0, futex_ring_impl::kEnterGetEvents);  // the overflow
        reap_ring(backlog_, nullptr);
        continue;
      }
      // SYNC POINT: acquire, paired with the kernel's release of the SQ head.
      if (sq_head_->load(std::memory_order_acquire) == tail) sq_tail_->store(tail, std::memory_order_release);
      throw Error(std::string("io_uring_enter: ") + std::strerror(e));
    }
  }

  void submit_wait(const std::atomic<std::uint32_t>* word, std::uint32_t val, std::uint64_t key) {
    futex_ring_impl::Sqe* sqe = next_sqe();
    sqe->opcode = futex_ring_impl::kOpFutexWait;
    sqe->fd = static_cast<std::int32_t>(futex_ring_impl::kFutex2SizeU32);  // shared, 32-bit
    sqe->addr = reinterpret_cast<std::uintptr_t>(word);
    sqe->off = val;  // addr2: the value
    sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
    sqe->user_data = key;
    submit();
  }

  /// Appends the keys of the completions in the queue (a cancel's own result skipped).
  void reap_ring(std::vector<std::uint64_t>& keys, int* res) {
    // SYNC POINT: acquire, paired with the kernel's release of the CQ tail.
    const std::uint32_t tail = cq_tail_->load(std::memory_order_acquire);
    std::uint32_t head = cq_head_->load(std::memory_order_relaxed);
    for (; head != tail; ++head) {
      const futex_ring_impl::Cqe& c = cqes_[head & cq_mask_];
      if ((c.user_data & futex_ring_impl::kCancelTag) != 0) continue;  // a cancel's own result
      keys.push_back(c.user_data);
      if (res != nullptr) *res = c.res;
    }
    // SYNC POINT: release, paired with the kernel's acquire of the CQ head (the slots are free).
    cq_head_->store(head, std::memory_order_release);
  }

  int fd_ = -1;
  void* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  futex_ring_impl::Sqe* sqes_ = nullptr;
  std::size_t sqes_bytes_ = 0;
  std::atomic<std::uint32_t>* sq_head_ = nullptr;
  std::atomic<std::uint32_t>* sq_tail_ = nullptr;
  std::atomic<std::uint32_t>* sq_flags_ = nullptr;
  std::uint32_t sq_mask_ = 0;
  std::uint32_t* sq_array_ = nullptr;
  std::atomic<std::uint32_t>* cq_head_ = nullptr;
  std::atomic<std::uint32_t>* cq_tail_ = nullptr;
  std::uint32_t cq_mask_ = 0;
  futex_ring_impl::Cqe* cqes_ = nullptr;
  std::mutex m_;
  std::vector<std::uint64_t> backlog_;  // taken off the queue by submit() when it backed up
  int probe_res_ = 0;
  int pid_ = detail::current_pid();
};

}  // namespace xshm
