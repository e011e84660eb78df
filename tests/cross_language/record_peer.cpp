// The C++ peer of the cross-language record matrix (tests/cross_language/test_record_matrix.py).
// record_peer.py (Python) and rust/xshm/examples/record_peer.rs (Rust) take the same commands
// and print the same JSON line, so that every pair of writer and reader languages runs the same
// scenario. Record k: counter k, every value k (uint64), message "k=<k>"; record 0 is the
// fresh one (values 0, empty message).
//   record_peer publish NAME COUNT N INTERVAL_US   create (exist_ok) and publish COUNT records
//                                                  (0: until killed), continuing the counter
//   record_peer read NAME COUNT                    COUNT consistent reads, checked
//   record_peer wait NAME TARGET TIMEOUT_MS        sleep on the futex until seq >= TARGET
//   record_peer recover NAME                       take the lock (recovering a dead writer),
//                                                  check the record, publish the next one
#include <xshm/xshm.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

bool whole(const xshm::Snapshot& s) {
  const std::vector<std::uint64_t> v = s.values<std::uint64_t>();
  for (std::uint64_t x : v)
    if (x != s.counter) return false;
  return s.message == (s.counter == 0 ? std::string() : "k=" + std::to_string(s.counter));
}

xshm::SharedMemoryManager open_writer(const std::string& name, std::uint64_t n) {
  xshm::CreateOptions o;
  o.shape = {n};
  o.dtype = xshm::Dtype::UInt64;
  o.message_capacity = 64;
  o.exist_ok = true;
  return xshm::SharedMemoryManager::create(name, o);
}

xshm::SharedMemoryManager open_reader(const std::string& name) {
  xshm::OpenOptions o;
  o.readonly = true;
  o.timeout = std::chrono::seconds(10);
  return xshm::SharedMemoryManager::open(name, o);
}

int publish(const std::string& name, std::uint64_t count, std::uint64_t n, long interval_us) {
  xshm::SharedMemoryManager m = open_writer(name, n);
  std::uint64_t k = m.read().counter;
  std::printf("{\"ready\": true}\n");
  std::fflush(stdout);
  std::vector<std::uint64_t> values(n);
  std::uint64_t done = 0;
  while (count == 0 || done < count) {
    ++k;
    values.assign(n, k);
    m.publish(values, "k=" + std::to_string(k), k);
    ++done;
    if (interval_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(interval_us));
  }
  std::printf("{\"published\": %llu, \"last\": %llu}\n", static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(k));
  return 0;
}

int read(const std::string& name, long count) {
  xshm::SharedMemoryManager m = open_reader(name);
  m.wait(0, std::chrono::seconds(10));  // the writer has started
  long torn = 0, regressions = 0;
  std::uint64_t last = 0;
  std::set<std::uint64_t> distinct;
  // COUNT reads, and on until the record was seen changing (at most 5 s more: a writer
  // descheduled for the whole of the COUNT reads is not a failure of the reader).
  const auto until = Clock::now() + std::chrono::seconds(5);
  long reads = 0;
  for (; reads < count || (distinct.size() < 2 && Clock::now() < until); ++reads) {
    const xshm::Snapshot s = m.read();
    torn += !whole(s);
    regressions += s.seq < last;
    last = s.seq;
    distinct.insert(s.seq);
  }
  std::printf(
      "{\"reads\": %ld, \"torn\": %ld, \"regressions\": %ld, \"distinct\": %zu, \"last_seq\": %llu}\n", count,
      torn, regressions, distinct.size(), static_cast<unsigned long long>(last));
  return 0;
}

int wait(const std::string& name, std::uint64_t target, long timeout_ms) {
  xshm::SharedMemoryManager m = open_reader(name);
  std::uint64_t last = m.seq();
  std::printf("{\"ready\": true}\n");
  std::fflush(stdout);
  long woken = 0, timeouts = 0, torn = 0;
  while (last < target && timeouts == 0) {
    const auto next = m.wait_for(last, std::chrono::milliseconds(timeout_ms));
    if (!next) {
      ++timeouts;
      break;
    }
    ++woken;
    torn += !whole(m.read());
    last = *next;
  }
  std::printf("{\"woken\": %ld, \"timeouts\": %ld, \"torn\": %ld, \"last_seq\": %llu}\n", woken, timeouts,
              torn, static_cast<unsigned long long>(last));
  return 0;
}

int recover(const std::string& name) {
  xshm::OpenOptions o;
  xshm::SharedMemoryManager m = xshm::SharedMemoryManager::open(name, o);
  const std::uint32_t before = m.recoveries();
  { xshm::LockGuard g = m.lock(std::chrono::seconds(5)); }
  const bool recovered = m.recoveries() == before + 1;
  const xshm::Snapshot s = m.read();
  bool ok = whole(s) && s.seq == m.seq();
  const std::uint64_t k = s.counter + 1;
  std::vector<std::uint64_t> values(s.data.size() / 8, k);
  const std::uint64_t seq = m.publish(values, "k=" + std::to_string(k), k);
  const xshm::Snapshot after = m.read();
  ok = ok && whole(after) && after.counter == k && after.seq == seq && seq == s.seq + 1;
  std::printf("{\"recovered\": %s, \"recoveries\": %u, \"whole\": %s, \"seq\": %llu}\n",
              recovered ? "true" : "false", m.recoveries(), ok ? "true" : "false",
              static_cast<unsigned long long>(seq));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 2 ? argv[1] : "";
    auto arg = [&](int i) { return i < argc ? std::strtoll(argv[i], nullptr, 10) : 0LL; };
    if (cmd == "publish" && argc == 6)
      return publish(argv[2], static_cast<std::uint64_t>(arg(3)), static_cast<std::uint64_t>(arg(4)), arg(5));
    if (cmd == "read" && argc == 4) return read(argv[2], arg(3));
    if (cmd == "wait" && argc == 5) return wait(argv[2], static_cast<std::uint64_t>(arg(3)), arg(4));
    if (cmd == "recover" && argc == 3) return recover(argv[2]);
    std::fprintf(stderr, "usage: record_peer publish|read|wait|recover NAME ...\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "record_peer: %s\n", e.what());
    return 1;
  }
}
