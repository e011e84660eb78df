// C++ -> C++ one-way latency of an 8-byte message through an xshm stream, against a minimal
// hand-written single-producer single-consumer ring in POSIX shared memory doing the same work
// per message (a sequence number, a CLOCK_REALTIME timestamp, the payload, a release store of
// the producer index, and a notify that wakes the consumer only if it flagged that it sleeps).
// Both are a ping-pong between two processes over two channels, the receiver spinning; one-way
// latency = round trip / 2. Prints one JSON line per round (report.hpp).
//
//   stream_pingpong stream ROUNDS N WARMUP   xshm: Stream::send; spinning StreamReader::recv_into
//   stream_pingpong spsc ROUNDS N WARMUP     the hand-written ring: push; spinning pop
//   stream_pingpong check N                  the ring's self-check: N messages in each of three
//                                            phases (consumer spinning; consumer sleeping on
//                                            every empty ring; producer meeting a full ring),
//                                            order and contents verified; exit 1 on a failure
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "report.hpp"
#include "xshm/xshm.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kSpin = std::chrono::milliseconds(100);  // spin budget per receive: never sleeps
constexpr auto kTimeout = std::chrono::seconds(30);     // a receive that waits longer: an error
constexpr std::uint64_t kCapacity = 64;                 // both: as the Python stream hop's streams
constexpr std::uint64_t kMix = 0x9E3779B97F4A7C15ull;   // payload of message k: k * kMix

std::int64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Removes shared-memory names when the program leaves, however it leaves (but _Exit).
struct Unlink {
  std::vector<std::string> names;
  ~Unlink() {
    for (const std::string& n : names) ::shm_unlink(n.c_str());
  }
};

/// Waits for the echo child; throws if it failed.
void reap(pid_t child) {
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("the echo process failed");
}

/// `rounds` rounds of `warmup + n` hops, the first `warmup` of each dropped: hop(k) sends k and
/// returns the value echoed back, which must be k. One JSON line per round.
template <class Hop>
void measure(const char* name, int rounds, int n, int warmup, Hop&& hop) {
  std::uint64_t k = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::int64_t> one_way;
    one_way.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < warmup + n; ++i) {
      ++k;
      const auto t0 = Clock::now();
      const std::uint64_t back = hop(k * kMix);
      const auto t1 = Clock::now();
      if (back != k * kMix) throw std::runtime_error("the echo sent back another message");
      if (i >= warmup) one_way.push_back((t1 - t0).count() / 2);
    }
    bench::report(name, r, one_way);
  }
}

// ---- xshm streams ----

/// One end of the ping-pong: sends on one stream, receives on the other (spinning recv_into).
struct StreamEnd {
  xshm::Stream out;
  xshm::StreamReader in;

  std::uint64_t recv() {
    std::uint64_t v = 0;
    if (!in.recv_into(&v, sizeof v, kTimeout, kSpin)) throw std::runtime_error("no message within 30 s");
    return v;
  }
  void send(std::uint64_t v) { out.send(&v, sizeof v, kTimeout); }
};

void stream_pingpong(int rounds, int n, int warmup) {
  const std::string base = "/xshm-bench-spp-" + std::to_string(::getpid());
  Unlink names{{base + "-ping", base + "-pong"}};
  xshm::StreamOptions opt;  // "block", as the streams question's Python rows
  opt.capacity = kCapacity;
  opt.max_bytes = sizeof(std::uint64_t);
  StreamEnd me{xshm::Stream::create(base + "-ping", opt), {}};
  xshm::Stream pong = xshm::Stream::create(base + "-pong", opt);
  me.in = pong.reader(xshm::Start::oldest);
  const long total = static_cast<long>(rounds) * (n + warmup);
  const pid_t child = ::fork();
  if (child == 0) {
    int rc = 0;
    try {
      xshm::StreamOpenOptions o;
      o.timeout = std::chrono::seconds(10);
      xshm::Stream ping = xshm::Stream::open(base + "-ping", o);
      StreamEnd echo{xshm::Stream::open(base + "-pong", o), ping.reader(xshm::Start::oldest)};
      for (long i = 0; i < total; ++i) echo.send(echo.recv());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "stream_pingpong echo: %s\n", e.what());
      rc = 1;
    }
    std::_Exit(rc);
  }
  try {
    measure("cpp-xshm-stream-spin", rounds, n, warmup, [&](std::uint64_t v) {
      me.send(v);
      return me.recv();
    });
  } catch (...) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    throw;
  }
  reap(child);
}

// ---- the hand-written SPSC ring ----
// rigtorp/SPSCQueue's shape: the producer index and the consumer index on their own cache
// lines, each side keeping a private copy of the other's index and reading the shared one only
// when its copy says full (producer) or empty (consumer). Indices are 32-bit (the futex word)
// and wrap; the capacity is a power of two. The producer spins while the ring is full.

struct Slot {
  std::uint64_t seq;          // the message's sequence number
  std::int64_t timestamp_ns;  // CLOCK_REALTIME when it was pushed
  std::uint32_t size;         // payload bytes
  std::uint32_t pad;
  unsigned char payload[8];
};

struct Ring {
  alignas(64) std::atomic<std::uint32_t> tail{0};     // messages pushed; the producer's; the futex word
  alignas(64) std::atomic<std::uint32_t> head{0};     // messages popped; the consumer's
  alignas(64) std::atomic<std::uint32_t> waiters{0};  // 1 while the consumer sleeps or is about to
  alignas(64) Slot slots[kCapacity];
};
static_assert((kCapacity & (kCapacity - 1)) == 0,
              "The ring's capacity is a power of two, so indices may wrap.");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "A futex word is a lock-free 32-bit atomic.");

long futex(std::atomic<std::uint32_t>* w, int op, std::uint32_t val, const timespec* t) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), op, val, t, nullptr, 0);
}

class Producer {
 public:
  explicit Producer(Ring* r) : r_(r) {}

  void push(const void* data, std::uint32_t size) {
    while (tail_ - head_cache_ == kCapacity) {
      // SYNC POINT: acquire, pairs with the consumer's release store of head: the slot it
      // frees has been read.
      head_cache_ = r_->head.load(std::memory_order_acquire);
      if (tail_ - head_cache_ == kCapacity) {
        ++full_waits;
        xshm::cpu::relax();
      }
    }
    Slot& s = r_->slots[tail_ % kCapacity];
    s.seq = seq_++;
    s.timestamp_ns = realtime_ns();
    s.size = size;
    std::memcpy(s.payload, data, size);
    // SYNC POINT: release, pairs with the consumer's acquire load of tail: the slot is written.
    r_->tail.store(++tail_, std::memory_order_release);
    // SYNC POINT: pairs with the consumer's fence after it raises `waiters`: either this load
    // sees the consumer's flag, or the consumer's next look sees the new tail.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (r_->waiters.load(std::memory_order_relaxed) != 0) futex(&r_->tail, FUTEX_WAKE, INT_MAX, nullptr);
  }

  long full_waits = 0;  // looks that found the ring full

 private:
  Ring* r_;
  std::uint32_t tail_ = 0;
  std::uint32_t head_cache_ = 0;
  std::uint64_t seq_ = 0;
};

struct Popped {
  std::uint64_t seq;
  std::int64_t timestamp_ns;
  std::uint32_t size;
};

class Consumer {
 public:
  explicit Consumer(Ring* r) : r_(r) {}

  /// Copies the next message into `out` (8 bytes); polls for up to `spin`, then sleeps.
  Popped pop(void* out, std::chrono::nanoseconds spin) {
    if (head_ == tail_cache_ && !poll(spin)) sleep();
    const Slot& s = r_->slots[head_ % kCapacity];
    const Popped p{s.seq, s.timestamp_ns, s.size};
    if (p.size > sizeof s.payload) throw std::runtime_error("a slot claims more than 8 bytes");
    std::memcpy(out, s.payload, p.size);
    // SYNC POINT: release, pairs with the producer's acquire load of head: the slot is read.
    r_->head.store(++head_, std::memory_order_release);
    return p;
  }

  long sleeps = 0;      // times the consumer slept
  long late_wakes = 0;  // sleeps that timed out with a message there: a lost wake-up

 private:
  bool poll(std::chrono::nanoseconds spin) {
    const auto end = Clock::now() + spin;
    for (unsigned i = 0;; ++i) {
      // SYNC POINT: acquire, pairs with the producer's release store of tail.
      tail_cache_ = r_->tail.load(std::memory_order_acquire);
      if (tail_cache_ != head_) return true;
      if ((i & 63) == 63 && Clock::now() >= end) return false;
      xshm::cpu::relax();
    }
  }

  void sleep() {
    ++sleeps;
    r_->waiters.store(1, std::memory_order_relaxed);
    // SYNC POINT: pairs with the producer's fence after its tail store (see push).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    int slices = 0;
    while ((tail_cache_ = r_->tail.load(std::memory_order_acquire)) == head_) {
      const timespec slice{1, 0};
      if (futex(&r_->tail, FUTEX_WAIT, head_, &slice) != 0 && errno == ETIMEDOUT) {
        if (r_->tail.load(std::memory_order_acquire) != head_) ++late_wakes;
        if (++slices == static_cast<int>(kTimeout.count())) {
          r_->waiters.store(0, std::memory_order_relaxed);
          throw std::runtime_error("no message within 30 s");
        }
      }
    }
    r_->waiters.store(0, std::memory_order_relaxed);
  }

  Ring* r_;
  std::uint32_t head_ = 0;
  std::uint32_t tail_cache_ = 0;
};

/// Two rings (ping, pong) in one POSIX shared-memory segment, created by the caller or opened.
Ring* map_rings(const std::string& name, bool create) {
  const int fd = ::shm_open(name.c_str(), create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error("shm_open(" + name + "): " + std::strerror(errno));
  if (create && ::ftruncate(fd, 2 * sizeof(Ring)) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("ftruncate: ") + std::strerror(errno));
  }
  void* p = ::mmap(nullptr, 2 * sizeof(Ring), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw std::runtime_error(std::string("mmap: ") + std::strerror(errno));
  return create ? new (p) Ring[2] : static_cast<Ring*>(p);
}

void spsc_pingpong(int rounds, int n, int warmup) {
  const std::string name = "/xshm-bench-spsc-" + std::to_string(::getpid());
  Unlink names{{name}};
  Ring* rings = map_rings(name, true);
  const long total = static_cast<long>(rounds) * (n + warmup);
  const pid_t child = ::fork();
  if (child == 0) {
    int rc = 0;
    try {
      Ring* mine = map_rings(name, false);
      Consumer in(&mine[0]);
      Producer out(&mine[1]);
      std::uint64_t v = 0;
      for (long i = 0; i < total; ++i) {
        out.push(&v, in.pop(&v, kSpin).size);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "stream_pingpong echo: %s\n", e.what());
      rc = 1;
    }
    std::_Exit(rc);
  }
  Producer out(&rings[0]);
  Consumer in(&rings[1]);
  try {
    measure("cpp-spsc-ring-spin", rounds, n, warmup, [&](std::uint64_t v) {
      out.push(&v, sizeof v);
      std::uint64_t back = 0;
      in.pop(&back, kSpin);
      return back;
    });
  } catch (...) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    throw;
  }
  reap(child);
}

/// Busy-waits about `ns` (a pause that makes the other side wait; not a synchronization).
void pause_ns(std::int64_t ns) {
  const auto end = Clock::now() + std::chrono::nanoseconds(ns);
  while (Clock::now() < end) xshm::cpu::relax();
}

/// The ring's self-check: a producer process pushes `n` messages, the consumer checks each one's
/// sequence, size, payload and timestamp. Phases: "spin" (both flat out), "sleep" (the consumer
/// never spins, so it sleeps on every empty ring, and the producer pauses every 16 messages),
/// "full" (the consumer pauses every 16 messages, so the producer meets a full ring).
int check(long n) {
  ::alarm(120);  // a watchdog: a lost wake-up must fail the check, not hang it
  const std::string name = "/xshm-bench-spsc-check-" + std::to_string(::getpid());
  Unlink names{{name}};
  Ring* rings = map_rings(name, true);
  int failures = 0;
  const char* phases[] = {"spin", "sleep", "full"};
  for (int phase = 0; phase < 3; ++phase) {
    new (rings) Ring[2];
    const pid_t child = ::fork();
    if (child == 0) {
      Producer out(&map_rings(name, false)[0]);
      for (long k = 0; k < n; ++k) {
        const std::uint64_t v = static_cast<std::uint64_t>(k) * kMix;
        out.push(&v, sizeof v);
        if (phase == 1 && k % 16 == 15) pause_ns(20'000);
      }
      std::_Exit(phase == 2 && out.full_waits == 0 ? 3 : 0);  // "full" must have met a full ring
    }
    Consumer in(&rings[0]);
    const std::int64_t t0 = realtime_ns();
    long wrong = 0;
    for (long k = 0; k < n; ++k) {
      std::uint64_t v = 0;
      const Popped p = in.pop(&v, phase == 1 ? std::chrono::nanoseconds{0} : kSpin);
      const std::uint64_t want = static_cast<std::uint64_t>(k);
      if (p.seq != want || p.size != sizeof v || v != want * kMix || p.timestamp_ns < t0 - 1'000'000'000)
        ++wrong;
      if (phase == 2 && k % 16 == 15) pause_ns(20'000);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    const bool ok = wrong == 0 && in.late_wakes == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                    (phase != 1 || in.sleeps > 0);
    failures += !ok;
    std::printf(
        "{\"case\": \"check %s\", \"messages\": %ld, \"wrong\": %ld, \"sleeps\": %ld, \"late_wakes\": %ld, "
        "\"ok\": %s}\n",
        phases[phase], n, wrong, in.sleeps, in.late_wakes, ok ? "true" : "false");
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if ((mode == "stream" || mode == "spsc") && argc == 5) {
      const int rounds = std::atoi(argv[2]), n = std::atoi(argv[3]), warmup = std::atoi(argv[4]);
      if (rounds < 1 || n < 1 || warmup < 0) return 2;
      (mode == "stream" ? stream_pingpong : spsc_pingpong)(rounds, n, warmup);
      return 0;
    }
    if (mode == "check" && argc == 3) return check(std::atol(argv[2]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stream_pingpong: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: stream_pingpong stream|spsc ROUNDS N WARMUP | check N\n");
  return 2;
}
