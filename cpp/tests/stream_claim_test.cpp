// Stream claims (zero-copy send): the slot itself is filled and committed, a dropped claim is
// stepped over (skipped, not lost), an open claim holds back readers and lapping writers, and
// a claimant killed mid-claim wedges nobody.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "xshm/xshm.hpp"

using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

xshm::StreamOptions opts(std::uint64_t capacity, std::uint64_t max_bytes = 64,
                         xshm::Backpressure bp = xshm::Backpressure::block) {
  xshm::StreamOptions o;
  o.capacity = capacity;
  o.max_bytes = max_bytes;
  o.backpressure = bp;
  return o;
}

std::string text(const xshm::Message& m) { return std::string(m.data.begin(), m.data.end()); }

int reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// received + lost + skipped = cursor - start, from the reader's own entry.
void expect_accounted(const xshm::Stream& s, const xshm::StreamReader& r) {
  const xshm::ReaderEntry* e = s.segment()->reader(r.index());
  EXPECT_EQ(r.received() + r.lost() + r.skipped(), r.cursor() - e->start.load());
  EXPECT_EQ(e->received.load() + e->lost.load() + e->skipped.load(), e->cursor.load() - e->start.load());
}

void put(xshm::StreamClaim& c, std::string_view s) { std::memcpy(c.data(), s.data(), s.size()); }

/// A child that opens the stream, claims one slot, reports its seq through `fd` and sleeps.
pid_t fork_claimant(const std::string& name, int fd) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(name);
    xshm::StreamClaim c = mine.claim(8, 5s);
    const std::uint64_t seq = c.seq();
    (void)!::write(fd, &seq, sizeof seq);
    ::pause();
    ::_exit(0);
  }
  return pid;
}

}  // namespace

TEST(StreamClaim, CommitsInPlaceInsideTheMapping) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  xshm::StreamClaim c = s.claim(5);
  ASSERT_TRUE(c.is_open());
  EXPECT_EQ(c.size(), 5u);
  EXPECT_EQ(c.seq(), 0u);
  // The buffer is the slot itself: a claim that staged a copy elsewhere would fail here.
  const auto* ring = static_cast<const unsigned char*>(s.segment()->ring.data());
  EXPECT_GE(c.data(), ring);
  EXPECT_LE(c.data() + c.size(), ring + s.segment()->ring.size());
  EXPECT_EQ(c.data(), xshm::detail::StreamSegment::payload(s.segment()->slot(0)));
  put(c, "hello");
  c.commit();
  EXPECT_FALSE(c.is_open());
  EXPECT_THROW(c.commit(), xshm::ClosedError);
  xshm::Message m = r.recv(1s);
  EXPECT_EQ(m.seq, 0u);
  EXPECT_EQ(text(m), "hello");
  EXPECT_EQ(m.writer_pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_GT(m.timestamp_ns, 0);
  EXPECT_EQ(s.send("next"), 1u);  // sends and claims share one sequence
  EXPECT_EQ(text(r.recv(1s)), "next");
}

TEST(StreamClaim, CommitsFewerBytesThanClaimed) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  xshm::StreamClaim c = s.claim(64);
  put(c, "abc");
  EXPECT_THROW(c.commit(65), xshm::ArgumentError);
  EXPECT_TRUE(c.is_open());  // a wrong size leaves it open
  c.commit(3);
  EXPECT_EQ(text(r.recv(1s)), "abc");
  xshm::StreamClaim empty = s.claim(0);
  empty.commit();
  EXPECT_EQ(r.recv(1s).size, 0u);
}

TEST(StreamClaim, RefusesWhatSendRefuses) {
  ScopedName n, f;
  auto s = xshm::Stream::create(n.str(), opts(4));
  EXPECT_THROW(s.claim(65), xshm::MessageTooLongError);
  EXPECT_THROW(s.try_claim(65), xshm::MessageTooLongError);
  xshm::StreamOpenOptions ro;
  ro.readonly = true;
  auto o = xshm::Stream::open(n.str(), ro);
  EXPECT_THROW(o.claim(1), xshm::ReadOnlyError);
  EXPECT_THROW(o.try_claim(1), xshm::ReadOnlyError);
  xshm::StreamOptions fo = opts(4, 8);
  fo.dtype = xshm::Dtype::Float32;
  fo.shape = {2};
  auto frames = xshm::Stream::create(f.str(), fo);
  EXPECT_THROW(frames.claim(4), xshm::ArgumentError);
  xshm::StreamClaim c = frames.claim(8);
  EXPECT_THROW(c.commit(4), xshm::ArgumentError);  // a frame is whole
  c.commit();
  EXPECT_EQ(s.head(), 0u);  // the refused claims took no sequence number
}

TEST(StreamClaim, ADroppedClaimIsSkippedNotLost) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  s.send("a");
  xshm::StreamClaim c = s.claim(8);
  put(c, "never");
  c.drop();
  EXPECT_FALSE(c.is_open());
  c.drop();                                 // idempotent
  { xshm::StreamClaim gone = s.claim(8); }  // destroyed open: dropped
  xshm::StreamClaim moved = s.claim(8);
  xshm::StreamClaim target;
  target = std::move(moved);  // the move keeps one claim, dropped once below
  target = xshm::StreamClaim{};
  s.send("b");
  xshm::Message m = r.recv(1s);
  EXPECT_EQ(text(m), "a");
  m = r.recv(1s);
  EXPECT_EQ(text(m), "b");
  EXPECT_EQ(m.seq, 4u);
  EXPECT_EQ(r.received(), 2u);
  EXPECT_EQ(r.skipped(), 3u);
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(s.abandoned(), 0u);
  expect_accounted(s, r);
}

TEST(StreamClaim, TryClaimOnAFullBlockStreamIsNulloptAndClaimTimesOut) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2));
  auto r = s.reader(xshm::Start::latest);
  s.send("1");
  s.send("2");
  EXPECT_FALSE(s.try_claim(8).has_value());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(s.claim(8, 20ms), xshm::StreamFullError);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
  EXPECT_EQ(s.head(), 2u);
  r.recv(1s);
  std::optional<xshm::StreamClaim> c = s.try_claim(8);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->seq(), 2u);
  c->commit(1);
}

TEST(StreamClaim, AnOpenClaimHoldsBackTheReadersBehindIt) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  xshm::StreamClaim c = s.claim(8);
  s.send("second");
  EXPECT_FALSE(r.try_recv().has_value());
  // Past the hole check: its writer lives, so the reader keeps waiting, in order.
  EXPECT_THROW(r.recv(3 * xshm::kHoleCheck), xshm::WaitTimeoutError);
  EXPECT_EQ(r.cursor(), 0u);
  std::thread committer([&] {
    put(c, "first");
    c.commit(5);
  });
  EXPECT_EQ(text(r.recv(5s)), "first");
  committer.join();
  EXPECT_EQ(text(r.recv(1s)), "second");
  EXPECT_EQ(r.lost() + r.skipped(), 0u);
}

TEST(StreamClaim, AClaimantKilledMidClaimIsLostAndWedgesNobody) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  s.send("before");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = fork_claimant(n.str(), fds[1]);
  std::uint64_t seq = 0;
  ASSERT_EQ(::read(fds[0], &seq, sizeof seq), static_cast<ssize_t>(sizeof seq));
  EXPECT_EQ(seq, 1u);
  s.send("after");
  EXPECT_EQ(text(r.recv(1s)), "before");
  EXPECT_FALSE(r.try_recv().has_value());  // held back by the live claim
  ::kill(pid, SIGKILL);
  reap(pid);
  const auto t0 = std::chrono::steady_clock::now();
  xshm::Message m = r.recv(5s);  // the hole is judged within kHoleCheck
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(text(m), "after");
  EXPECT_EQ(r.lost(), 1u);  // its writer died: lost, not skipped
  EXPECT_EQ(r.skipped(), 0u);
  EXPECT_EQ(s.abandoned(), 1u);
  for (int i = 0; i < 10; ++i) {  // the ring laps the dead claim's slot
    s.send("x", 1, 1s);
    EXPECT_EQ(text(r.recv(1s)), "x");
  }
  expect_accounted(s, r);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(StreamClaim, AWriterLapsADeadClaimantsSlotWithNoReader) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2, 64, xshm::Backpressure::drop_oldest));
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = fork_claimant(n.str(), fds[1]);
  std::uint64_t seq = 0;
  ASSERT_EQ(::read(fds[0], &seq, sizeof seq), static_cast<ssize_t>(sizeof seq));
  s.send("1");
  EXPECT_FALSE(s.try_send("2", 1).has_value());  // would overwrite the live claim
  ::kill(pid, SIGKILL);
  reap(pid);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.send("y", 1, 1s), static_cast<std::uint64_t>(i + 2));
  EXPECT_EQ(s.abandoned(), 1u);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(StreamClaim, ADropOldestWriterWaitsForAnOpenClaimItWouldLap) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4, 64, xshm::Backpressure::drop_oldest));
  auto r = s.reader(xshm::Start::latest);
  xshm::StreamClaim c = s.claim(8);
  for (int i = 1; i < 4; ++i) s.send(std::to_string(i));
  EXPECT_FALSE(s.try_send("4", 1).has_value());
  EXPECT_THROW(s.send("4", 1, 20ms), xshm::StreamFullError);
  std::atomic<bool> sent{false};
  std::uint64_t seq = 0;
  std::thread writer([&] {
    seq = s.send("4", 1, 10s);
    sent = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(sent.load()) << "a writer overwrote an open claim";
  put(c, "0");
  c.commit(1);
  writer.join();
  EXPECT_EQ(seq, 4u);
  // The claim was whole when published: the reader gets it, or counts it lost when lapped.
  std::vector<std::string> got;
  while (auto m = r.try_recv()) got.push_back(text(*m));
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), "4");
  EXPECT_EQ(r.received() + r.lost(), 5u);
  expect_accounted(s, r);
}

TEST(StreamClaimStress, ThreadsClaimCommitAndDropInOrder) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(16, 16));
  auto r = s.reader(xshm::Start::latest);
  constexpr int kWriters = 3, kEach = 20000;
  const unsigned seed = std::random_device{}();
  std::printf("claim stress: seed %u, %d writers x %d claims\n", seed, kWriters, kEach);
  std::atomic<std::uint64_t> committed{0}, dropped{0};
  std::vector<std::thread> ws;
  for (int w = 0; w < kWriters; ++w)
    ws.emplace_back([&, w] {
      auto mine = xshm::Stream::open(n.str());
      std::mt19937 rng(seed + static_cast<unsigned>(w));
      for (int i = 0; i < kEach; ++i) {
        const std::uint32_t v[2] = {static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(i)};
        std::optional<xshm::StreamClaim> c;
        if (rng() % 4 == 0) {
          c = mine.try_claim(16);
          if (!c) c = mine.claim(16, 10s);
        } else {
          c = mine.claim(16, 10s);
        }
        std::memcpy(c->data(), v, sizeof v);
        if (rng() % 5 == 0) {
          c->drop();
          ++dropped;
        } else {
          c->commit(sizeof v);
          ++committed;
        }
      }
    });
  std::vector<std::int64_t> last(kWriters, -1);
  std::set<std::pair<std::uint32_t, std::uint32_t>> seen;
  std::uint64_t prev_seq = 0;
  bool any = false;
  auto take = [&](const xshm::Message& m) {
    ASSERT_EQ(m.data.size(), 8u);
    std::uint32_t v[2];
    std::memcpy(v, m.data.data(), 8);
    ASSERT_LT(v[0], static_cast<std::uint32_t>(kWriters));
    ASSERT_GT(static_cast<std::int64_t>(v[1]), last[v[0]]) << "writer " << v[0] << " out of order";
    ASSERT_TRUE(seen.insert({v[0], v[1]}).second) << "duplicate";
    ASSERT_TRUE(!any || m.seq > prev_seq);
    last[v[0]] = v[1];
    prev_seq = m.seq;
    any = true;
  };
  const auto end = std::chrono::steady_clock::now() + 60s;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < end) {
    if (auto m = r.recv_many(64, 100ms); !m.empty())
      for (auto& x : m) take(x);
    done = committed.load() + dropped.load() == std::uint64_t{kWriters} * kEach &&
           r.received() == committed.load();
  }
  for (auto& t : ws) t.join();
  while (auto m = r.try_recv()) take(*m);
  EXPECT_EQ(r.received(), committed.load());
  EXPECT_EQ(r.skipped(), dropped.load());
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(r.cursor(), s.head());
  expect_accounted(s, r);
  std::printf("claim stress: %llu committed, %llu dropped\n",
              static_cast<unsigned long long>(committed.load()),
              static_cast<unsigned long long>(dropped.load()));
}
