// Stream reader groups (work queues): each message goes to exactly one member, a group outlives
// its members and resumes at its cursor, a group with a live member gates a "block" writer,
// and a member killed holding the group mutex wedges nobody and keeps the group's accounts.
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

xshm::StreamOptions opts(std::uint64_t capacity, xshm::Backpressure bp = xshm::Backpressure::block) {
  xshm::StreamOptions o;
  o.capacity = capacity;
  o.max_bytes = 16;
  o.backpressure = bp;
  return o;
}

std::string text(const xshm::Message& m) { return std::string(m.data.begin(), m.data.end()); }

int reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

xshm::GroupInfo group_named(xshm::Stream& s, const std::string& name) {
  for (auto& g : s.groups())
    if (g.name == name) return g;
  ADD_FAILURE() << "no group " << name;
  return {};
}

void expect_accounted(const xshm::GroupInfo& g) {
  EXPECT_EQ(g.received + g.lost + g.skipped, g.cursor - g.start)
      << "received " << g.received << " lost " << g.lost << " skipped " << g.skipped << " cursor " << g.cursor
      << " start " << g.start;
}

}  // namespace

TEST(StreamGroup, EveryMessageGoesToExactlyOneMember) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(64));
  auto a = s.reader(xshm::Start::latest, "work");
  auto b = s.reader(xshm::Start::latest, "work");
  auto all = s.reader(xshm::Start::latest);
  EXPECT_EQ(a.group(), "work");
  EXPECT_EQ(all.group(), "");
  constexpr int kWriters = 2, kEach = 3000, kTotal = kWriters * kEach;
  std::atomic<int> taken{0};
  using Got = std::vector<std::pair<std::uint32_t, std::uint32_t>>;
  auto member = [&](xshm::StreamReader& r, Got& got) {
    while (taken.load() < kTotal) {
      std::optional<xshm::MessageInfo> info;
      std::uint32_t v[4];
      info = r.recv_into(v, sizeof v, 20ms);
      if (!info) continue;
      got.emplace_back(v[0], v[1]);
      ++taken;
    }
  };
  Got got_a, got_b, got_all;
  std::thread ta([&] { member(a, got_a); });
  std::thread tb([&] { member(b, got_b); });
  std::thread tall([&] {
    for (int k = 0; k < kTotal; ++k) {
      xshm::Message m = all.recv(10s);
      std::uint32_t v[2];
      std::memcpy(v, m.data.data(), sizeof v);
      got_all.emplace_back(v[0], v[1]);
    }
  });
  std::vector<std::thread> ws;
  for (int w = 0; w < kWriters; ++w)
    ws.emplace_back([&, w] {
      auto mine = xshm::Stream::open(n.str());
      for (int i = 0; i < kEach; ++i) {
        const std::uint32_t v[2] = {static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(i)};
        mine.send(v, sizeof v, 10s);
      }
    });
  for (auto& t : ws) t.join();
  ta.join();
  tb.join();
  tall.join();
  std::printf("group: member a took %zu, member b took %zu of %d\n", got_a.size(), got_b.size(), kTotal);
  std::set<std::pair<std::uint32_t, std::uint32_t>> seen;
  for (const Got* got : {&got_a, &got_b}) {
    std::vector<std::int64_t> last(kWriters, -1);
    for (auto [w, i] : *got) {
      ASSERT_LT(w, static_cast<std::uint32_t>(kWriters));
      EXPECT_GT(static_cast<std::int64_t>(i), last[w]) << "writer " << w << " out of order in a member";
      last[w] = i;
      EXPECT_TRUE(seen.insert({w, i}).second) << "message " << w << "/" << i << " went to two members";
    }
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kTotal));  // the union is every message
  EXPECT_EQ(got_all.size(), static_cast<std::size_t>(kTotal));
  EXPECT_EQ(a.received() + b.received(), static_cast<std::uint64_t>(kTotal));
  EXPECT_EQ(all.lost(), 0u);
  const xshm::GroupInfo g = group_named(s, "work");
  EXPECT_EQ(g.received, static_cast<std::uint64_t>(kTotal));
  EXPECT_EQ(g.lost, 0u);
  EXPECT_EQ(g.members, 2u);
  EXPECT_EQ(g.cursor, s.head());
  EXPECT_EQ(a.cursor(), s.head());
  EXPECT_EQ(a.lag(), 0u);
  expect_accounted(g);
}

TEST(StreamGroup, OutlivesItsMembersAndResumesAtItsCursor) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  {
    auto m = s.reader(xshm::Start::latest, "log");
    for (int i = 0; i < 3; ++i) s.send("m" + std::to_string(i));
    EXPECT_EQ(text(m.recv(1s)), "m0");
  }
  xshm::GroupInfo g = group_named(s, "log");
  EXPECT_EQ(g.members, 0u);
  EXPECT_EQ(g.cursor, 1u);
  EXPECT_EQ(g.received, 1u);
  s.send("m3");
  auto back = s.reader(xshm::Start::latest, "log");  // `start` applies only at creation
  EXPECT_EQ(back.cursor(), 1u);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(text(back.recv(1s)), "m" + std::to_string(i));
  g = group_named(s, "log");
  EXPECT_EQ(g.members, 1u);
  EXPECT_EQ(g.received, 4u);
  EXPECT_EQ(g.start, 0u);
  expect_accounted(g);
}

TEST(StreamGroup, AGroupWithALiveMemberGatesABlockWriterAndOneWithNoneDoesNot) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto m = s.reader(xshm::Start::latest, "gate");
  for (int i = 0; i < 4; ++i) s.send("x");
  EXPECT_FALSE(s.try_send("y", 1).has_value());
  try {
    s.send("y", 1, 20ms);
    FAIL() << "the group did not gate";
  } catch (const xshm::StreamFullError& e) {
    EXPECT_NE(std::string(e.what()).find("group gate"), std::string::npos) << e.what();
  }
  EXPECT_EQ(text(m.recv(1s)), "x");
  EXPECT_TRUE(s.try_send("y", 1).has_value());  // a member moved the group cursor
  m.close();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(s.try_send("z", 1).has_value());  // no live member: no gate
  // A member that comes back counts what the group missed as lost, like a lapped reader.
  auto back = s.reader(xshm::Start::latest, "gate");
  std::vector<std::string> got;
  while (auto msg = back.try_recv()) got.push_back(text(*msg));
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), "z");
  const xshm::GroupInfo g = group_named(s, "gate");
  EXPECT_GT(g.lost, 0u);
  EXPECT_EQ(g.cursor, s.head());
  expect_accounted(g);
}

TEST(StreamGroup, ATableFullAndBadNamesAreClearErrors) {
  ScopedName n, none;
  auto o = opts(4);
  o.max_groups = 2;
  auto s = xshm::Stream::create(n.str(), o);
  auto a = s.reader(xshm::Start::latest, "a");
  auto b = s.reader(xshm::Start::latest, "b");
  try {
    s.reader(xshm::Start::latest, "c");
    FAIL();
  } catch (const xshm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_groups"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(s.reader(xshm::Start::latest, "a"));  // joining needs no new entry
  EXPECT_THROW(s.reader(xshm::Start::latest, ""), xshm::ArgumentError);
  EXPECT_THROW(s.reader(xshm::Start::latest, std::string(41, 'g')), xshm::ArgumentError);
  EXPECT_THROW(s.reader(xshm::Start::latest, "a/b"), xshm::ArgumentError);
  EXPECT_THROW(s.reader(xshm::Start::latest, "tab\there"), xshm::ArgumentError);
  EXPECT_EQ(s.groups().size(), 2u);
  auto zero = opts(4);
  zero.max_groups = 0;
  auto z = xshm::Stream::create(none.str(), zero);
  EXPECT_THROW(z.reader(xshm::Start::latest, "a"), xshm::Error);
  EXPECT_NO_THROW(z.reader(xshm::Start::latest));
  EXPECT_EQ(z.geometry().groups_offset, 0u);
  EXPECT_EQ(s.geometry().groups_offset, s.geometry().writers_offset + 64u * s.max_writers());
}

// A reader entry left by a member that died in a step names a group whose mutex is corrupt (a
// group entry never created: its mutex bytes are zero): the attach that would finish the step
// is refused, and gives the entry's liveness lock back. A leaked lock would make a later dead
// reader of that entry look alive for as long as this handle lives.
TEST(StreamGroup, AnAttachRefusedByACorruptGroupGivesItsLockBack) {
  ScopedName n;
  auto o = opts(4);
  o.max_groups = 2;
  auto s = xshm::Stream::create(n.str(), o);
  const std::shared_ptr<xshm::detail::StreamSegment>& seg = s.segment();
  seg->reader(0)->hold.store(xshm::stream_impl::hold_word(7, xshm::stream_impl::GroupStep::copy));
  seg->reader(0)->group.store(2);
  EXPECT_THROW(s.reader(xshm::Start::oldest), xshm::LayoutError);
  // Asked from a description of our own: nobody holds entry 0's byte.
  xshm::Fd fd = xshm::detail::shm_open_checked(n.str(), O_RDONLY, 0);
  EXPECT_FALSE(xshm::liveness::held_by_other(fd.get(), seg->reader_lock_offset(0)));
}

TEST(StreamGroup, FortyByteNamesFitAndGroupsAreTold) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  const std::string name(40, 'n');
  auto m = s.reader(xshm::Start::latest, name);
  EXPECT_EQ(m.group(), name);
  ASSERT_EQ(s.groups().size(), 1u);
  EXPECT_EQ(s.groups()[0].name, name);
  // Another handle (a reopen) sees the same group.
  auto o = xshm::Stream::open(n.str());
  EXPECT_EQ(o.groups().size(), 1u);
}

namespace {

/// In a child: joins group "g", takes the group mutex and marks itself mid-copy of the
/// group's next message, tells the parent, and waits to be killed.
pid_t fork_member_holding_the_mutex(const std::string& name, int fd) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto mine = xshm::Stream::open(name);
    auto r = mine.reader(xshm::Start::oldest, "g");
    auto seg = mine.segment();
    xshm::ReaderEntry* me = seg->reader(r.index());
    const std::uint32_t gi = me->group.load() - 1;
    if (pthread_mutex_lock(seg->group_mutex(gi)) != 0) ::_exit(2);
    me->hold.store(
        xshm::stream_impl::hold_word(seg->group(gi)->cursor.load(), xshm::stream_impl::GroupStep::copy));
    char c = 1;
    (void)!::write(fd, &c, 1);
    ::pause();
    ::_exit(0);
  }
  return pid;
}

}  // namespace

TEST(StreamGroupCrash, AMemberKilledHoldingTheGroupMutexWedgesNobody) {
  XSHM_SKIP_UNDER_TSAN();
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto mine = s.reader(xshm::Start::oldest, "g");
  for (int i = 0; i < 3; ++i) s.send("m" + std::to_string(i));
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = fork_member_holding_the_mutex(n.str(), fds[1]);
  char c = 0;
  ASSERT_EQ(::read(fds[0], &c, 1), 1);
  EXPECT_FALSE(mine.try_recv().has_value());  // the mutex is held by a live member
  ::kill(pid, SIGKILL);
  reap(pid);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(text(mine.recv(5s)), "m1");  // m0 went with the member that held it: lost
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(text(mine.recv(1s)), "m2");
  const xshm::GroupInfo g = group_named(s, "g");
  EXPECT_EQ(g.lost, 1u);
  EXPECT_EQ(g.received, 2u);
  expect_accounted(g);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(StreamGroupCrash, MembersKilledAtRandomKeepTheGroupsAccounts) {
  XSHM_SKIP_UNDER_TSAN();
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(16));
  auto mine = s.reader(xshm::Start::latest, "g");
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  constexpr int kRounds = 20;
  std::printf("group crash: seed %u, %d rounds\n", seed, kRounds);
  std::uint64_t sent = 0;
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      auto st = xshm::Stream::open(n.str());
      auto r = st.reader(xshm::Start::latest, "g");
      char c = 1;
      (void)!::write(fds[1], &c, 1);
      for (;;) (void)r.try_recv();  // takes as fast as it can until killed
    }
    char c = 0;
    ASSERT_EQ(::read(fds[0], &c, 1), 1);
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 3000);
    while (std::chrono::steady_clock::now() < kill_at) {
      if (s.try_send("x", 1)) ++sent;
      if (rng() % 2 == 0) (void)mine.try_recv();
    }
    ::kill(pid, SIGKILL);
    reap(pid);
    ::close(fds[0]);
    ::close(fds[1]);
    // Nobody is wedged: the surviving member takes what is left, then a message sent now.
    auto drain = [&] {
      const auto end = std::chrono::steady_clock::now() + 5s;
      while (mine.cursor() < s.head() && std::chrono::steady_clock::now() < end) (void)mine.try_recv();
      return mine.cursor() == s.head();
    };
    ASSERT_TRUE(drain()) << "round " << round << ": the group is wedged";
    ASSERT_NO_THROW(s.send("y", 1, 5s));
    ++sent;
    ASSERT_TRUE(drain()) << "round " << round << ": the group is wedged";
    expect_accounted(group_named(s, "g"));
  }
  const xshm::GroupInfo g = group_named(s, "g");
  EXPECT_EQ(g.cursor - g.start, sent);
  std::printf("group crash: %llu sent, group received %llu, lost %llu (this member took %llu)\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(g.received),
              static_cast<unsigned long long>(g.lost), static_cast<unsigned long long>(mine.received()));
}

// docs/LAYOUT.md 26.8.3: the recovery after EOWNERDEAD is idempotent. A locker killed in the
// middle of it leaves stores of a recovery cut short; the next locker reruns it from what is
// stored. Each case below is a member's step cut short, then every prefix of its recovery's
// stores, then a full recovery: the group always ends with received + lost + skipped = cursor
// - start, the cursor past the message (or the message left at it), and no hold.
TEST(StreamGroupCrash, RecoveryCutShortAndRerunKeepsTheAccounts) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(8));
  auto member = s.reader(xshm::Start::latest, "g");
  auto seg = s.segment();
  xshm::ReaderEntry* me = seg->reader(member.index());
  const std::uint32_t gi = me->group.load() - 1;
  xshm::GroupEntry* g = seg->group(gi);
  using xshm::stream_impl::GroupStep;
  using xshm::stream_impl::hold_word;
  struct State {
    std::uint64_t hold, cursor, received, lost;
  };
  // Start 10 (group created at 10), 5 received and 2 lost before message 17.
  const std::uint64_t start = 10, c = 17;
  const std::vector<State> cut = {
      {hold_word(c, GroupStep::copy), c, 5, 2},      // copy: killed before its cursor store
      {hold_word(c, GroupStep::copy), c + 1, 5, 2},  // ... after it, before received
      {hold_word(c, GroupStep::copy), c + 1, 6, 2},  // ... after received, before hold = 0
      {hold_word(c, GroupStep::copy), c, 5, 3},  // a recovery that counted before moving the cursor (the old
                                                 // order): a rerun must not count it again
      {hold_word(c, GroupStep::lose), c, 5, 2},  // a recovery rewrote it, then died
      {hold_word(c, GroupStep::lose), c + 1, 5, 2},  // ... after its cursor store
      {hold_word(c, GroupStep::lose), c + 1, 4, 2},  // ... after received - 1
      {hold_word(c, GroupStep::lose), c + 3, 5, 2},  // a member's lose of a lap, cut
      {hold_word(c, GroupStep::skip), c + 1, 5, 2},  // a member's skip, cut
  };
  for (const State& st : cut) {
    SCOPED_TRACE("hold step " + std::to_string(st.hold & 3) + " cursor " + std::to_string(st.cursor) +
                 " received " + std::to_string(st.received));
    g->start.store(start);
    g->cursor.store(st.cursor);
    g->received.store(st.received);
    g->lost.store(st.lost);
    g->skipped.store(0);
    me->hold.store(st.hold);
    xshm::stream_impl::recover_group(*seg, gi);
    EXPECT_EQ(me->hold.load(), 0u);
    EXPECT_EQ(g->received.load() + g->lost.load() + g->skipped.load(), g->cursor.load() - g->start.load());
    EXPECT_LE(g->received.load(), st.received);  // never counts a message received twice
    const std::uint64_t after = g->cursor.load();
    xshm::stream_impl::recover_group(*seg, gi);  // a rerun with nothing held changes nothing
    EXPECT_EQ(g->cursor.load(), after);
  }
  member.close();
}
