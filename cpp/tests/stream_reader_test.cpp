// StreamReader::wait(): it waits as a receive does and leaves the message for the take (the
// Python binding waits without the GIL and copies with it held, into its own object); a lap
// between the wait and the take is counted as lost by the take; interrupt() and the hook end it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "test_util.hpp"
#include "xshm/xshm.hpp"

using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

xshm::StreamOptions opts(std::uint64_t capacity, xshm::Backpressure bp = xshm::Backpressure::block) {
  xshm::StreamOptions o;
  o.capacity = capacity;
  o.max_bytes = 64;
  o.backpressure = bp;
  return o;
}

std::string text(const xshm::Message& m) { return std::string(m.data.begin(), m.data.end()); }

template <class F>
bool eventually(F cond) {
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST(StreamReaderWait, LeavesTheMessageForTheTake) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  EXPECT_FALSE(r.wait(1ms));
  s.send("one");
  EXPECT_TRUE(r.wait(0ns));
  EXPECT_TRUE(r.wait(1s));  // still there: nothing was taken
  EXPECT_EQ(r.cursor(), 0u);
  EXPECT_EQ(r.received(), 0u);
  std::optional<xshm::Message> m = r.try_recv();
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(text(*m), "one");
  EXPECT_FALSE(r.wait(1ms));
  EXPECT_EQ(s.header()->data_waiters.load(), 0u);
}

TEST(StreamReaderWait, WakesForAMessageSentWhileItSleeps) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  std::atomic<int> ready{0};
  std::thread consumer([&] { ready = r.wait() ? 1 : 2; });  // no timeout: only a message ends it
  ASSERT_TRUE(eventually([&] { return s.header()->data_waiters.load() == 1; }));
  s.send("late");
  consumer.join();
  EXPECT_EQ(ready.load(), 1);
  EXPECT_EQ(text(r.recv(0ns)), "late");
}

// Under "drop_oldest" a writer may lap the message the wait found before the take: the take
// counts the lap as lost and takes the oldest message it may, so received + lost = cursor - start.
TEST(StreamReaderWait, ALapBetweenTheWaitAndTheTakeIsCountedLost) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4, xshm::Backpressure::drop_oldest));
  auto r = s.reader(xshm::Start::latest);
  s.send("0");
  ASSERT_TRUE(r.wait(1s));
  for (int i = 1; i < 9; ++i) s.send(std::to_string(i));  // laps the ring twice
  std::optional<xshm::Message> m = r.try_recv();
  ASSERT_TRUE(m.has_value());
  EXPECT_GT(m->seq, 0u);
  EXPECT_EQ(text(*m), std::to_string(m->seq));
  EXPECT_EQ(r.lost(), m->seq);
  const xshm::ReaderEntry* e = s.segment()->reader(r.index());
  EXPECT_EQ(e->received.load() + e->lost.load(), e->cursor.load() - e->start.load());
  std::uint64_t next = m->seq + 1;
  while (std::optional<xshm::Message> more = r.try_recv()) EXPECT_EQ(more->seq, next++);
  EXPECT_EQ(next, 9u);
}

TEST(StreamReaderWait, InterruptEndsIt) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  std::atomic<int> outcome{0};
  std::thread consumer([&] {
    try {
      outcome = r.wait() ? 1 : 2;
    } catch (const xshm::ClosedError&) {
      outcome = 3;
    }
  });
  ASSERT_TRUE(eventually([&] { return s.header()->data_waiters.load() == 1; }));
  r.interrupt();
  consumer.join();
  EXPECT_EQ(outcome.load(), 3);
  EXPECT_EQ(s.header()->data_waiters.load(), 0u);
}

TEST(StreamReaderWait, TheHookRunsBetweenSlicesAndMayEndIt) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  int calls = 0;
  auto hook = [&] {
    if (++calls == 3) throw std::runtime_error("interrupted by the hook");
  };
  EXPECT_THROW(r.wait(std::nullopt, 0ns, hook, 1ms), std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(s.header()->data_waiters.load(), 0u);
  s.send("after");
  EXPECT_EQ(text(r.recv(0ns)), "after");  // the reader is as it was
}
