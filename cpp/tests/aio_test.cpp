// Waiting without a thread per wait: prepared sleeps (SleepTicket) handed to an io_uring of
// futex waits (FutexRing) or to the process's notifier (Notifier), woken by publishes and sends;
// deadlines, withdrawals and the sleeper counts given back.
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "xshm/futex_ring.hpp"
#include "xshm/manager.hpp"
#include "xshm/notifier.hpp"
#include "xshm/stream/stream.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&p, 1, ms);
    if (n >= 0) return n == 1;
    if (errno != EINTR) return false;  // a ring's completion interrupts the poll: poll again
  }
}

std::int64_t in_ms(int ms) { return notifier_impl::now_ns() + std::int64_t{ms} * 1'000'000; }

}  // namespace

TEST(PrepareWait, ArmedOnlyWhileThereIsNothingAndCountsTheSleeper) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  auto& waiters = m.segment().header()->waiters;
  {
    SleepTicket t = m.prepare_wait(0);
    ASSERT_TRUE(t.armed());
    EXPECT_EQ(waiters.load(), 1u) << "writers must wake for it";
    EXPECT_FALSE(t.changed());
    m.publish(std::vector<double>(100, 1.0));
    EXPECT_TRUE(t.changed());
  }
  EXPECT_EQ(waiters.load(), 0u) << "the ticket gives its count back";
  EXPECT_FALSE(m.prepare_wait(0).armed()) << "seq 1 > 0: nothing to sleep for";
  EXPECT_EQ(waiters.load(), 0u);
}

TEST(FutexRing, APublishFromAnotherThreadCompletesTheWait) {
  if (!FutexRing::supported()) GTEST_SKIP() << "no io_uring futex waits on this kernel";
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  FutexRing ring;
  SleepTicket t = m.prepare_wait(0);
  ring.wait(t, 11);
  EXPECT_FALSE(readable(ring.fd(), 50));
  std::thread pub([&] { m.publish(std::vector<double>(100, 2.0)); });
  ASSERT_TRUE(readable(ring.fd(), 5000));
  pub.join();
  EXPECT_EQ(ring.drain(), std::vector<std::uint64_t>{11});
  t.release();
  EXPECT_EQ(m.segment().header()->waiters.load(), 0u);
}

TEST(FutexRing, AWordThatMovedOnCompletesAtOnceAndCancelCompletes) {
  if (!FutexRing::supported()) GTEST_SKIP() << "no io_uring futex waits on this kernel";
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  FutexRing ring;
  SleepTicket t = m.prepare_wait(0);
  m.publish(std::vector<double>(100, 3.0));  // after the load: the kernel's compare fails
  ring.wait(t, 5);
  ASSERT_TRUE(readable(ring.fd(), 5000));
  EXPECT_EQ(ring.drain(), std::vector<std::uint64_t>{5});
  SleepTicket t2 = m.prepare_wait(1);
  ring.wait(t2, 6);
  ring.cancel(6);
  ASSERT_TRUE(readable(ring.fd(), 5000));
  EXPECT_EQ(ring.drain(), std::vector<std::uint64_t>{6});
}

TEST(Notifier, PostsOnAPublishAtADeadlineAndNotAfterUnwatch) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  Notifier& n = Notifier::instance();
  auto inbox = std::make_shared<Inbox>();

  SleepTicket t = m.prepare_wait(0);
  EXPECT_NE(n.watch(t, inbox, 1), 0u);
  EXPECT_FALSE(readable(inbox->fd(), 50));
  m.publish(std::vector<double>(100, 4.0));
  ASSERT_TRUE(readable(inbox->fd(), 5000));
  EXPECT_EQ(inbox->drain(), std::vector<std::uint64_t>{1});
  t.release();

  SleepTicket t2 = m.prepare_wait(1);
  const auto t0 = std::chrono::steady_clock::now();
  n.watch(t2, inbox, 2, in_ms(60));
  ASSERT_TRUE(readable(inbox->fd(), 5000));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 55ms);
  EXPECT_EQ(inbox->drain(), std::vector<std::uint64_t>{2});

  const std::uint64_t id = n.watch(t2, inbox, 3);
  n.unwatch(id);
  t2.release();
  m.publish(std::vector<double>(100, 5.0));
  EXPECT_FALSE(readable(inbox->fd(), 100));
  EXPECT_EQ(n.pending(), 0u);
  EXPECT_EQ(m.segment().header()->waiters.load(), 0u);
  EXPECT_LE(n.threads(), 2u);
}

TEST(Notifier, AWordThatMovedOnPostsAtOnceAndOwnersArePostedOnClose) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  Notifier& n = Notifier::instance();
  auto inbox = std::make_shared<Inbox>();
  SleepTicket t = m.prepare_wait(0);
  m.publish(std::vector<double>(100, 6.0));
  EXPECT_EQ(n.watch(t, inbox, 7), 0u);
  EXPECT_EQ(inbox->drain(), std::vector<std::uint64_t>{7});
  SleepTicket t2 = m.prepare_wait(1);
  int owner = 0;
  n.watch(t2, inbox, 8, Notifier::kNever, &owner);
  n.post_owner(&owner);
  ASSERT_TRUE(readable(inbox->fd(), 5000));
  EXPECT_EQ(inbox->drain(), std::vector<std::uint64_t>{8});
  EXPECT_EQ(n.pending(), 0u);
}

TEST(StreamPrepareWait, ASendWakesTheReadersTicket) {
  ScopedName name;
  StreamOptions opt;
  opt.capacity = 8;
  opt.max_bytes = 64;
  auto s = Stream::create(name.str(), opt);
  StreamReader r = s.reader();
  SleepTicket t = r.prepare_wait();
  ASSERT_TRUE(t.armed());
  ASSERT_TRUE(t.recheck().has_value()) << "a reader looks again now and then (a dead writer's slot)";
  auto inbox = std::make_shared<Inbox>();
  Notifier::instance().watch(t, inbox, 9);
  const unsigned char msg[3] = {1, 2, 3};
  s.send(msg, sizeof msg);
  ASSERT_TRUE(readable(inbox->fd(), 5000));
  EXPECT_EQ(inbox->drain(), std::vector<std::uint64_t>{9});
  t.release();
  EXPECT_FALSE(r.prepare_wait().armed()) << "a message is there: nothing to sleep for";
  EXPECT_TRUE(r.try_recv().has_value());
}

TEST(FutexRing, AForkedChildLeavesTheParentsWaitsAlone) {
  if (!FutexRing::supported()) GTEST_SKIP() << "no io_uring futex waits on this kernel";
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  FutexRing ring;
  SleepTicket t = m.prepare_wait(0);
  ring.wait(t, 21);
  const pid_t child = ::fork();
  if (child == 0) {
    ring.cancel(21);  // the child's copy: must not end the parent's wait
    int code = ring.drain().empty() ? 0 : 1;
    try {
      ring.wait(t, 22);
      code |= 2;
    } catch (const Error&) {
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(readable(ring.fd(), 50)) << "the parent's wait is still armed";
  m.publish(std::vector<double>(100, 7.0));
  ASSERT_TRUE(readable(ring.fd(), 5000));
  EXPECT_EQ(ring.drain(), std::vector<std::uint64_t>{21});
}

TEST(StreamPrepareWait, OneTicketAtATimePerReader) {
  ScopedName name;
  StreamOptions opt;
  opt.capacity = 8;
  opt.max_bytes = 64;
  auto s = Stream::create(name.str(), opt);
  StreamReader r = s.reader();
  SleepTicket t = r.prepare_wait();
  ASSERT_TRUE(t.armed());
  EXPECT_THROW(r.prepare_wait(), ArgumentError) << "a second would leave a sleeper counted for good";
  t.release();
  EXPECT_EQ(s.segment()->header()->data_waiters.load(), 0u);
  SleepTicket again = r.prepare_wait();
  EXPECT_TRUE(again.armed());
}
