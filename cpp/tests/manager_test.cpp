#include "xshm/manager.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

int errno_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  return 0;
}

mode_t file_mode(const std::string& name) {
  struct stat st {};
  EXPECT_EQ(::stat(("/dev/shm" + name).c_str(), &st), 0);
  return st.st_mode & 0777;
}

/// Runs fn in a forked child and waits for it; returns the raw wait status.
template <class Fn>
int in_child(Fn fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::vector<double> filled(double v, std::size_t n = 100) { return std::vector<double>(n, v); }

RecordMeta* slot_meta(const SharedMemoryManager& m, int i) {
  auto* base = static_cast<unsigned char*>(const_cast<void*>(m.base()));
  return reinterpret_cast<RecordMeta*>(base + m.geometry().record_offset[i]);
}

}  // namespace

TEST(Manager, PublishThenReadFromAnotherHandle) {
  ScopedName name;
  auto w = SharedMemoryManager::create(name.str());
  auto r = SharedMemoryManager::open(name.str(), {true});
  EXPECT_EQ(r.seq(), 0u);
  EXPECT_EQ(w.publish(filled(2.5), "hello", 42), 1u);
  Snapshot s = r.read();
  EXPECT_EQ(s.seq, 1u);
  EXPECT_EQ(s.counter, 42u);
  EXPECT_EQ(s.message, "hello");
  EXPECT_EQ(s.writer_pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(s.values<double>(), filled(2.5));
  EXPECT_GT(s.timestamp_ns, 0);
  EXPECT_EQ(r.seq(), 1u);
}

TEST(Manager, NullFieldsKeepTheirValues) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  m.publish(std::nullopt, std::uint64_t{2});
  Snapshot s = m.read();
  EXPECT_EQ(s.message, "one");
  EXPECT_EQ(s.counter, 2u);
  EXPECT_EQ(s.values<double>(), filled(1.0));
  EXPECT_EQ(s.seq, 2u);
}

TEST(Manager, WriteTransactionPublishesOnCommitOnly) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{3}, Dtype::Int32, 16});
  m.write([](WriteTransaction& tx) {
    tx.values_as<std::int32_t>()[2] = 7;
    tx.counter = 9;
    tx.set_message("tx");
  });
  EXPECT_THROW(m.write([](WriteTransaction& tx) {
    tx.counter = 100;
    throw std::runtime_error("user error");
  }),
               std::runtime_error);
  Snapshot s = m.read();
  EXPECT_EQ(s.seq, 1u);
  EXPECT_EQ(s.counter, 9u);
  EXPECT_EQ(s.values<std::int32_t>(), (std::vector<std::int32_t>{0, 0, 7}));
  EXPECT_EQ(m.seq(), 1u);
}

TEST(Manager, PublishGivesUpAtItsLockTimeout) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  xshm_test::HeldLock holder(m);
  const std::vector<double> v = filled(2.0);
  const std::size_t bytes = v.size() * sizeof(double);
  EXPECT_EQ(m.try_publish(v.data(), bytes, "two", 2), std::nullopt);
  EXPECT_FALSE(m.try_lock().has_value());
  EXPECT_THROW(m.publish(v.data(), bytes, "two", 2, false, 20ms), WaitTimeoutError);
  EXPECT_EQ(m.seq(), 1u) << "a publish that timed out published nothing";
  EXPECT_EQ(m.read().counter, 1u);
  holder.release();
  EXPECT_EQ(m.try_publish(v.data(), bytes, "three", 3), std::optional<std::uint64_t>(2))
      << "a free mutex is taken at once";
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(Manager, CreationIsExclusiveAndOwnerOnly) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  EXPECT_EQ(file_mode(name.str()), 0600u);
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::create(name.str()); }), EEXIST);
  ScopedName wide;
  const mode_t old = ::umask(077);
  auto w = SharedMemoryManager::create(wide.str(), CreateOptions{{1}, Dtype::Float64, 8, 0640});
  ::umask(old);
  EXPECT_EQ(file_mode(wide.str()), 0640u) << "mode is applied exactly, whatever the umask";
}

TEST(Manager, ExistOkAttachesOnlyToTheSameLayout) {
  ScopedName name;
  auto a = SharedMemoryManager::create(name.str());
  a.publish(filled(3.0), "kept", 1);
  CreateOptions same;
  same.exist_ok = true;
  auto b = SharedMemoryManager::create(name.str(), same);
  EXPECT_EQ(b.read().message, "kept");
  CreateOptions other = same;
  other.shape = {5};
  EXPECT_THROW(SharedMemoryManager::create(name.str(), other), LayoutError);
}

TEST(Manager, ReadOnlyHandleRefusesEveryWritePath) {
  ScopedName name;
  auto w = SharedMemoryManager::create(name.str());
  auto r = SharedMemoryManager::open(name.str(), {true});
  EXPECT_TRUE(r.readonly());
  EXPECT_THROW(r.publish(filled(1.0)), ReadOnlyError);
  EXPECT_THROW(r.begin_write(), ReadOnlyError);
  EXPECT_THROW(r.lock(), ReadOnlyError);
}

TEST(Manager, OpenMissingAndOpenWithTimeout) {
  ScopedName name;
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str()); }), ENOENT);
  std::thread creator([&] {
    std::this_thread::sleep_for(100ms);
    auto m = SharedMemoryManager::create(name.str());
    m.publish(filled(1.0), "late", 5);
    std::this_thread::sleep_for(200ms);
  });
  OpenOptions o;
  o.timeout = 5s;
  auto m = SharedMemoryManager::open(name.str(), o);
  creator.join();
  EXPECT_EQ(m.read().counter, 5u);
}

TEST(Manager, RefusesForeignTruncatedAndUnreadySegments) {
  ScopedName name;
  int fd = ::shm_open(name.str().c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 100), 0);
  EXPECT_THROW(SharedMemoryManager::open(name.str()), LayoutError) << "smaller than a header";
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  EXPECT_THROW(SharedMemoryManager::open(name.str()), LayoutError) << "never made ready";
  ASSERT_EQ(::pwrite(fd, "GARBAGE!", 8, 0), 8);
  EXPECT_THROW(SharedMemoryManager::open(name.str()), LayoutError) << "foreign";
  EXPECT_THROW(SharedMemoryManager::unlink(name.str()), LayoutError) << "unlink refuses a foreign segment";
  ::close(fd);
  SharedMemoryManager::unlink(name.str(), true);
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str()); }), ENOENT);
}

TEST(Manager, UnlinkWithoutForceRemovesASegmentWhoseCreatorDiedBeforeItWasReady) {
  // "never made ready ... remove it with unlink": an empty file (stopped before ftruncate) and
  // a zero first page (stopped before writing the header) are xshm's own leftovers.
  for (const off_t size : {off_t{0}, off_t{8192}}) {
    ScopedName name;
    int fd = ::shm_open(name.str().c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, size), 0);
    ::close(fd);
    EXPECT_NO_THROW(SharedMemoryManager::unlink(name.str())) << "size " << size;
    EXPECT_EQ(errno_of([&] { SharedMemoryManager::unlink(name.str()); }), ENOENT);
  }
  ScopedName name;  // one non-zero byte in a short file: not ours
  int fd = ::shm_open(name.str().c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "\0\0x", 3, 0), 3);
  ::close(fd);
  EXPECT_THROW(SharedMemoryManager::unlink(name.str()), LayoutError);
}

TEST(Manager, RefusesAnotherLayoutVersion) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  int fd = ::shm_open(name.str().c_str(), O_RDWR, 0);
  const std::uint32_t v2 = 2;
  ASSERT_EQ(::pwrite(fd, &v2, 4, offsetof(Header, layout_version)), 4);
  ::close(fd);
  try {
    SharedMemoryManager::open(name.str());
    FAIL() << "opened a version-2 segment";
  } catch (const LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find("layout version 2"), std::string::npos) << e.what();
  }
}

TEST(Manager, WaitWakesOnPublishAndTimesOut) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  auto r = SharedMemoryManager::open(name.str(), {true});
  EXPECT_FALSE(r.wait_for(0, 20ms).has_value());
  EXPECT_THROW(r.wait(0, 10ms), WaitTimeoutError);
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    m.publish(filled(1.0));
  });
  EXPECT_EQ(r.wait(0, 5s), 1u);
  t.join();
  std::thread t2([&] {
    std::this_thread::sleep_for(20ms);
    m.publish(filled(2.0));
  });
  EXPECT_EQ(r.wait(1, 5s, 1ms), 2u) << "spin, then sleep";
  t2.join();
  EXPECT_EQ(r.wait(0, 0ms), 2u) << "already past: returns at once";
}

TEST(Manager, MessageLongerThanSlot) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{1}, Dtype::Float64, 4});
  EXPECT_THROW(m.publish(std::string_view("hello"), std::nullopt), MessageTooLongError);
  m.publish(nullptr, 0, std::string_view("ab\xE2\x82\xAC"), std::nullopt, true);  // "ab€", 5 bytes
  EXPECT_EQ(m.read().message, "ab") << "cut before the euro sign, never inside it";
}

TEST(Manager, WrongSizedValuesAreRefused) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  EXPECT_THROW(m.publish(filled(1.0, 99)), ArgumentError);
  std::vector<double> out(99);
  EXPECT_THROW(m.read_into(out.data(), out.size() * 8), ArgumentError);
}

TEST(Manager, ClosedHandleThrows) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.close();
  EXPECT_THROW(m.read(), ClosedError);
  EXPECT_THROW(m.seq(), ClosedError);
}

TEST(Manager, InstanceUnlinkLeavesARecreatedNameAlone) {
  ScopedName name;
  auto a = SharedMemoryManager::create(name.str());
  a.unlink();
  auto b = SharedMemoryManager::create(name.str());
  EXPECT_EQ(errno_of([&] { a.unlink(); }), ENOENT);
  b.publish(filled(1.0));
  EXPECT_EQ(SharedMemoryManager::open(name.str()).seq(), 1u);
}

// ---- crashes: a writer killed at the worst moments ----

namespace {

/// In a child: publish a known record, then die inside the next write with the live slot odd
/// and half-overwritten, holding the mutex.
void die_mid_write(const std::string& name) {
  auto m = SharedMemoryManager::open(name);
  m.publish(filled(7.0), "complete", 7);
  LockGuard g = m.lock();
  auto* h = static_cast<Header*>(const_cast<void*>(m.base()));
  auto* live =
      reinterpret_cast<RecordMeta*>(reinterpret_cast<unsigned char*>(h) + m.geometry().record_offset[0]);
  seqlock::begin_slot_write(live->lock);
  auto* v = const_cast<double*>(static_cast<const double*>(m.live_values()));
  for (int i = 0; i < 50; ++i) v[i] = -1.0;
  ::raise(SIGKILL);
}

}  // namespace

TEST(Crash, WriterKilledMidWriteLosesNothing) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  const int status = in_child([&] { die_mid_write(name.str()); });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  Snapshot s = m.read();  // never waits, never torn: served from the backup
  EXPECT_EQ(s.seq, 1u);
  EXPECT_EQ(s.counter, 7u);
  EXPECT_EQ(s.values<double>(), filled(7.0));
  EXPECT_EQ(s.message, "complete");
  EXPECT_EQ(m.publish(std::nullopt, std::uint64_t{8}), 2u) << "the next writer recovers and goes on";
  EXPECT_EQ(m.recoveries(), 1u);
  s = m.read();
  EXPECT_EQ(s.values<double>(), filled(7.0)) << "the live slot was restored from the backup";
  EXPECT_EQ(s.counter, 8u);
}

TEST(Crash, WriterKilledHoldingTheLockWedgesNobody) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "before", 1);
  in_child([&] {
    auto c = SharedMemoryManager::open(name.str());
    WriteTransaction tx = c.begin_write();
    tx.counter = 99;
    ::raise(SIGKILL);
  });
  EXPECT_EQ(m.read().counter, 1u);
  m.write([](WriteTransaction& tx) { tx.counter += 1; });
  EXPECT_EQ(m.read().counter, 2u);
}

TEST(Crash, WithoutBackupATornRecordIsReportedNotReturned) {
  ScopedName name;
  CreateOptions o;
  o.backup = false;
  auto m = SharedMemoryManager::create(name.str(), o);
  in_child([&] { die_mid_write(name.str()); });
  EXPECT_THROW(m.read(), TornRecordError);
  EXPECT_THROW(m.publish(std::nullopt, std::uint64_t{1}), TornRecordError)
      << "a partial publish cannot heal it";
  EXPECT_EQ(m.publish(filled(3.0), std::string_view("healed"), std::uint64_t{3}), 2u);
  Snapshot s = m.read();
  EXPECT_EQ(s.values<double>(), filled(3.0));
  EXPECT_EQ(s.message, "healed");
}

TEST(CrossProcess, ReaderNeverSeesATornRecord) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{1024}, Dtype::UInt64, 32});
  pid_t writer = ::fork();
  if (writer == 0) {
    auto w = SharedMemoryManager::open(name.str());
    std::vector<std::uint64_t> v(1024);
    for (std::uint64_t k = 1;; ++k) {
      std::fill(v.begin(), v.end(), k);
      w.publish(v, std::nullopt, k);
    }
  }
  m.wait(0, 10s);
  std::vector<std::uint64_t> out(1024);
  std::uint64_t last = 0;
  int distinct = 0;
  for (int i = 0; i < 20000; ++i) {
    RecordInfo info = m.read_into(out.data(), out.size() * 8);
    for (auto w : out) ASSERT_EQ(w, info.counter) << "torn snapshot";
    ASSERT_GE(info.seq, last);
    distinct += info.seq != last;
    last = info.seq;
  }
  ::kill(writer, SIGKILL);
  ::waitpid(writer, nullptr, 0);
  EXPECT_GT(distinct, 1);
}

// ---- segments that would hang a naive reader ----

TEST(Corrupt, BothSlotsMarkedInProgressIsALayoutErrorNotAHang) {
  ScopedName name;
  auto w = SharedMemoryManager::create(name.str());
  slot_meta(w, 0)->lock.store(7);
  slot_meta(w, 1)->lock.store(9);
  auto r = SharedMemoryManager::open(name.str(), {true});
  EXPECT_THROW(r.read(), LayoutError);
}

TEST(Corrupt, StalledWriterWithoutBackupTimesOut) {
  ScopedName name;
  CreateOptions o;
  o.backup = false;
  auto w = SharedMemoryManager::create(name.str(), o);
  LockGuard g = w.lock();          // a live owner (this process) ...
  slot_meta(w, 0)->lock.store(3);  // ... that never finishes its write
  OpenOptions ro{true};
  ro.stall_timeout = 50ms;
  auto r = SharedMemoryManager::open(name.str(), ro);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(r.read(), TornRecordError);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  slot_meta(w, 0)->lock.store(4);
}

// Regression (found by the loom model, now rust/xshm/tests/loom.rs, and seen as seq regressions in the
// crash campaign): a writer that dies after completing the live slot but before refreshing the
// backup leaves both slots even, the backup stale. Recovery must refresh it, or the next
// publish sends readers back to the older record.
TEST(Crash, DeathBetweenLiveAndBackupRefreshesTheBackup) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(filled(1.0), "one", 1);
  in_child([&] {
    auto c = SharedMemoryManager::open(name.str());
    LockGuard g = c.lock();
    RecordMeta* live = slot_meta(c, 0);
    const std::uint64_t odd = seqlock::begin_slot_write(live->lock);
    detail::MetaImage img = detail::load_meta(live);
    img.seq = 2;
    img.counter = 2;
    detail::store_meta(live, img);
    seqlock::end_slot_write(live->lock, odd);  // live complete, backup untouched: then killed
    ::raise(SIGKILL);
  });
  EXPECT_EQ(detail::load_meta(slot_meta(m, 1)).seq, 1u) << "precondition: the backup is stale";
  { LockGuard g = m.lock(); }  // the next writer recovers
  EXPECT_EQ(detail::load_meta(slot_meta(m, 1)).seq, 2u) << "recovery refreshed the stale backup";
  EXPECT_EQ(m.seq(), 2u) << "and published the live slot's sequence";
  EXPECT_EQ(m.read().counter, 2u);
  // publish() numbers itself from the live slot, not the header: the two must agree here.
  EXPECT_EQ(m.publish(filled(3.0), "three", 3), 3u);
  EXPECT_EQ(m.seq(), 3u);
  EXPECT_EQ(m.read().seq, 3u);
}
