// The crash campaign: writers killed with SIGKILL at random points, inside and outside the
// write block, while reader processes and another writer run. Prints its figures and exits
// non-zero when any torn snapshot, hang or lost publish was seen.
//
//   xshm_crash_campaign [ROUNDS] [SEED] [--no-backup]
// ROUNDS defaults to $XSHM_CRASH_ROUNDS, else 1000 (the CI scale; the long campaign: 20000).
// --no-backup is the negative control: without the backup record, kills mid-write do leave
// torn records (reported as TornRecordError, counted as torn), which shows the campaign can
// see what it guards against.
//
// Every record a writer publishes has all values equal to its counter and the message equal to
// the counter in decimal, so any torn snapshot shows. Each victim writes (seq, counter) of every
// publish that returned into a private shared page; after the kill, the segment must still hold
// that publish or a later one ("acknowledged but lost" counts the cases where it does not), and
// a record read with that seq must carry that counter.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "xshm/manager.hpp"

namespace {

constexpr std::size_t kWords = 4096;  // 32 KiB of values: a publish takes long enough to be hit
constexpr int kReaders = 2;

struct Shared {  // an anonymous MAP_SHARED page the processes of the campaign report through
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> torn{0};
  std::atomic<std::uint64_t> regressions{0};
  std::atomic<std::uint64_t> ack_seq{0};  // the victim's last publish that returned
  std::atomic<std::uint64_t> ack_counter{0};
};

std::uint64_t counter_for(std::uint64_t writer, std::uint64_t k) { return (writer << 40) | k; }

bool consistent(const std::vector<std::uint64_t>& v, const std::string& msg, std::uint64_t counter) {
  for (auto w : v)
    if (w != counter) return false;
  return msg == std::to_string(counter);
}

[[noreturn]] void reader(const std::string& name, Shared* sh) {
  auto m = xshm::SharedMemoryManager::open(name, {true});
  std::vector<std::uint64_t> v(kWords);
  std::string msg;
  std::uint64_t last = 0;
  while (!sh->stop.load()) {
    xshm::RecordInfo info;
    try {
      info = m.read_into(v.data(), v.size() * 8, &msg);
    } catch (const xshm::TornRecordError&) {
      sh->torn.fetch_add(1);
      continue;
    }
    if (!consistent(v, msg, info.counter)) sh->torn.fetch_add(1);
    if (info.seq < last) sh->regressions.fetch_add(1);
    last = info.seq;
    sh->reads.fetch_add(1, std::memory_order_relaxed);
  }
  std::_Exit(0);
}

[[noreturn]] void writer(const std::string& name, Shared* sh, std::uint64_t id, int mode, bool slow) {
  auto m = xshm::SharedMemoryManager::open(name);
  std::vector<std::uint64_t> v(kWords);
  for (std::uint64_t k = 1;; ++k) {
    const std::uint64_t c = counter_for(id, k);
    std::uint64_t seq = 0;
    if (mode == 0) {  // publish()
      std::fill(v.begin(), v.end(), c);
      seq = m.publish(v, std::to_string(c), c);
    } else if (mode == 1) {  // a write transaction: the kill may land mid-fill, in place (backup) or staged
      try {
        seq = m.write([&](xshm::WriteTransaction& tx) {
          auto* p = tx.values_as<std::uint64_t>();
          for (std::size_t i = 0; i < kWords; ++i) p[i] = c;
          tx.counter = c;
          tx.set_message(std::to_string(c));
        });
      } catch (const xshm::TornRecordError&) {  // no backup: heal with a full publish
        std::fill(v.begin(), v.end(), c);
        seq = m.publish(v, std::to_string(c), c);
      }
    } else {  // the user's own critical section, then a publish
      xshm::LockGuard g = m.lock();
      for (volatile int spin = 0; spin < 2000; spin = spin + 1) {
      }
      g.unlock();
      std::fill(v.begin(), v.end(), c);
      seq = m.publish(v, std::to_string(c), c);
    }
    if (sh != nullptr) {
      sh->ack_counter.store(c);
      sh->ack_seq.store(seq);
    }
    if (slow) ::usleep(200);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* env_rounds = std::getenv("XSHM_CRASH_ROUNDS");
  const int rounds = argc > 1 && argv[1][0] != '-' ? std::atoi(argv[1])
                     : env_rounds != nullptr       ? std::atoi(env_rounds)
                                                   : 1000;
  const std::uint64_t seed =
      argc > 2 && argv[2][0] != '-' ? std::strtoull(argv[2], nullptr, 10) : std::random_device{}();
  const bool backup = !(argc > 1 && std::string(argv[argc - 1]) == "--no-backup");
  std::mt19937_64 rng(seed);
  const std::string name = "/xshm-crash-campaign-" + std::to_string(::getpid());
  auto* sh = static_cast<Shared*>(
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (sh) Shared();

  xshm::CreateOptions opt;
  opt.shape = {kWords};
  opt.dtype = xshm::Dtype::UInt64;
  opt.message_capacity = 32;
  opt.backup = backup;
  auto m = xshm::SharedMemoryManager::create(name, opt);
  // A consistent first record (the created one has message "" for counter 0, which the check
  // calls torn): the round-0 victim may die before it publishes, and main republishes whatever
  // is there (seen in CI on a slow machine: readers counted the empty record 79 times).
  std::vector<std::uint64_t> v(kWords, 0);
  std::string msg;
  m.publish(v, std::to_string(0), 0);

  std::vector<pid_t> helpers;
  for (int i = 0; i < kReaders; ++i) {
    pid_t p = ::fork();
    if (p == 0) reader(name, sh);
    helpers.push_back(p);
  }
  // A second writer that keeps publishing slowly, contending for the mutex. Not in the negative
  // control, where it would heal a torn record before anyone could look at it.
  pid_t other = -1;
  if (backup) {
    other = ::fork();
    if (other == 0) writer(name, nullptr, 0xFFFFF, 0, true);
    helpers.push_back(other);
  }

  long kills = 0, hangs = 0, lost = 0, inside = 0;
  const std::uint32_t recoveries_before = m.recoveries();
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    sh->ack_seq.store(0);
    const int mode = round % 3;
    pid_t victim = ::fork();
    if (victim == 0) writer(name, sh, static_cast<std::uint64_t>(round + 1), mode, false);
    // Let it publish a little, then kill it at a random instant.
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    const std::uint32_t owner = m.owner_pid();
    ::kill(victim, SIGKILL);
    ::waitpid(victim, nullptr, 0);
    ++kills;
    inside += owner == static_cast<std::uint32_t>(victim);

    // The survivors go on: a read never waits, and a new writer gets the mutex in bounded time.
    const auto read_start = std::chrono::steady_clock::now();
    xshm::RecordInfo info;
    bool torn_read = false;
    try {
      info = m.read_into(v.data(), v.size() * 8, &msg);
    } catch (const xshm::TornRecordError&) {
      torn_read = true;
      sh->torn.fetch_add(1);
    }
    if (std::chrono::steady_clock::now() - read_start > std::chrono::seconds(2)) ++hangs;
    if (!torn_read && !consistent(v, msg, info.counter)) sh->torn.fetch_add(1);
    const std::uint64_t acked = sh->ack_seq.load();
    if (acked != 0 && !torn_read) {
      if (m.seq() < acked || info.seq < acked) ++lost;
      if (info.seq == acked && info.counter != sh->ack_counter.load()) ++lost;
    }
    try {
      xshm::WriteTransaction tx = m.begin_write(std::chrono::seconds(5));
      tx.commit();  // republish the current record unchanged: the mutex is healthy
    } catch (const xshm::WaitTimeoutError&) {
      ++hangs;
    } catch (const xshm::TornRecordError&) {  // only without backup: heal with a full publish
      const std::uint64_t c = counter_for(0xFFFFE, static_cast<std::uint64_t>(round + 1));
      std::fill(v.begin(), v.end(), c);
      m.publish(v, std::to_string(c), c);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sh->stop.store(true);
  for (pid_t p : helpers) {
    if (p == other) ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  const std::uint32_t recoveries = m.recoveries() - recoveries_before;
  m.unlink();
  std::printf(
      "crash campaign (C++, backup %s): seed=%llu rounds=%d kills=%ld kills_holding_mutex=%ld recoveries=%u "
      "reads=%llu torn=%llu hangs=%ld lost=%ld seq_regressions=%llu seconds=%.1f\n",
      backup ? "on" : "off", static_cast<unsigned long long>(seed), rounds, kills, inside, recoveries,
      static_cast<unsigned long long>(sh->reads.load()), static_cast<unsigned long long>(sh->torn.load()),
      hangs, lost, static_cast<unsigned long long>(sh->regressions.load()), secs);
  const bool ok = sh->torn.load() == 0 && hangs == 0 && lost == 0 && sh->regressions.load() == 0 &&
                  recoveries > 0 && sh->reads.load() > 0;
  return ok ? 0 : 1;
}
