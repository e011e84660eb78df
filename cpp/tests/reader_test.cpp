// The reader's stall detection, driven directly: which lock-word states are a verdict
// (corrupt, torn by a dead writer, stalled past the limit) and which are not.
#include "xshm/reader.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

/// A pid that no process has: a child that has exited and been reaped.
std::uint32_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return static_cast<std::uint32_t>(pid);
}

SharedMemoryManager no_backup(const ScopedName& name) {
  CreateOptions o;
  o.backup = false;
  return SharedMemoryManager::create(name.str(), o);
}

SharedMemoryManager reader_of(const ScopedName& name, std::chrono::nanoseconds stall) {
  OpenOptions o;
  o.readonly = true;
  o.stall_timeout = stall;
  return SharedMemoryManager::open(name.str(), o);
}

}  // namespace

TEST(CheckStuck, BothSlotsOddWithBackupIsALayoutError) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  const detail::Segment& s = m.segment();
  s.meta(0)->lock.store(7);
  s.meta(1)->lock.store(9);
  reader::Stuck st;
  EXPECT_NO_THROW(reader::check_stuck(s, st)) << "the first look only records the words";
  EXPECT_THROW(reader::check_stuck(s, st), LayoutError);
}

TEST(CheckStuck, OneOddSlotWithBackupIsNoVerdict) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  const detail::Segment& s = m.segment();
  s.meta(0)->lock.store(7);
  s.header()->owner_pid.store(dead_pid());
  reader::Stuck st;
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(reader::check_stuck(s, st)) << "the backup serves the readers";
}

TEST(CheckStuck, NoBackupDeadOwnerIsTornAtOnce) {
  ScopedName name;
  auto m = no_backup(name);
  auto r = reader_of(name, std::chrono::hours(1));
  const detail::Segment& s = r.segment();
  m.segment().meta(0)->lock.store(3);
  m.segment().header()->owner_pid.store(dead_pid());
  reader::Stuck st;
  EXPECT_NO_THROW(reader::check_stuck(s, st));
  EXPECT_THROW(reader::check_stuck(s, st), TornRecordError)
      << "no stall limit to wait for: its writer is gone";
  if (!HasFailure()) {  // (it would spin forever otherwise)
    EXPECT_THROW(r.read(), TornRecordError);
  }
}

TEST(CheckStuck, NoBackupOwnerAboveInt32MaxIsDeadNotAProcessGroup) {
  // Cast to pid_t, 0xFFFFFFFF is -1: kill(-1, 0) succeeds ("every process"), so a corrupt
  // owner_pid used to pass for a live writer and the tear was reported as a stall, late.
  ScopedName name;
  auto m = no_backup(name);
  auto r = reader_of(name, std::chrono::hours(1));
  m.segment().meta(0)->lock.store(3);
  for (std::uint32_t owner : {0xFFFFFFFFu, 0x80000000u}) {
    m.segment().header()->owner_pid.store(owner);
    reader::Stuck st;
    EXPECT_NO_THROW(reader::check_stuck(r.segment(), st));
    EXPECT_THROW(reader::check_stuck(r.segment(), st), TornRecordError) << "owner_pid " << owner;
  }
  EXPECT_FALSE(detail::process_alive(0xFFFFFFFFu));
  EXPECT_FALSE(detail::process_alive(0));
  EXPECT_TRUE(detail::process_alive(static_cast<std::uint32_t>(::getpid())));
}

TEST(CheckStuck, NoBackupLiveOwnerIsTornOnlyAfterTheStallTimeout) {
  ScopedName name;
  auto m = no_backup(name);
  auto r = reader_of(name, 50ms);
  const detail::Segment& s = r.segment();
  m.segment().meta(0)->lock.store(3);
  m.segment().header()->owner_pid.store(static_cast<std::uint32_t>(::getpid()));  // alive
  reader::Stuck st;
  EXPECT_NO_THROW(reader::check_stuck(s, st));
  EXPECT_NO_THROW(reader::check_stuck(s, st)) << "a live writer gets the stall timeout";
  std::this_thread::sleep_for(60ms);
  EXPECT_THROW(reader::check_stuck(s, st), TornRecordError);
}

TEST(CheckStuck, AChangingLockWordIsNoVerdict) {
  ScopedName name;
  auto m = no_backup(name);
  auto r = reader_of(name, 1ns);
  const detail::Segment& s = r.segment();
  m.segment().header()->owner_pid.store(dead_pid());
  reader::Stuck st;
  for (std::uint64_t odd = 3; odd < 23; odd += 2) {
    m.segment().meta(0)->lock.store(odd);  // a writer at work: a new odd word at every look
    EXPECT_NO_THROW(reader::check_stuck(s, st)) << odd;
    std::this_thread::sleep_for(1ms);
  }
}

TEST(CheckStuck, DefaultStallLimitScalesWithTheValues) {
  ScopedName name;
  CreateOptions o;
  o.backup = false;
  o.shape = {1u << 20};  // 8 MiB of float64
  auto m = SharedMemoryManager::create(name.str(), o);
  EXPECT_EQ(reader::stall_limit(m.segment()), 2s + std::chrono::nanoseconds(4 * (8 << 20)));
  auto r = reader_of(name, 123ms);
  EXPECT_EQ(reader::stall_limit(r.segment()), 123ms);
}

TEST(Snapshot, TextChecksUtf8AndReportsTheOffset) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  m.publish(std::string_view("ok \xC3\xA9"), std::uint64_t{1});
  EXPECT_EQ(m.read().text(), "ok \xC3\xA9");
  m.publish(std::string_view("ab\xFF"
                             "cd"),
            std::uint64_t{2});
  const Snapshot s = m.read();
  EXPECT_EQ(s.message,
            "ab\xFF"
            "cd")
      << "the raw bytes stay available";
  try {
    (void)s.text();
    ADD_FAILURE() << "text() accepted bytes that are not UTF-8";
  } catch (const MessageDecodeError& e) {
    EXPECT_EQ(e.offset(), 2u);
  }
}
