// StreamReader::recv_view(): a message read in place. The view's data lies inside the stream's
// mapping; the cursor moves only at release (received then); a held view gates a "block"
// writer like an unread message; under "drop_oldest" a lapping writer overwrites it, which the
// view says (overwritten) and release() reports (OverwrittenError, counted lost); receives are
// refused while a view is held; group members are refused.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

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

std::string text(const xshm::MessageView& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

bool inside_mapping(const xshm::Stream& s, const void* p, std::size_t n) {
  const auto& seg = *s.segment();
  const auto* lo = static_cast<const unsigned char*>(static_cast<const void*>(seg.slot(0)));
  const auto* hi = lo + seg.geo.capacity * seg.geo.slot_size;
  const auto* q = static_cast<const unsigned char*>(p);
  return q >= lo && q + n <= hi;
}

}  // namespace

TEST(StreamView, ReadsInPlaceAndTakesAtRelease) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto r = s.reader(xshm::Start::latest);
  EXPECT_FALSE(r.recv_view(1ms).has_value());
  s.send("in place");
  std::optional<xshm::MessageView> v = r.recv_view(1s);
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(inside_mapping(s, v->data(), v->size()));
  EXPECT_EQ(text(*v), "in place");
  EXPECT_EQ(v->seq(), 0u);
  EXPECT_EQ(r.cursor(), 0u);  // not taken yet
  EXPECT_EQ(r.received(), 0u);
  EXPECT_FALSE(v->overwritten());
  EXPECT_THROW(r.try_recv(), xshm::ArgumentError);  // one view at a time, in order
  EXPECT_THROW(r.recv_view(0ns), xshm::ArgumentError);
  v->release();
  EXPECT_FALSE(v->is_held());
  v->release();  // idempotent
  EXPECT_EQ(r.cursor(), 1u);
  EXPECT_EQ(r.received(), 1u);
  s.send("next");
  EXPECT_EQ(r.try_recv()->seq, 1u);
}

TEST(StreamView, AHeldViewGatesABlockWriter) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2));
  auto r = s.reader(xshm::Start::latest);
  s.send("a");
  auto v = r.recv_view(1s);
  ASSERT_TRUE(v.has_value());
  s.send("b");
  EXPECT_THROW(s.send("c", 20ms), xshm::StreamFullError);  // the viewed slot is not reused
  EXPECT_EQ(text(*v), "a");
  v.reset();  // destroyed held: released
  EXPECT_EQ(r.received(), 1u);
  s.send("c", 1s);
  EXPECT_EQ(r.recv(1s).seq, 1u);
}

TEST(StreamView, ADropOldestLapOverwritesItAndReleaseSaysSo) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2, xshm::Backpressure::drop_oldest));
  auto r = s.reader(xshm::Start::latest);
  s.send("first");
  auto v = r.recv_view(1s);
  ASSERT_TRUE(v.has_value());
  for (int i = 0; i < 3; ++i) s.send("lap " + std::to_string(i));
  EXPECT_TRUE(v->overwritten());
  EXPECT_THROW(v->release(), xshm::OverwrittenError);
  EXPECT_EQ(r.lost(), 1u);
  EXPECT_EQ(r.received(), 0u);
  const xshm::Message m = r.recv(1s);  // the reader goes on with what the ring holds
  EXPECT_GE(m.seq, 2u);
  const xshm::ReaderEntry* e = s.segment()->reader(r.index());
  EXPECT_EQ(e->received.load() + e->lost.load() + e->skipped.load(), e->cursor.load() - e->start.load());
}

TEST(StreamView, GroupMembersAndClosedReadersAreRefused) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(4));
  auto member = s.reader(xshm::Start::latest, "pool");
  s.send("x");
  EXPECT_THROW(member.recv_view(0ns), xshm::ArgumentError);
  auto r = s.reader(xshm::Start::oldest);
  auto v = r.recv_view(1s);
  ASSERT_TRUE(v.has_value());
  r.close();  // closed while held: the release moves nothing, the data stays mapped
  EXPECT_EQ(text(*v), "x");
  EXPECT_NO_THROW(v->release());
  EXPECT_THROW(r.recv_view(0ns), xshm::ClosedError);
}

// A view inherited across fork() is its parent's: the child's release moves nothing (the
// reader entry is the parent's, whose view still holds its slot under "block").
TEST(StreamView, AForkedChildsReleaseMovesNothing) {
  ScopedName n;
  auto s = xshm::Stream::create(n.str(), opts(2));
  auto r = s.reader(xshm::Start::latest);
  s.send("parent's");
  auto v = r.recv_view(1s);
  ASSERT_TRUE(v.has_value());
  const pid_t pid = ::fork();
  if (pid == 0) {
    try {
      v->release();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const xshm::ReaderEntry* e = s.segment()->reader(r.index());
  EXPECT_EQ(e->cursor.load(), 0u);  // still on the viewed message
  EXPECT_EQ(e->received.load(), 0u);
  s.send("next");
  EXPECT_THROW(s.send("full", 20ms), xshm::StreamFullError);  // the view still gates
  EXPECT_EQ(text(*v), "parent's");
  v->release();
  EXPECT_EQ(r.received(), 1u);
}
