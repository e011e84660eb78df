// Streams: order, backpressure, losses counted, and the crash promise (a writer killed between
// its claim and its commit, a writer killed holding the mutex, a reader killed while it gates).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
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

/// Waits for a child and returns its exit status (or 128 + signal).
int reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST(Stream, SendsAndReceivesInOrder) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.send("msg " + std::to_string(i)), static_cast<std::uint64_t>(i));
  for (int i = 0; i < 5; ++i) {
    xshm::Message m = r.recv(1s);
    EXPECT_EQ(m.seq, static_cast<std::uint64_t>(i));
    EXPECT_EQ(text(m), "msg " + std::to_string(i));
    EXPECT_EQ(m.writer_pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_GT(m.timestamp_ns, 0);
  }
  EXPECT_FALSE(r.try_recv().has_value());
  EXPECT_THROW(r.recv(1ms), xshm::WaitTimeoutError);
  EXPECT_EQ(r.received(), 5u);
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(s.head(), 5u);
}

TEST(Stream, EmptyMessagesAndFullSizeMessages) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4, 100));
  auto r = s.reader();
  s.send("", 0);
  std::string big(100, 'x');
  s.send(big);
  EXPECT_EQ(r.recv(1s).data.size(), 0u);
  EXPECT_EQ(text(r.recv(1s)), big);
  EXPECT_THROW(s.send(std::string(101, 'y')), xshm::MessageTooLongError);
}

TEST(Stream, KindsAreTold) {
  ScopedName a, b;
  auto s = xshm::Stream::create(a.str(), opts(4));
  auto m = xshm::SharedMemoryManager::create(b.str());
  try {
    xshm::SharedMemoryManager::open(a.str());
    FAIL() << "a stream opened as a record";
  } catch (const xshm::LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find("stream"), std::string::npos) << e.what();
  }
  try {
    xshm::Stream::open(b.str());
    FAIL() << "a record opened as a stream";
  } catch (const xshm::LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find("is a record"), std::string::npos) << e.what();
  }
}

TEST(Stream, OpenChecksAndExistOk) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(16, 32));
  auto o = xshm::Stream::open(n.str());
  EXPECT_EQ(o.capacity(), 16u);
  EXPECT_EQ(o.max_bytes(), 32u);
  EXPECT_THROW(xshm::Stream::create(n.str(), opts(16, 32)), std::system_error);
  auto same = opts(16, 32);
  same.exist_ok = true;
  EXPECT_NO_THROW(xshm::Stream::create(n.str(), same));
  auto other = opts(8, 32);
  other.exist_ok = true;
  try {
    xshm::Stream::create(n.str(), other);
    FAIL();
  } catch (const xshm::LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find("capacity 16 there, 8 asked"), std::string::npos) << e.what();
  }
  EXPECT_THROW(xshm::Stream::create(n.str() + "x", opts(0)), xshm::ArgumentError);
}

TEST(Stream, BlockWaitsForTheSlowestReaderAndTimesOut) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  for (int i = 0; i < 4; ++i) s.send("x");
  EXPECT_FALSE(s.try_send("y", 1).has_value());
  EXPECT_THROW(s.send("y", 1, 20ms), xshm::StreamFullError);
  r.recv(1s);
  EXPECT_TRUE(s.try_send("y", 1).has_value());
  // A writer blocked on a full ring goes on when the reader takes one.
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    r.recv(1s);
  });
  EXPECT_EQ(s.send("z", 1, 5s), 5u);
  t.join();
  // ... or when the reader closes.
  std::thread t2([&] {
    std::this_thread::sleep_for(20ms);
    r.close();
  });
  EXPECT_EQ(s.send("w", 1, 5s), 6u);
  t2.join();
}

TEST(Stream, BlockWithoutReadersKeepsTheLastCapacityAndCountsDropped) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  for (int i = 0; i < 10; ++i) s.send(std::to_string(i));
  EXPECT_EQ(s.dropped(), 6u);
  auto r = s.reader(xshm::Start::oldest);
  for (int i = 6; i < 10; ++i) EXPECT_EQ(text(r.recv(1s)), std::to_string(i));
  EXPECT_EQ(r.lost(), 0u);
}

TEST(Stream, DropOldestCountsExactlyWhatALappedReaderLost) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4, 64, xshm::Backpressure::drop_oldest));
  auto r = s.reader(xshm::Start::latest);
  for (int i = 0; i < 11; ++i) s.send(std::to_string(i));  // never waits
  std::vector<std::string> got;
  while (auto m = r.try_recv()) got.push_back(text(*m));
  EXPECT_EQ(r.received() + r.lost(), 11u);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), "10");
  for (std::size_t i = 1; i < got.size(); ++i) EXPECT_EQ(std::stoi(got[i]), std::stoi(got[i - 1]) + 1);
  EXPECT_EQ(s.dropped(), 0u);  // a reader was attached: its own `lost` counts
}

TEST(Stream, SendManyAndRecvMany) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader();
  std::vector<std::string> texts;
  for (int i = 0; i < 20; ++i) texts.push_back("m" + std::to_string(i));
  std::vector<std::pair<const void*, std::size_t>> items;
  for (auto& t : texts) items.emplace_back(t.data(), t.size());
  std::thread reader([&] {
    std::size_t next = 0;
    while (next < texts.size()) {
      for (auto& m : r.recv_many(5, 5s)) {
        EXPECT_EQ(m.seq, next);
        EXPECT_EQ(text(m), texts[next]);
        ++next;
      }
    }
  });
  EXPECT_EQ(s.send_many(items, 5s), 19u);  // more than the ring: sent in pieces as room frees
  reader.join();
}

TEST(Stream, ManyWritersOneTotalOrderNoLossNoDuplicate) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(16, 16));
  auto r = s.reader(xshm::Start::latest);
  constexpr int kWriters = 3, kEach = 5000;
  std::vector<std::thread> ws;
  for (int w = 0; w < kWriters; ++w)
    ws.emplace_back([&, w] {
      auto mine = xshm::Stream::open(n.str());
      for (int i = 0; i < kEach; ++i) {
        const std::uint32_t v[2] = {static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(i)};
        mine.send(v, sizeof v, 10s);
      }
    });
  std::vector<int> next(kWriters, 0);
  for (int k = 0; k < kWriters * kEach; ++k) {
    xshm::Message m = r.recv(10s);
    ASSERT_EQ(m.seq, static_cast<std::uint64_t>(k));
    ASSERT_EQ(m.data.size(), 8u);
    std::uint32_t v[2];
    std::memcpy(v, m.data.data(), 8);
    ASSERT_LT(v[0], static_cast<std::uint32_t>(kWriters));
    ASSERT_EQ(v[1], static_cast<std::uint32_t>(next[v[0]])) << "writer " << v[0] << " out of order";
    ++next[v[0]];
  }
  for (auto& t : ws) t.join();
  EXPECT_EQ(r.lost(), 0u);
}

TEST(Stream, ReaderTableFullIsAClearError) {
  ScopedName n;
  auto o = opts(4);
  o.max_readers = 2;
  auto s = xshm::Stream::create(n.str(), o);
  auto a = s.reader();
  auto b = s.reader();
  try {
    s.reader();
    FAIL();
  } catch (const xshm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_readers"), std::string::npos) << e.what();
  }
  a.close();
  EXPECT_NO_THROW(s.reader());
}

TEST(Stream, ReadonlyHandleReceivesButDoesNotSend) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  xshm::StreamOpenOptions ro;
  ro.readonly = true;
  auto o = xshm::Stream::open(n.str(), ro);
  auto r = o.reader(xshm::Start::latest);
  EXPECT_THROW(o.send("x"), xshm::ReadOnlyError);
  s.send("hello");
  EXPECT_EQ(text(r.recv(1s)), "hello");
}

TEST(Stream, AWriterKilledBetweenClaimAndCommitIsSkippedAndCounted) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  s.send("before");
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    // Claim a slot and die before the commit, as a SIGKILL mid-copy would leave it.
    {
      auto seg = mine.segment();
      auto lock = xshm::stream_impl::StreamLock::acquire(*seg, std::nullopt);
      std::uint64_t first = 0;
      if (xshm::stream_impl::claim_locked(*seg, 1, first) != xshm::stream_impl::Claim::made) ::_exit(2);
    }
    ::_exit(0);
  }
  ASSERT_EQ(reap(pid), 0);
  s.send("after");
  EXPECT_EQ(text(r.recv(1s)), "before");
  const auto t0 = std::chrono::steady_clock::now();
  xshm::Message m = r.recv(5s);  // the hole is judged within kHoleCheck and skipped
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(text(m), "after");
  EXPECT_EQ(m.seq, 2u);
  EXPECT_EQ(r.lost(), 1u);
  EXPECT_EQ(s.abandoned(), 1u);
}

TEST(Stream, AWriterKilledHoldingTheMutexIsRecovered) {
  XSHM_SKIP_UNDER_TSAN();
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    auto seg = mine.segment();
    pthread_mutex_lock(seg->mutex());
    // Mark the slot and die before head moves: the mutex goes with EOWNERDEAD.
    xshm::stream_impl::ensure_writer(*seg);
    seg->slot(0)->word.store(xshm::slot_word::make(0, xshm::slot_word::kWriting));
    ::_exit(0);
  }
  ASSERT_EQ(reap(pid), 0);
  EXPECT_EQ(s.send("next", 4, 1s), 1u);  // recovered: seq 0 abandoned, head past it
  EXPECT_EQ(s.recoveries(), 1u);
  xshm::Message m = r.recv(1s);
  EXPECT_EQ(text(m), "next");
  EXPECT_EQ(r.lost(), 1u);
}

TEST(Stream, AReaderKilledWhileGatingReleasesTheWriter) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    auto r = mine.reader(xshm::Start::latest);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  for (int i = 0; i < 4; ++i) s.send("x");
  EXPECT_THROW(s.send("y", 1, 30ms), xshm::StreamFullError);  // the live reader gates it
  ::kill(pid, SIGKILL);
  reap(pid);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(s.send("y", 1, 5s), 4u);  // its reader is reaped within kGateCheck
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(Stream, AHandleInheritedAcrossForkIsRefused) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader();
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 0;
    try {
      s.send("x");
      code = 1;
    } catch (const xshm::Error& e) {
      code = std::string(e.what()).find("fork") != std::string::npos ? 0 : 2;
    }
    ::_exit(code);
  }
  EXPECT_EQ(reap(pid), 0);
  // The parent's reader still gates (the child closed its inherited descriptor, not ours).
  for (int i = 0; i < 4; ++i) s.send("x");
  EXPECT_FALSE(s.try_send("y", 1).has_value());
}

namespace {

constexpr std::size_t kWords = 512;  // a 4 KiB message: every word holds its sequence number

struct Tally {
  std::uint64_t messages = 0, torn = 0, disorder = 0;
};

/// A writer that laps the readers of a 2-slot "drop_oldest" ring as fast as it can, until
/// `stop`.
void flood(const std::string& name, std::atomic<bool>& stop) {
  auto s = xshm::Stream::open(name);
  std::uint64_t words[kWords];
  for (std::uint64_t k = 0; !stop.load(std::memory_order_relaxed); ++k) {
    for (auto& w : words) w = k;
    s.send(words, sizeof words);
  }
}

bool consistent(const unsigned char* bytes) {
  std::uint64_t first = 0;
  std::memcpy(&first, bytes, 8);
  for (std::size_t i = 1; i < kWords; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, bytes + 8 * i, 8);
    if (w != first) return false;
  }
  return true;
}

}  // namespace

// The negative control first: a reader that copies a committed slot without looking at the
// slot word again afterwards (no seqlock re-check) takes torn messages from a lapping writer.
// The stream's reader, on the same ring, never does, and counts every message it skipped.
TEST(StreamStress, AnUncheckedCopyTearsTheStreamNever) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2, kWords * 8, xshm::Backpressure::drop_oldest));
  const auto seg = s.segment();
  std::atomic<bool> stop{false};
  Tally naive;
  {
    std::thread w([&] { flood(n.str(), stop); });
    unsigned char buf[kWords * 8];
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (naive.torn < 20 && std::chrono::steady_clock::now() < end) {
      const std::uint64_t head = s.head();
      if (head == 0) continue;
      xshm::SlotHeader* sl = seg->slot(head - 1);
      const std::uint64_t word = sl->word.load(std::memory_order_acquire);
      if (xshm::slot_word::tag(word) != xshm::slot_word::kCommitted) continue;
      xshm::seqlock::load_bytes(buf, xshm::detail::StreamSegment::payload(sl), sizeof buf);  // no re-check
      ++naive.messages;
      naive.torn += !consistent(buf);
    }
    stop = true;
    w.join();
  }
  EXPECT_GT(naive.torn, 0u) << "the unchecked copy never tore in " << naive.messages << " messages";

  stop = false;
  Tally checked;
  auto r = s.reader(xshm::Start::latest);
  const std::uint64_t start = s.head();
  std::thread w([&] { flood(n.str(), stop); });
  std::uint64_t prev = 0;
  bool any = false;
  const auto end = std::chrono::steady_clock::now() + 2s;
  unsigned char buf[kWords * 8];
  while (std::chrono::steady_clock::now() < end) {
    // The visitor may run again when the copy is overwritten: only a true return is a message.
    if (!r.try_visit([&](const unsigned char* src, const xshm::MessageInfo& info) {
          xshm::seqlock::load_bytes(buf, src, static_cast<std::size_t>(info.size));
        }))
      continue;
    checked.torn += !consistent(buf);
    std::uint64_t k = 0;
    std::memcpy(&k, buf, 8);
    checked.disorder += any && k <= prev;
    prev = k;
    any = true;
  }
  stop = true;
  w.join();
  while (r.try_recv()) {
  }
  checked.messages = r.received();
  EXPECT_GT(checked.messages, 0u);
  EXPECT_EQ(checked.torn, 0u);
  EXPECT_EQ(checked.disorder, 0u);
  EXPECT_EQ(r.received() + r.lost(), s.head() - start) << "received + lost = sent since it attached";
}

namespace {

/// In a child: open the stream, claim one slot and die before committing it.
void die_mid_send(const std::string& name) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(name);
    auto seg = mine.segment();
    {
      auto lock = xshm::stream_impl::StreamLock::acquire(*seg, std::nullopt);
      std::uint64_t first = 0;
      if (xshm::stream_impl::claim_locked(*seg, 1, first) != xshm::stream_impl::Claim::made) ::_exit(2);
    }
    ::_exit(0);
  }
  ASSERT_EQ(reap(pid), 0);
}

}  // namespace

TEST(StreamCrash, APollingReaderJudgesAHoleToo) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  die_mid_send(n.str());
  s.send("after");
  std::optional<xshm::Message> m;
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (!m && std::chrono::steady_clock::now() < end) m = r.try_recv();  // never waits itself
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(text(*m), "after");
  EXPECT_EQ(r.lost(), 1u);
}

TEST(StreamCrash, AWriterEntryReusedTwiceNeverRevivesADeadWritersSlot) {
  ScopedName n;
  auto o = opts(8);
  o.max_writers = 1;  // every writer takes entry 0 in turn
  auto s = xshm::Stream::create(n.str(), o);
  auto r = s.reader(xshm::Start::latest);
  die_mid_send(n.str());  // generation 1 dies holding seq 0
  {
    auto b = xshm::Stream::open(n.str());  // takes the dead writer's entry, then closes cleanly
    b.send("b");
  }
  auto c = xshm::Stream::open(n.str());  // takes it again: its generation must not be 1
  c.send("c");
  EXPECT_EQ(text(r.recv(5s)), "b");
  EXPECT_EQ(text(r.recv(5s)), "c");
  EXPECT_EQ(r.lost(), 1u);
}

TEST(StreamCrash, RecoveryNeverReusesASequenceAReaderAbandoned) {
  XSHM_SKIP_UNDER_TSAN();
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    auto seg = mine.segment();
    pthread_mutex_lock(seg->mutex());
    xshm::stream_impl::ensure_writer(*seg);
    seg->slot(0)->word.store(xshm::slot_word::make(0, xshm::slot_word::kWriting));
    ::_exit(0);  // dies holding the mutex, seq 0 marked, head still 0
  }
  ASSERT_EQ(reap(pid), 0);
  EXPECT_FALSE(r.try_recv().has_value());
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(r.try_recv().has_value());  // judged: abandoned by the reader, before any recovery
  EXPECT_EQ(r.lost(), 1u);
  EXPECT_EQ(s.send("next", 4, 1s), 1u);  // recovery steps past the abandoned 0
  xshm::Message m = r.recv(1s);
  EXPECT_EQ(m.seq, 1u);
  EXPECT_EQ(text(m), "next");
}

TEST(StreamCrash, AForkedChildDoesNotKeepADeadParentsReaderAlive) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t parent = ::fork();
  if (parent == 0) {
    auto mine = xshm::Stream::open(n.str());
    auto r = mine.reader(xshm::Start::latest);
    const pid_t child = ::fork();
    if (child == 0) {  // a child that inherits the mappings and lives on
      ::sleep(30);
      ::_exit(0);
    }
    (void)!::write(ready[1], &child, sizeof child);
    ::pause();
    ::_exit(0);
  }
  pid_t child = 0;
  ASSERT_EQ(::read(ready[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
  for (int i = 0; i < 4; ++i) s.send("x");
  EXPECT_THROW(s.send("y", 1, 30ms), xshm::StreamFullError);
  ::kill(parent, SIGKILL);
  reap(parent);
  EXPECT_EQ(s.send("y", 1, 5s), 4u);  // the grandchild's inherited mappings hold no lock
  ::kill(child, SIGKILL);             // reparented to init, which reaps it
  ::close(ready[0]);
  ::close(ready[1]);
}

namespace {

/// Polls `cond` for up to 5 s.
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

// A process killed while asleep in a wait must not leave its count in the header: every send
// (or receive) would then pay a futex wake syscall for ever.
TEST(StreamCrash, AReaderKilledAsleepGivesItsWaiterCountBack) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8, 64, xshm::Backpressure::drop_oldest));
  const xshm::StreamHeader* h = s.header();
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    auto r = mine.reader(xshm::Start::latest);
    (void)r.recv();  // sleeps: nothing is sent
    ::_exit(0);
  }
  ASSERT_TRUE(eventually([&] { return h->data_waiters.load() == 1; }));
  ::kill(pid, SIGKILL);
  reap(pid);
  EXPECT_EQ(h->data_waiters.load(), 1u);  // nobody gave it back yet
  s.send("x");                            // its wake wakes nobody: the sender sweeps
  EXPECT_EQ(h->data_waiters.load(), 0u);
  EXPECT_EQ(s.segment()->reader(0)->sleeping.load(), 0u);
}

TEST(StreamCrash, AWriterKilledAsleepGivesItsWaiterCountBack) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  const xshm::StreamHeader* h = s.header();
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(n.str());
    for (int i = 0; i < 5; ++i) mine.send("x");  // the fifth sleeps: the reader reads nothing
    ::_exit(0);
  }
  ASSERT_TRUE(eventually([&] { return h->space_waiters.load() == 1; }));
  ::kill(pid, SIGKILL);
  reap(pid);
  EXPECT_EQ(h->space_waiters.load(), 1u);
  (void)r.recv(1s);  // its wake of writers wakes nobody: the reader sweeps
  EXPECT_EQ(h->space_waiters.load(), 0u);
}

TEST(StreamCrash, ALiveSleeperIsNeverSwept) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8, 64, xshm::Backpressure::drop_oldest));
  const xshm::StreamHeader* h = s.header();
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto mine = xshm::Stream::open(n.str());
    auto r = mine.reader(xshm::Start::latest);
    got = text(r.recv(10s)) == "x";
  });
  ASSERT_TRUE(eventually([&] { return h->data_waiters.load() == 1; }));
  xshm::detail::StreamSegment& seg = *s.segment();
  seg.last_sweep_ns.store(0);
  xshm::stream_impl::sweep_sleeping_readers(seg);  // it holds its lock: alive
  EXPECT_EQ(h->data_waiters.load(), 1u);
  s.send("x");
  t.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(h->data_waiters.load(), 0u);
}

// A writer killed between its commit and its wake: a reader asleep with no timeout still takes
// the message, within kLostWakeCheck.
TEST(StreamCrash, AWakeLostWithItsWriterDelaysAReaderAtMostASecond) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto r = s.reader(xshm::Start::latest);
  std::atomic<bool> asleep{false};
  std::thread commit_without_wake([&] {
    while (s.header()->data_waiters.load() == 0) std::this_thread::sleep_for(1ms);
    asleep = true;
    auto seg = s.segment();
    std::uint64_t first = 0;
    {
      auto lock = xshm::stream_impl::StreamLock::acquire(*seg, std::nullopt);
      ASSERT_EQ(xshm::stream_impl::claim_locked(*seg, 1, first), xshm::stream_impl::Claim::made);
    }
    ASSERT_TRUE(xshm::stream_impl::fill_and_commit(*seg, first, "late", 4));  // no notify_readers
  });
  const auto t0 = std::chrono::steady_clock::now();
  xshm::Message m = r.recv();  // no timeout
  const auto took = std::chrono::steady_clock::now() - t0;
  commit_without_wake.join();
  EXPECT_TRUE(asleep.load());
  EXPECT_EQ(text(m), "late");
  EXPECT_LT(took, xshm::kLostWakeCheck + 2s);
}

TEST(Stream, AReaderEntryRecordsWhereItStarted) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4, 64, xshm::Backpressure::drop_oldest));
  for (int i = 0; i < 6; ++i) s.send("x");
  auto r = s.reader(xshm::Start::oldest);
  const xshm::ReaderEntry* e = s.segment()->reader(r.index());
  EXPECT_EQ(e->start.load(), 2u);
  for (int i = 0; i < 9; ++i) s.send("y");  // laps it
  while (r.try_recv()) {
  }
  EXPECT_EQ(e->received.load() + e->lost.load(), e->cursor.load() - e->start.load());
  EXPECT_GT(e->lost.load(), 0u);
}

TEST(Stream, ACorruptSlotIsRefusedWhereItStands) {
  ScopedName n;
  xshm::StreamOptions o = opts(4, 8);
  o.dtype = xshm::Dtype::Float32;
  o.shape = {2};
  auto s = xshm::Stream::create(n.str(), o);
  auto r = s.reader(xshm::Start::latest);
  const float frame[2] = {1, 2};
  s.send(frame, sizeof frame);
  xshm::SlotHeader* sl = s.segment()->slot(0);
  sl->length = 4;  // a short frame
  EXPECT_THROW(r.recv(1s), xshm::LayoutError);
  EXPECT_THROW(r.recv(1s), xshm::LayoutError);  // again: the cursor stays on it
  EXPECT_EQ(r.cursor(), 0u);
  sl->length = 8;
  EXPECT_EQ(r.recv(1s).size, 8u);
  s.segment()->slot(1)->word.store(xshm::slot_word::make(1, 0));  // a word with no tag
  EXPECT_THROW(r.try_recv(), xshm::LayoutError);
}

TEST(Stream, InterruptStopsAReceiveWaitingInAnotherThread) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  std::atomic<int> outcome{0};
  std::thread consumer([&] {
    try {
      (void)r.recv();  // no timeout: only the interrupt ends it
      outcome = 1;
    } catch (const xshm::ClosedError&) {
      outcome = 2;
    }
  });
  ASSERT_TRUE(eventually([&] { return s.header()->data_waiters.load() == 1; }));
  r.interrupt();
  consumer.join();
  EXPECT_EQ(outcome.load(), 2);
  EXPECT_THROW(r.try_recv(), xshm::ClosedError);
  EXPECT_EQ(s.header()->data_waiters.load(), 0u);
  r.close();
}

// docs/LAYOUT.md 23.4, "A writer handle counts once": two threads of one handle asleep for room
// count the handle once in space_waiters, and once both have left the count and the entry's
// mark are back to 0 (a count per thread left one behind for ever: readers then paid a wake
// for nobody per message).
TEST(Stream, TwoThreadsOfOneHandleAsleepForRoomCountItOnce) {
  ScopedName n;
  xshm::StreamOptions o;
  o.capacity = 1;
  o.max_bytes = 8;
  auto s = xshm::Stream::create(n.str(), o);
  auto r = s.reader(xshm::Start::latest);
  s.send("full");
  std::thread a([&] { s.send("a", 10s); });
  std::thread b([&] { s.send("b", 10s); });
  const xshm::StreamHeader* h = s.header();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  // Both are asleep once the entry is marked and neither send has been woken: give the second
  // thread time to reach its sleep too.
  while (h->space_waiters.load() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h->space_waiters.load(), 1u) << "the handle is counted once, not per thread";
  for (int i = 0; i < 3; ++i) (void)r.recv(5s);
  a.join();
  b.join();
  EXPECT_EQ(h->space_waiters.load(), 0u);
  const int w = s.segment()->writer_index.load();
  ASSERT_GE(w, 0);
  EXPECT_EQ(s.segment()->writer(static_cast<std::uint32_t>(w))->sleeping.load(), 0u);
}

// A mutex in the segment whose kind word is not the one xshm's init sets is refused with
// LayoutError before glibc reads it: glibc asserts (aborting the process) on some kinds, such
// as priority-protect with a bad ceiling (found by tests/fuzz/fuzz_stream.cpp).
TEST(Stream, AMutexOfAnotherKindIsRefusedBeforeGlibcReadsIt) {
#if defined(__GLIBC__) && defined(__LP64__)
  ScopedName n;
  xshm::StreamOptions o;
  o.capacity = 4;
  o.max_bytes = 8;
  auto s = xshm::Stream::create(n.str(), o);
  auto member = s.reader(xshm::Start::latest, "g");
  auto seg = s.segment();
  auto corrupt = [](pthread_mutex_t* m) {
    int* kind = reinterpret_cast<int*>(reinterpret_cast<unsigned char*>(m) + 16);
    const int was = *kind;
    *kind = 64 | 128 | (0x7f << 19);  // process-shared priority-protect, a ceiling glibc asserts on
    return was;
  };
  const int header_kind = corrupt(seg->mutex());
  EXPECT_THROW(s.send("x"), xshm::LayoutError);
  *reinterpret_cast<int*>(reinterpret_cast<unsigned char*>(seg->mutex()) + 16) = header_kind;
  s.send("x");
  const std::uint32_t gi = seg->reader(member.index())->group.load() - 1;
  const int group_kind = corrupt(seg->group_mutex(gi));
  EXPECT_THROW(member.try_recv(), xshm::LayoutError);
  *reinterpret_cast<int*>(reinterpret_cast<unsigned char*>(seg->group_mutex(gi)) + 16) = group_kind;
  EXPECT_EQ(member.try_recv()->seq, 0u);
#else
  GTEST_SKIP() << "the kind word is glibc's (64-bit)";
#endif
}
