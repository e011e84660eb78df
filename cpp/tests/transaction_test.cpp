// The write transaction on a real segment: in place (the live slot odd, readers on the
// backup, commit = the rest of a publish, abort = the backup copied back), staged (the
// default without a backup), the weaker in-place promise without a backup, and a writer
// killed inside an in-place block while a reader checks every snapshot.
#include "xshm/transaction.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

constexpr std::size_t kN = 1000;

std::vector<double> filled(double v) { return std::vector<double>(kN, v); }

std::vector<unsigned char> body(const detail::Segment& s, int i) {
  const unsigned char* p = s.slot(i) + sizeof(std::uint64_t);
  return {p, p + s.geo.record_size - sizeof(std::uint64_t)};
}

std::uint64_t lock_word(const detail::Segment& s, int i) { return s.meta(i)->lock.load(); }

SharedMemoryManager make(const ScopedName& name, bool backup) {
  CreateOptions o{{kN}, Dtype::Float64, 64};
  o.backup = backup;
  return SharedMemoryManager::create(name.str(), o);
}

/// The record as published: values, message, counter and seq.
void expect_record(const SharedMemoryManager& m, double v, const std::string& msg, std::uint64_t counter,
                   std::uint64_t seq) {
  const Snapshot s = m.read();
  EXPECT_EQ(s.values<double>(), filled(v));
  EXPECT_EQ(s.message, msg);
  EXPECT_EQ(s.counter, counter);
  EXPECT_EQ(s.seq, seq);
  EXPECT_EQ(m.seq(), seq);
}

}  // namespace

TEST(Transaction, InPlaceWritesTheLiveSlotWhileReadersGetTheBackup) {
  ScopedName name;
  auto m = make(name, true);
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  {
    WriteTransaction tx = m.begin_write();
    ASSERT_TRUE(tx.in_place());
    EXPECT_EQ(tx.values(), static_cast<void*>(s.values(0))) << "no staged copy";
    EXPECT_EQ(lock_word(s, 0) & 1, 1u) << "the live slot is odd while the block runs";
    EXPECT_EQ(tx.counter, 1u);
    EXPECT_EQ(tx.message(), "one");
    for (std::size_t i = 0; i < kN / 2; ++i) tx.values_as<double>()[i] = 2.0;
    expect_record(m, 1.0, "one", 1, 1);  // half written: the readers get the backup
    for (std::size_t i = kN / 2; i < kN; ++i) tx.values_as<double>()[i] = 2.0;
    tx.counter = 2;
    tx.set_message("two");
    EXPECT_EQ(tx.commit(), 2u);
  }
  expect_record(m, 2.0, "two", 2, 2);
  EXPECT_EQ(lock_word(s, 0) & 1, 0u);
  EXPECT_EQ(body(s, 0), body(s, 1)) << "the backup was refreshed";
}

TEST(Transaction, AbortRestoresTheRecordAndPublishesNothing) {
  ScopedName name;
  auto m = make(name, true);
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  const std::uint32_t epoch = s.header()->epoch.load();
  const auto write_garbage = [](WriteTransaction& tx) {
    for (std::size_t i = 0; i < kN; ++i) tx.values_as<double>()[i] = -7.0;
    tx.counter = 99;
    tx.set_message("never");
  };
  {
    WriteTransaction tx = m.begin_write();
    write_garbage(tx);
    tx.abort();
    EXPECT_FALSE(tx.active());
    expect_record(m, 1.0, "one", 1, 1);
  }
  {
    WriteTransaction tx = m.begin_write();
    write_garbage(tx);
  }  // dropped without commit
  expect_record(m, 1.0, "one", 1, 1);
  EXPECT_THROW(m.write([&](WriteTransaction& tx) {
    write_garbage(tx);
    throw std::runtime_error("user error");
  }),
               std::runtime_error);
  expect_record(m, 1.0, "one", 1, 1);
  EXPECT_EQ(lock_word(s, 0) & 1, 0u);
  EXPECT_EQ(body(s, 0), body(s, 1));
  EXPECT_EQ(s.header()->epoch.load(), epoch) << "an abort wakes no waiter: nothing was published";
  EXPECT_EQ(m.write([](WriteTransaction& tx) { tx.counter += 1; }), 2u) << "the mutex was released";
  expect_record(m, 1.0, "one", 2, 2);
}

TEST(Transaction, StagedOnRequestWithABackup) {
  ScopedName name;
  auto m = make(name, true);
  m.publish(filled(1.0), "one", 1);
  WriteTransaction tx = m.begin_write(WriteMode::staged);
  EXPECT_FALSE(tx.in_place());
  EXPECT_NE(tx.values(), static_cast<void*>(m.segment().values(0)));
  EXPECT_EQ(lock_word(m.segment(), 0) & 1, 0u) << "staged: the live slot stays readable";
  tx.values_as<double>()[0] = 5.0;
  tx.commit();
  EXPECT_EQ(m.read().values<double>()[0], 5.0);
}

TEST(Transaction, WithoutABackupStagingIsTheDefault) {
  ScopedName name;
  auto m = make(name, false);
  m.publish(filled(1.0), "one", 1);
  WriteTransaction tx = m.begin_write();
  EXPECT_FALSE(tx.in_place());
  for (std::size_t i = 0; i < kN; ++i) tx.values_as<double>()[i] = 3.0;
  expect_record(m, 1.0, "one", 1, 1);  // staged: readers see the record, not the block
  tx.abort();
  expect_record(m, 1.0, "one", 1, 1);
}

TEST(Transaction, InPlaceWithoutABackupStallsReadersAndAnAbortTears) {
  ScopedName name;
  auto m = make(name, false);
  m.publish(filled(1.0), "one", 1);
  OpenOptions o;
  o.stall_timeout = 20ms;
  const auto r = SharedMemoryManager::open(name.str(), o);
  {
    WriteTransaction tx = m.begin_write(WriteMode::in_place);
    ASSERT_TRUE(tx.in_place());
    for (std::size_t i = 0; i < kN; ++i) tx.values_as<double>()[i] = 2.0;
    EXPECT_THROW(r.read(), TornRecordError) << "a live writer stalled mid-write, past stall_timeout";
    EXPECT_EQ(tx.commit(), 2u);
  }
  expect_record(m, 2.0, "one", 1, 2);
  {
    WriteTransaction tx = m.begin_write(WriteMode::in_place);
    tx.values_as<double>()[0] = 9.0;
  }  // aborted: nothing can restore the live slot
  EXPECT_THROW(r.read(), TornRecordError) << "torn until the next full publish";
  EXPECT_THROW(m.begin_write(), TornRecordError);
  m.publish(filled(4.0), "four", 4);
  expect_record(m, 4.0, "four", 4, 3);
}

TEST(Transaction, AWriterKilledInsideAnInPlaceBlockIsRecovered) {
  ScopedName name;
  auto m = make(name, true);
  m.publish(filled(1.0), "one", 1);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto c = SharedMemoryManager::open(name.str());
    WriteTransaction tx = c.begin_write();
    for (std::size_t i = 0; i < kN / 2; ++i) tx.values_as<double>()[i] = -1.0;
    tx.counter = 666;
    ::raise(SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(lock_word(m.segment(), 0) & 1, 1u) << "killed with the live slot odd";
  expect_record(m, 1.0, "one", 1, 1);  // the backup serves
  EXPECT_EQ(m.write([](WriteTransaction& tx) { tx.counter = 2; }), 2u);
  EXPECT_EQ(m.recoveries(), 1u);
  expect_record(m, 1.0, "one", 2, 2);
  EXPECT_EQ(body(m.segment(), 0), body(m.segment(), 1));
}

// Writers in child processes fill in-place blocks (values all c, counter c, message c) and
// are killed inside one after a random number of blocks; a reader process checks every
// snapshot for consistency. Every party is a process of its own (no fork beside threads, and
// the plain stores of a block race nothing a sanitizer of this process watches).
TEST(Transaction, ReadersNeverSeeAHalfWrittenInPlaceBlock) {
  ScopedName name;
  auto m = make(name, true);
  m.publish(filled(0.0), "0", 0);
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  struct Shared {
    std::atomic<bool> stop;
    std::atomic<long> reads, bad;
  };
  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* sh = new (mem) Shared{{false}, {0}, {0}};
  const pid_t reader = ::fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {
    auto r = SharedMemoryManager::open(name.str());
    while (!sh->stop) {
      const Snapshot s = r.read();
      const auto v = s.values<double>();
      const double c = static_cast<double>(s.counter);
      bool ok = s.message == std::to_string(s.counter);
      for (double x : v) ok = ok && x == c;
      if (!ok) ++sh->bad;
      ++sh->reads;
    }
    ::_exit(0);
  }
  std::uint64_t c = 0;
  int killed = 0;
  for (int round = 0; round < 20; ++round) {
    const int blocks = static_cast<int>(rng() % 400);
    const std::uint64_t base = c;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto w = SharedMemoryManager::open(name.str());
      for (std::uint64_t k = 1;; ++k) {
        w.write([&](WriteTransaction& tx) {
          double* v = tx.values_as<double>();
          for (std::size_t i = 0; i < kN; ++i) v[i] = static_cast<double>(base + k);
          tx.counter = base + k;
          tx.set_message(std::to_string(base + k));
          if (static_cast<int>(k) > blocks) ::raise(SIGKILL);  // mid-block, the values filled
        });
      }
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    ++killed;
    c = base + static_cast<std::uint64_t>(blocks) + 1;  // the killed block's number is skipped
  }
  m.write([&](WriteTransaction& tx) {
    for (std::size_t i = 0; i < kN; ++i) tx.values_as<double>()[i] = static_cast<double>(c);
    tx.counter = c;
    tx.set_message(std::to_string(c));
  });
  sh->stop = true;
  ::waitpid(reader, nullptr, 0);
  std::printf("%d writers killed inside a block, %ld reads, %ld inconsistent\n", killed, sh->reads.load(),
              sh->bad.load());
  EXPECT_EQ(sh->bad.load(), 0);
  EXPECT_GT(sh->reads.load(), 0);
  ::munmap(mem, sizeof(Shared));
  EXPECT_EQ(m.recoveries(), 20u);
  EXPECT_EQ(m.read().counter, c);
}
