// Cross-process ping-pong latency in C++: the physical floors (a busy-spun atomic and a raw
// futex wait/wake over shared memory) and xshm itself (publish + wait + consistent read per
// hop), plus an xshm echo server for the C++<->Python rows. One-way latency = round trip / 2.
// Prints one JSON object per round: {"case", "round", "n", "p50_ns", "p99_ns", "p999_ns"}.
//
//   pingpong atomic ROUNDS N          raw floor: busy-spin on one shared atomic (one cache line)
//   pingpong futex ROUNDS N           raw floor: futex wait/wake on one shared word
//   pingpong xshm spin|block ROUNDS N xshm C++ -> C++ (the default record)
//   pingpong xshm-small spin ROUNDS N xshm C++ -> C++ with a one-value record, no message
//   pingpong xshm-peer spin ROUNDS N ECHO   xshm C++ -> another program's echo (`ECHO echo PING
//                                     PONG spin T`: the Rust crate's, for the mixed rows)
//   pingpong echo PING PONG spin|block N   echo for a Python or Rust initiator
//   pingpong read ROUNDS N            N consistent reads (read_into: values and message) of the
//                                     default record per round: {"case", "round", "n", "ns_per_read"}
//   pingpong ladder 1|100 PASSES N    the profile of a spinning hop: xshm's publish composed of
//                                     its real steps (writer.hpp) on a real segment, one step
//                                     added per rung (no PMU on the benchmark VM, so cost by
//                                     construction)
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "report.hpp"
#include "xshm/xshm.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kSpin = std::chrono::milliseconds(100);  // spin budget per wait in spin mode

using bench::report;

struct alignas(64) Line {
  std::atomic<std::uint32_t> v{0};
};

void futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t val) {
  ::syscall(SYS_futex, w, FUTEX_WAIT, val, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<std::uint32_t>* w) {
  ::syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Raw floors: ping and pong words on separate cache lines of an anonymous shared mapping.
void raw_floor(bool futex, int rounds, int n) {
  auto* lines = static_cast<Line*>(
      ::mmap(nullptr, 2 * sizeof(Line), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (lines) Line[2];
  const long total = static_cast<long>(rounds) * (n + 100);
  pid_t child = ::fork();
  if (child == 0) {
    for (long i = 1; i <= total; ++i) {
      const auto want = static_cast<std::uint32_t>(i);
      if (futex) {
        while (lines[0].v.load(std::memory_order_acquire) != want) futex_wait(&lines[0].v, want - 1);
        lines[1].v.store(want, std::memory_order_release);
        futex_wake(&lines[1].v);
      } else {
        while (lines[0].v.load(std::memory_order_acquire) != want) xshm::cpu::relax();
        lines[1].v.store(want, std::memory_order_release);
      }
    }
    std::_Exit(0);
  }
  std::uint32_t i = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::int64_t> one_way;
    for (int k = 0; k < n + 100; ++k) {
      ++i;
      const auto t0 = Clock::now();
      lines[0].v.store(i, std::memory_order_release);
      if (futex) {
        futex_wake(&lines[0].v);
        while (lines[1].v.load(std::memory_order_acquire) != i) futex_wait(&lines[1].v, i - 1);
      } else {
        while (lines[1].v.load(std::memory_order_acquire) != i) xshm::cpu::relax();
      }
      if (k >= 100) one_way.push_back((Clock::now() - t0).count() / 2);  // first 100: warm-up
    }
    report(futex ? "cpp-futex-floor" : "cpp-atomic-floor", r, one_way);
  }
  ::waitpid(child, nullptr, 0);
}

/// One hop of xshm: wait for the peer's publish, take a consistent snapshot.
std::uint64_t hop_in(xshm::SharedMemoryManager& in, std::uint64_t seq, bool spin, std::vector<double>& buf) {
  seq = in.wait(
      seq, std::nullopt,
      spin ? std::chrono::duration_cast<std::chrono::nanoseconds>(kSpin) : std::chrono::nanoseconds{0});
  in.read_into(buf.data(), buf.size() * sizeof(double));
  return seq;
}

void xshm_echo(const std::string& ping, const std::string& pong, bool spin, long total) {
  xshm::OpenOptions o;
  o.timeout = std::chrono::seconds(30);
  auto in = xshm::SharedMemoryManager::open(ping, o);
  auto out = xshm::SharedMemoryManager::open(pong, o);
  std::vector<double> buf(in.geometry().count());
  std::uint64_t seq = 0;  // the segments are fresh: the initiator's first ping is seq 1
  for (long i = 0; i < total; ++i) {
    seq = hop_in(in, seq, spin, buf);
    out.publish(buf.data(), buf.size() * sizeof(double), std::nullopt, static_cast<std::uint64_t>(i));
  }
}

/// `echo` empty: the echo is this program, forked; else the program `echo` runs it (exec).
void xshm_pingpong(bool spin, bool small, int rounds, int n, const char* echo = nullptr) {
  const std::string base = "/xshm-bench-pp-" + std::to_string(::getpid());
  xshm::CreateOptions opt;  // default: the seed's record, 100 float64 + a 256-byte message
  if (small) {              // one float64, no message: the protocol's own cost, not the data's
    opt.shape = {1};
    opt.message_capacity = 0;
  }
  auto ping = xshm::SharedMemoryManager::create(base + "-ping", opt);
  auto pong = xshm::SharedMemoryManager::create(base + "-pong", opt);
  const long total = static_cast<long>(rounds) * (n + 100);
  pid_t child = ::fork();
  if (child == 0) {
    if (echo != nullptr) {
      const std::string t = std::to_string(total), a = base + "-ping", b = base + "-pong";
      ::execl(echo, echo, "echo", a.c_str(), b.c_str(), "spin", t.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    xshm_echo(base + "-ping", base + "-pong", spin, total);
    std::_Exit(0);
  }
  std::vector<double> buf(ping.geometry().count(), 1.0);
  std::uint64_t seq = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::int64_t> one_way;
    for (int k = 0; k < n + 100; ++k) {
      const auto t0 = Clock::now();
      ping.publish(buf.data(), buf.size() * sizeof(double), std::nullopt, static_cast<std::uint64_t>(k));
      seq = hop_in(pong, seq, spin, buf);
      if (k >= 100) one_way.push_back((Clock::now() - t0).count() / 2);
    }
    report(echo != nullptr ? "cpp-rust-xshm-spin"
           : small         ? "cpp-xshm-spin-1-value"
           : spin          ? "cpp-xshm-spin"
                           : "cpp-xshm-block",
           r, one_way);
  }
  ::waitpid(child, nullptr, 0);
  ping.unlink();
  pong.unlink();
}

// ---- the ladder: where the time of one spinning hop goes ----
// Each rung is a ping-pong over two real xshm segments, driven by the real steps of a publish
// (writer.hpp: WriterLock, next_meta, write_live, publish_seq, notify, refresh_backup,
// prefetch_live) switched on one rung at a time. The reader side is the same on every rung
// below the last: poll the header seq, then the real consistent read (reader::read_raw). The
// last rungs are the API as shipped; the real cpp-xshm rows should land on them, and the
// differences between rungs are what each step costs on the path.
enum Rung : int {
  kOneLine = 0,  // reference: a one-line seqlock record polled in place (no header, no slot)
  kLines,        // header seq + live slot (meta line + values): the lines a hop moves
  kMutex,        // + the robust writer mutex and owner_pid
  kClock,        // + the CLOCK_REALTIME timestamp
  kNotify,       // + the futex epoch bump and waiters check
  kBackup,       // + the backup slot refresh
  kPrefetch,     // + prefetching the slot (for writing) and the header line before the mutex
  kApiPublish,   // the real publish() (argument checks, the torn check, the meta it keeps)
  kApiRead,      // + the real wait(spin) and read_into(): the cpp-xshm rows
  kRungs
};
constexpr const char* kRungNames[kRungs] = {
    "one-line seqlock", "+ header and slot lines", "+ robust mutex",
    "+ timestamp",      "+ futex notify",          "+ backup slot",
    "+ prefetch",       "+ publish() API",         "+ wait() and read_into() API"};

void ladder_publish(xshm::SharedMemoryManager& m, int rung, const double* src, std::uint64_t n) {
  namespace sl = xshm::seqlock;
  namespace wr = xshm::writer;
  const xshm::detail::Segment& s = m.segment();
  const std::size_t bytes = s.geo.values_size;
  if (rung >= kApiPublish) {
    m.publish(src, bytes, std::nullopt, n);
    return;
  }
  if (rung == kOneLine) {  // lock, seq and the value share the slot's first line
    xshm::RecordMeta* live = s.meta(0);
    const std::uint64_t odd = sl::begin_slot_write(live->lock);
    sl::store_bytes(&live->seq, &n, 8);
    sl::store_bytes(&live->counter, src, 8);
    sl::end_slot_write(live->lock, odd);
    return;
  }
  if (rung >= kPrefetch) wr::prefetch_live(s, true, 0);
  std::optional<xshm::WriterLock> held;
  if (rung >= kMutex) held = xshm::WriterLock::acquire(s);
  xshm::detail::MetaImage img{n, n, 0, 1, 0};
  if (rung >= kClock) img = wr::next_meta(s, n, nullptr);
  wr::write_live(s, img, src, nullptr);
  wr::publish_seq(s, img.seq);
  if (rung >= kNotify) wr::notify(s);
  if (rung >= kBackup) wr::refresh_backup(s, true, 0);
}

void ladder_read(const xshm::SharedMemoryManager& m, int rung, double* dst, std::uint64_t n) {
  const xshm::detail::Segment& s = m.segment();
  if (rung >= kApiRead) {
    m.wait(n - 1, std::nullopt, std::chrono::duration_cast<std::chrono::nanoseconds>(kSpin));
    m.read_into(dst, s.geo.values_size);
    return;
  }
  if (rung == kOneLine) {
    const xshm::RecordMeta* live = s.meta(0);
    for (;;) {
      std::uint64_t seq = 0;
      const bool ok = xshm::seqlock::try_read(live->lock, [&] {
        xshm::seqlock::load_bytes(&seq, &live->seq, 8);
        xshm::seqlock::load_bytes(dst, &live->counter, 8);
      });
      if (ok && seq >= n) return;
      xshm::cpu::relax();
    }
  }
  while (s.header()->seq.load(std::memory_order_acquire) < n) xshm::cpu::relax();
  xshm::reader::read_raw(s, dst, nullptr, nullptr);
}

/// `passes` times over all rungs, n hops per rung and pass: the rungs of one pass run
/// seconds apart at most, so a change in the VM's state hits them alike; a row per pass.
void ladder(std::uint64_t count, int passes, int n) {
  const std::string base = "/xshm-bench-ladder-" + std::to_string(::getpid());
  xshm::CreateOptions opt;
  opt.shape = {count};
  opt.message_capacity = 0;
  for (int pass = 0; pass < passes; ++pass) {
    for (int rung = 0; rung < kRungs; ++rung) {
      auto ping = xshm::SharedMemoryManager::create(base + "-ping", opt);
      auto pong = xshm::SharedMemoryManager::create(base + "-pong", opt);
      const long total = n + 100;
      std::vector<double> buf(count, 1.0);
      pid_t child = ::fork();
      if (child == 0) {
        std::vector<double> echo(count);
        for (long i = 1; i <= total; ++i) {
          ladder_read(ping, rung, echo.data(), static_cast<std::uint64_t>(i));
          ladder_publish(pong, rung, echo.data(), static_cast<std::uint64_t>(i));
        }
        std::_Exit(0);
      }
      std::vector<std::int64_t> one_way;
      for (long i = 1; i <= total; ++i) {
        const auto t0 = Clock::now();
        ladder_publish(ping, rung, buf.data(), static_cast<std::uint64_t>(i));
        ladder_read(pong, rung, buf.data(), static_cast<std::uint64_t>(i));
        if (i > 100) one_way.push_back((Clock::now() - t0).count() / 2);
      }
      ::waitpid(child, nullptr, 0);
      ping.unlink();
      pong.unlink();
      const std::string name =
          "cpp-ladder-" + std::to_string(count) + "-" + std::to_string(rung) + " " + kRungNames[rung];
      report(name.c_str(), pass, one_way);
    }
  }
}

/// The consistent read of the default record (100 float64 and its message), in a loop: the C++
/// row of the Rust crate's read benchmark (rust/xshm/examples/bench.rs does the same).
void read_loop(int rounds, int n) {
  const std::string name = "/xshm-bench-read-" + std::to_string(::getpid());
  auto m = xshm::SharedMemoryManager::create(name, xshm::CreateOptions{});
  std::vector<double> values(100);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i);
  m.publish(values, "a message of the default record", 1);
  std::vector<double> buf(100);
  std::string message;
  std::uint64_t sink = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      const xshm::RecordInfo info = m.read_into(buf.data(), buf.size() * sizeof(double), &message);
      sink += info.counter + static_cast<std::uint64_t>(buf[1]) + message.size();
    }
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / n;
    std::printf("{\"case\": \"cpp-read\", \"round\": %d, \"n\": %d, \"ns_per_read\": %.2f, \"sink\": %llu}\n",
                r, n, ns, static_cast<unsigned long long>(sink % 10));
    std::fflush(stdout);
  }
  m.unlink();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string mode = argv[1];
  try {
    if (mode == "atomic" || mode == "futex") {
      raw_floor(mode == "futex", std::atoi(argv[2]), std::atoi(argv[3]));
    } else if (mode == "xshm" || mode == "xshm-small") {
      xshm_pingpong(std::string(argv[2]) == "spin", mode == "xshm-small", std::atoi(argv[3]),
                    std::atoi(argv[4]));
    } else if (mode == "ladder") {
      ladder(std::strtoull(argv[2], nullptr, 10), std::atoi(argv[3]), std::atoi(argv[4]));
    } else if (mode == "xshm-peer") {
      xshm_pingpong(true, false, std::atoi(argv[3]), std::atoi(argv[4]), argv[5]);
    } else if (mode == "read") {
      read_loop(std::atoi(argv[2]), std::atoi(argv[3]));
    } else if (mode == "echo") {
      xshm_echo(argv[2], argv[3], std::string(argv[4]) == "spin", std::atol(argv[5]));
    } else {
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pingpong: %s\n", e.what());
    return 1;
  }
  return 0;
}
