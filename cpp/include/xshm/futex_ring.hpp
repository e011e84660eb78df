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
#include <linux/io_uring.h>
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
#include "sleep_ticket.hpp"

namespace xshm {

namespace futex_ring_impl {

inline constexpr std::uint8_t kOpFutexWait = 51;  // IORING_OP_FUTEX_WAIT (Linux 6.7)
inline constexpr std::uint32_t kFutex2SizeU32 = 0x02;
inline constexpr std::uint64_t kCancelTag = std::uint64_t{1} << 63;  // user_data of a cancel

inline int setup(unsigned entries, io_uring_params* p) noexcept {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, p));
}
inline int enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) noexcept {
  return static_cast<int>(::syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, nullptr, 0));
}

}  // namespace futex_ring_impl

class FutexRing {
 public:
  /// Room for this many armed waits between two drains; more are kept by the kernel (NODROP).
  static constexpr unsigned kEntries = 64;
  static constexpr unsigned kCompletions = 4096;

  /// Sets the ring up; throws Error when io_uring is not available (see supported()).
  FutexRing() {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = kCompletions;
    fd_ = futex_ring_impl::setup(kEntries, &p);
    if (fd_ < 0) throw Error(std::string("io_uring_setup: ") + std::strerror(errno));
    if ((p.features & IORING_FEAT_SINGLE_MMAP) == 0 || (p.features & IORING_FEAT_NODROP) == 0) {
      ::close(fd_);
      throw Error("io_uring: this kernel lacks the single mapping or NODROP (older than 5.5)");
    }
    ring_bytes_ = std::max(p.sq_off.array + p.sq_entries * sizeof(std::uint32_t),
                           p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe));
    ring_ = ::mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                   IORING_OFF_SQ_RING);
    if (ring_ == MAP_FAILED) {
      const int e = errno;
      ::close(fd_);
      throw Error(std::string("io_uring mmap: ") + std::strerror(e));
    }
    sqes_bytes_ = p.sq_entries * sizeof(io_uring_sqe);
    void* s =
        ::mmap(nullptr, sqes_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
    if (s == MAP_FAILED) {
      const int e = errno;
      ::munmap(ring_, ring_bytes_);
      ::close(fd_);
      throw Error(std::string("io_uring mmap: ") + std::strerror(e));
    }
    sqes_ = static_cast<io_uring_sqe*>(s);
    auto* base = static_cast<unsigned char*>(ring_);
    sq_tail_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.sq_off.tail);
    sq_mask_ = *reinterpret_cast<std::uint32_t*>(base + p.sq_off.ring_mask);
    sq_array_ = reinterpret_cast<std::uint32_t*>(base + p.sq_off.array);
    cq_head_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.cq_off.head);
    cq_tail_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + p.cq_off.tail);
    cq_mask_ = *reinterpret_cast<std::uint32_t*>(base + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(base + p.cq_off.cqes);
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
          futex_ring_impl::enter(r.fd_, 0, 1, IORING_ENTER_GETEVENTS);
          r.reap(keys, &r.probe_res_);
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
    std::lock_guard<std::mutex> g(m_);
    submit_wait(t.word(), t.expected(), key);
  }

  /// Withdraws the wait of `key`; its key then completes (a cancelled wait reports like a woken
  /// one: the waiter looks again). Any thread.
  void cancel(std::uint64_t key) {
    std::lock_guard<std::mutex> g(m_);
    io_uring_sqe* sqe = next_sqe();
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = key;
    sqe->user_data = key | futex_ring_impl::kCancelTag;
    submit();
  }

  /// The keys completed since the last drain.
  std::vector<std::uint64_t> drain() {
    std::vector<std::uint64_t> keys;
    std::lock_guard<std::mutex> g(m_);
    reap(keys, nullptr);
    return keys;
  }

 private:
  io_uring_sqe* next_sqe() noexcept {
    const std::uint32_t tail = sq_tail_->load(std::memory_order_relaxed);
    io_uring_sqe* sqe = &sqes_[tail & sq_mask_];
    std::memset(sqe, 0, sizeof *sqe);
    sq_array_[tail & sq_mask_] = tail & sq_mask_;
    return sqe;
  }

  /// Publishes the one SQE next_sqe() filled and has the kernel take it now (the futex's value
  /// is compared before this returns).
  void submit() {
    // SYNC POINT: release, paired with the kernel's acquire of the SQ tail: the SQE is written.
    sq_tail_->store(sq_tail_->load(std::memory_order_relaxed) + 1, std::memory_order_release);
    for (;;) {
      const int n = futex_ring_impl::enter(fd_, 1, 0, 0);
      if (n >= 0) return;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EBUSY) {  // completions backed up: reap, then retry
        reaped_.clear();
        reap(reaped_, nullptr);
        continue;
      }
      throw Error(std::string("io_uring_enter: ") + std::strerror(errno));
    }
  }

  void submit_wait(const std::atomic<std::uint32_t>* word, std::uint32_t val, std::uint64_t key) {
    io_uring_sqe* sqe = next_sqe();
    sqe->opcode = futex_ring_impl::kOpFutexWait;
    sqe->fd = static_cast<std::int32_t>(futex_ring_impl::kFutex2SizeU32);  // shared, 32-bit
    sqe->addr = reinterpret_cast<std::uintptr_t>(word);
    sqe->off = val;  // addr2: the value
    sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
    sqe->user_data = key;
    submit();
  }

  void reap(std::vector<std::uint64_t>& keys, int* res) {
    keys.insert(keys.end(), reaped_.begin(), reaped_.end());
    reaped_.clear();
    // SYNC POINT: acquire, paired with the kernel's release of the CQ tail.
    const std::uint32_t tail = cq_tail_->load(std::memory_order_acquire);
    std::uint32_t head = cq_head_->load(std::memory_order_relaxed);
    for (; head != tail; ++head) {
      const io_uring_cqe& c = cqes_[head & cq_mask_];
      if ((c.user_data & futex_ring_impl::kCancelTag) != 0) continue;  // a cancel's own result
      keys.push_back(c.user_data);
      if (res != nullptr) *res = c.res;
    }
    cq_head_->store(head, std::memory_order_release);
  }

  int fd_ = -1;
  void* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  std::size_t sqes_bytes_ = 0;
  std::atomic<std::uint32_t>* sq_tail_ = nullptr;
  std::uint32_t sq_mask_ = 0;
  std::uint32_t* sq_array_ = nullptr;
  std::atomic<std::uint32_t>* cq_head_ = nullptr;
  std::atomic<std::uint32_t>* cq_tail_ = nullptr;
  std::uint32_t cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  std::mutex m_;
  std::vector<std::uint64_t> reaped_;  // reaped by submit() when the CQ backed up
  int probe_res_ = 0;
};

}  // namespace xshm
