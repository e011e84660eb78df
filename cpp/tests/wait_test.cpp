// The wait over the futex epoch: timeout and spin, the between-slices hook, and the waiter
// count given back on every way out.
#include "xshm/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

TEST(Wait, HookRunsEverySliceAndTimeoutIsKept) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  int slices = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = wait::wait_for(
      m.segment(), 0, 60ms, 0ns, [&] { ++slices; }, 10ms);
  EXPECT_EQ(r, std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 60ms);
  EXPECT_GE(slices, 3);
  EXPECT_EQ(m.segment().header()->waiters.load(), 0u);
}

TEST(Wait, HookRunsWhileSpinningToo) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  int slices = 0;
  EXPECT_EQ(wait::wait_for(
                m.segment(), 0, 40ms, 1s, [&] { ++slices; }, 10ms),
            std::nullopt);
  EXPECT_GE(slices, 2) << "a long spin is sliced like a sleep";
}

TEST(Wait, AThrowingHookEndsTheWaitAndUncountsTheWaiter) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  EXPECT_THROW(wait::wait_for(
                   m.segment(), 0, 5s, 0ns, [] { throw std::runtime_error("signal"); }, 5ms),
               std::runtime_error);
  EXPECT_EQ(m.segment().header()->waiters.load(), 0u);
}

TEST(Wait, APublishEndsASlicedWait) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  std::thread writer([&] {
    std::this_thread::sleep_for(30ms);
    m.publish(std::nullopt, std::uint64_t{1});
  });
  int slices = 0;
  EXPECT_EQ(m.wait(0, 10s, 0ns, [&] { ++slices; }), 1u);
  writer.join();
  EXPECT_EQ(m.segment().header()->waiters.load(), 0u);
}

TEST(Wait, SplitSpinKeepsTheBudgetAndTheTimeout) {
  const auto a = wait::split_spin(100ms, 1ms, 10us);
  EXPECT_EQ(a.head, 10us);
  EXPECT_EQ(a.rest_spin, 1ms - 10us);
  EXPECT_EQ(a.rest_timeout, Timeout(100ms - 10us));
  const auto b = wait::split_spin(std::nullopt, 5us, 10us);
  EXPECT_EQ(b.head, 5us) << "a short spin fits the head";
  EXPECT_EQ(b.rest_spin, 0ns);
  EXPECT_EQ(b.rest_timeout, std::nullopt) << "forever stays forever";
  const auto c = wait::split_spin(3us, 1ms, 10us);
  EXPECT_EQ(c.head, 3us) << "the head never outlasts the timeout";
  EXPECT_EQ(c.rest_timeout, Timeout(0ns));
  const auto d = wait::split_spin(100ms, 0ns, 10us);
  EXPECT_EQ(d.head, 0ns) << "no spin, no head";
  EXPECT_EQ(d.rest_timeout, Timeout(100ms));
}
