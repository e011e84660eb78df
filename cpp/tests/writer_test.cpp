// The writer's steps on a real segment: recover() on every crash state a writer can leave
// (arranged by hand in the slot words and bytes), the one release path, and the sliced wait
// for the mutex (timeout, try, the between-slices hook).
#include "xshm/writer.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

std::vector<double> filled(double v, std::size_t n = 100) { return std::vector<double>(n, v); }

/// The bytes of slot i after its lock word: meta, values and message.
std::vector<unsigned char> body(const detail::Segment& s, int i) {
  const unsigned char* p = s.slot(i) + sizeof(std::uint64_t);
  return {p, p + s.geo.record_size - sizeof(std::uint64_t)};
}

std::uint64_t lock_word(const detail::Segment& s, int i) { return s.meta(i)->lock.load(); }

/// A writer that died in slot i, halfway: lock word odd, meta and values scribbled over.
void scribble(const detail::Segment& s, int i) {
  s.meta(i)->lock.fetch_add(1);
  detail::MetaImage img = detail::load_meta(s.meta(i));
  img.seq = 999;
  img.counter = 999;
  detail::store_meta(s.meta(i), img);
  std::memset(s.values(i), 0xAB, s.geo.values_size / 2);
}

/// Step 1 of a publish of `seq` and nothing after it: the live slot complete, header and
/// backup untouched (a writer killed between steps 1 and 2).
void complete_live_only(const detail::Segment& s, std::uint64_t seq) {
  detail::MetaImage img = detail::load_meta(s.meta(0));
  img.seq = seq;
  img.counter = seq;
  const std::vector<double> v = filled(static_cast<double>(seq));
  writer::write_live(s, img, v.data(), nullptr);
}

struct Header0 {
  std::uint64_t seq;
  std::uint32_t epoch, recoveries;
};
Header0 header_of(const detail::Segment& s) {
  return {s.header()->seq.load(), s.header()->epoch.load(), s.header()->recoveries.load()};
}

/// Both slots complete and equal, and the outcome common to every recovery.
void expect_whole(const detail::Segment& s, const Header0& before, std::uint64_t seq) {
  EXPECT_EQ(lock_word(s, 0) & 1, 0u) << "live slot complete";
  EXPECT_EQ(lock_word(s, 1) & 1, 0u) << "backup slot complete";
  EXPECT_EQ(body(s, 0), body(s, 1)) << "both slots hold the same record";
  EXPECT_EQ(detail::load_meta(s.meta(0)).seq, seq);
  EXPECT_EQ(s.header()->seq.load(), seq);
  EXPECT_EQ(s.header()->recoveries.load(), before.recoveries + 1u) << "the recovery is counted";
  EXPECT_EQ(s.header()->epoch.load(), before.epoch + 1u) << "waiters are told";
}

}  // namespace

TEST(Recover, LiveSlotOddIsRestoredFromTheBackup) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  m.publish(filled(2.0), "two", 2);
  const detail::Segment& s = m.segment();
  const std::vector<unsigned char> good = body(s, 1);
  scribble(s, 0);
  const Header0 before = header_of(s);
  writer::recover(s);
  expect_whole(s, before, 2);
  EXPECT_EQ(body(s, 0), good) << "the backup's record, not the scribbles";
  EXPECT_EQ(m.read().message, "two");
}

TEST(Recover, BackupSlotOddIsRefreshedFromTheLiveSlot) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  m.publish(filled(2.0), "two", 2);
  const detail::Segment& s = m.segment();
  const std::vector<unsigned char> good = body(s, 0);
  scribble(s, 1);
  const Header0 before = header_of(s);
  writer::recover(s);
  expect_whole(s, before, 2);
  EXPECT_EQ(body(s, 1), good);
}

TEST(Recover, StaleEvenBackupIsRefreshed) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  complete_live_only(s, 2);
  writer::publish_seq(s, 2);  // died between steps 2 and 3: header agrees, backup stale
  ASSERT_EQ(detail::load_meta(s.meta(1)).seq, 1u);
  const Header0 before = header_of(s);
  writer::recover(s);
  expect_whole(s, before, 2);
  EXPECT_EQ(m.read().values<double>(), filled(2.0));
}

TEST(Recover, CompleteLiveSlotAheadOfTheHeaderIsPublished) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  complete_live_only(s, 2);  // died between steps 1 and 2
  ASSERT_EQ(s.header()->seq.load(), 1u);
  const Header0 before = header_of(s);
  writer::recover(s);
  expect_whole(s, before, 2);
  EXPECT_EQ(m.publish(filled(3.0), "three", 3), 3u) << "the next publish numbers after the recovered one";
}

TEST(Recover, NothingToRepairStillCountsAndNotifies) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  const std::vector<unsigned char> live = body(s, 0);
  const Header0 before = header_of(s);
  writer::recover(s);
  expect_whole(s, before, 1);
  EXPECT_EQ(body(s, 0), live);
}

TEST(Recover, WithoutBackupATornLiveSlotStaysTorn) {
  ScopedName name;
  CreateOptions o;
  o.backup = false;
  auto m = SharedMemoryManager::create(name.str(), o);
  m.publish(filled(1.0), "one", 1);
  const detail::Segment& s = m.segment();
  scribble(s, 0);
  const std::uint64_t odd = lock_word(s, 0);
  const Header0 before = header_of(s);
  writer::recover(s);
  EXPECT_EQ(lock_word(s, 0), odd) << "nothing to restore from: the slot stays mid-write";
  EXPECT_EQ(s.header()->seq.load(), 1u);
  EXPECT_EQ(s.header()->recoveries.load(), before.recoveries + 1u);
  EXPECT_EQ(s.header()->epoch.load(), before.epoch + 1u);
  std::optional<WriterLock> held = WriterLock::acquire(s);
  ASSERT_TRUE(held);
  EXPECT_TRUE(held->torn()) << "the next writer learns that only a full publish heals it";
}

TEST(WriterLock, ReleaseClearsTheOwnerThenUnlocksOnce) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  const detail::Segment& s = m.segment();
  std::optional<WriterLock> held = WriterLock::acquire(s);
  ASSERT_TRUE(held && held->held());
  EXPECT_EQ(m.owner_pid(), static_cast<std::uint32_t>(::getpid()));
  WriterLock moved = std::move(*held);
  EXPECT_FALSE(held->held()) << "a moved-from lock releases nothing";
  moved.unlock();
  moved.unlock();  // idempotent
  EXPECT_EQ(m.owner_pid(), 0u);
  EXPECT_TRUE(m.try_lock().has_value()) << "the mutex is free again";
}

TEST(WriterLock, TransactionAndGuardReleaseThroughTheSamePath) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  {
    WriteTransaction tx = m.begin_write();
    EXPECT_EQ(m.owner_pid(), static_cast<std::uint32_t>(::getpid()));
    tx.abort();
    EXPECT_EQ(m.owner_pid(), 0u);
    EXPECT_FALSE(tx.active());
  }
  {
    LockGuard g = m.lock();
    g.unlock();
    EXPECT_EQ(m.owner_pid(), 0u);
  }
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(WriterLock, AGuardReleasedOnAnotherThreadKeepsOwnerPidTruthful) {
  // The mutex belongs to the thread that took it: an unlock elsewhere fails (EPERM) and the
  // mutex stays held, so owner_pid must keep naming this process; when that thread exits
  // holding it, the next writer recovers.
  XSHM_SKIP_UNDER_TSAN();
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  std::optional<LockGuard> guard;
  std::thread([&] { guard.emplace(m.lock()); }).join();  // the taker exits holding it
  guard->unlock();
  EXPECT_EQ(m.owner_pid(), static_cast<std::uint32_t>(::getpid())) << "the unlock failed: still held";
  const std::uint32_t before = m.recoveries();
  EXPECT_EQ(m.publish(nullptr, 0, "next", 1), 1u) << "the taker's exit left it to be recovered";
  EXPECT_EQ(m.recoveries(), before + 1);
  EXPECT_EQ(m.owner_pid(), 0u);
}

TEST(LockWait, TimesOutOnTheSteadyClockCallingTheHookEverySlice) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  xshm_test::HeldLock holder(m);
  int slices = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = robust_mutex::lock(
      m.segment().mutex(), 60ms, [&] { ++slices; }, 10ms);
  EXPECT_EQ(r, robust_mutex::LockResult::TimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 60ms);
  EXPECT_GE(slices, 3) << "the hook runs between slices";
  EXPECT_THROW(robust_mutex::lock(
                   m.segment().mutex(), 5s, [] { throw std::runtime_error("stop"); }, 5ms),
               std::runtime_error)
      << "a hook that throws ends the wait";
  EXPECT_EQ(robust_mutex::lock(m.segment().mutex(), 0ns), robust_mutex::LockResult::TimedOut)
      << "zero: a try";
  holder.release();
  EXPECT_EQ(robust_mutex::lock(m.segment().mutex(), 0ns), robust_mutex::LockResult::Acquired);
  robust_mutex::unlock(m.segment().mutex());
}

TEST(LockWait, ATryOnAHeldMutexStaysInUserSpace) {
  // A try that entered the kernel (timedlock with a past deadline) set FUTEX_WAITERS in the
  // mutex word, and the holder's unlock then paid a wake syscall for nobody.
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  xshm_test::HeldLock holder(m);
  const auto* word = reinterpret_cast<const std::atomic<std::uint32_t>*>(m.segment().mutex());
  EXPECT_EQ(word->load() & 0x80000000u, 0u) << "nobody waits yet";
  EXPECT_EQ(m.try_publish(nullptr, 0, "x"), std::nullopt);
  EXPECT_FALSE(m.try_lock().has_value());
  EXPECT_EQ(robust_mutex::lock(m.segment().mutex(), 0ns), robust_mutex::LockResult::TimedOut);
  EXPECT_EQ(word->load() & 0x80000000u, 0u) << "a try must not mark the mutex as waited for";
}

TEST(LockWait, AHookThatThrowsLeavesTheMutexFreeAndNoOwner) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  {
    xshm_test::HeldLock holder(m);
    EXPECT_THROW(m.publish(nullptr, 0, "x", 1, false, 5s, [] { throw std::runtime_error("interrupted"); }),
                 std::runtime_error);
    EXPECT_EQ(m.seq(), 0u) << "nothing published";
  }
  EXPECT_EQ(m.owner_pid(), 0u) << "the interrupted publish never claimed the mutex";
  EXPECT_EQ(m.try_publish(nullptr, 0, "y", 2), std::optional<std::uint64_t>(1)) << "the mutex is free";
}

TEST(LockWait, AnOwnerThatDiesWhileWeWaitInSlicesIsRecovered) {
  // The EOWNERDEAD arrives in a later slice, not the first try: recovery must still run.
  XSHM_SKIP_UNDER_TSAN();
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(nullptr, 0, "before", 1);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = SharedMemoryManager::open(name.str());
    WriteTransaction tx = c.begin_write();  // holds the mutex
    char one = 1;
    if (::write(ready[1], &one, 1) != 1) ::_exit(2);
    ::usleep(150 * 1000);  // the parent is in its slices by now
    ::_exit(0);            // dies holding the mutex
  }
  char one = 0;
  ASSERT_EQ(::read(ready[0], &one, 1), 1);
  ::close(ready[0]);
  ::close(ready[1]);
  const std::uint32_t before = m.recoveries();
  int slices = 0;
  const std::uint64_t seq = m.publish(nullptr, 0, "after", 2, false, 30s, [&] { ++slices; });
  ::waitpid(child, nullptr, 0);
  EXPECT_GE(slices, 1) << "the mutex was obtained in a later slice";
  EXPECT_EQ(m.recoveries(), before + 1) << "EOWNERDEAD in a later slice still recovers";
  EXPECT_EQ(seq, 2u);
  EXPECT_EQ(m.read().message, "after");
  EXPECT_EQ(m.owner_pid(), 0u);
}

TEST(LockWait, RelockByTheOwnerIsAnErrorEvenForATry) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  LockGuard g = m.lock();
  EXPECT_THROW(m.try_publish(nullptr, 0, "x"), ArgumentError)
      << "not a silent 'busy' that would wait forever";
  EXPECT_THROW(m.lock(10ms), ArgumentError);
}

TEST(Publish, ACorruptMessageLengthIsRefusedUnlessTheMessageIsGiven) {
  // Only corruption makes message_len exceed the slot: a publish that keeps the message, or a
  // transaction that would, refuses rather than copy the bad length into the backup.
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(nullptr, 0, "ok", 1);
  const detail::Segment& s = m.segment();
  for (int slot = 0; slot < s.slots(); ++slot) {
    detail::MetaImage img = detail::load_meta(s.meta(slot));
    img.message_len = s.geo.message_capacity + 1;
    detail::store_meta(s.meta(slot), img);
  }
  EXPECT_THROW(m.publish(nullptr, 0, std::nullopt, 2), LayoutError);
  EXPECT_THROW(m.begin_write(), LayoutError);
  EXPECT_EQ(m.seq(), 1u) << "nothing published";
  EXPECT_EQ(m.owner_pid(), 0u) << "the refusal released the mutex";
  EXPECT_EQ(m.publish(nullptr, 0, "repaired", 3), 2u) << "a publish that gives the message repairs it";
  EXPECT_EQ(m.read().message, "repaired");
  EXPECT_NO_THROW(m.begin_write().abort());
}
