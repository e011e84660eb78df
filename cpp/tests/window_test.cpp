// The values window: a second mapping of the live values that shares the segment's pages
// until detach(), then holds a private copy at the same addresses.
#include "xshm/window.hpp"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using xshm_test::ScopedName;

TEST(Window, SharesTheLiveValuesUntilDetached) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{3000}, Dtype::Float64, 16});
  const detail::Segment& s = m.segment();
  std::shared_ptr<ValuesWindow> w = ValuesWindow::map(s);
  auto* wv = static_cast<double*>(w->values());
  auto* live = reinterpret_cast<double*>(s.values(0));
  ASSERT_NE(static_cast<void*>(wv), static_cast<void*>(live)) << "a second mapping";
  wv[0] = 1.5;
  wv[2999] = 2.5;
  EXPECT_EQ(live[0], 1.5) << "the same pages";
  EXPECT_EQ(live[2999], 2.5);
  live[1] = 3.5;
  EXPECT_EQ(wv[1], 3.5);

  w->detach();
  EXPECT_TRUE(w->detached());
  EXPECT_EQ(w->values(), static_cast<void*>(wv)) << "same addresses";
  EXPECT_EQ(wv[0], 1.5) << "the copy shows what the window showed";
  EXPECT_EQ(wv[1], 3.5);
  EXPECT_EQ(wv[2999], 2.5);
  wv[0] = -1.0;  // a late write: private
  EXPECT_EQ(live[0], 1.5) << "never reaches the record";
  live[1] = 4.5;
  EXPECT_EQ(wv[1], 3.5) << "no longer follows the record";
  w->detach();  // idempotent
  EXPECT_EQ(wv[0], -1.0);
}

TEST(Window, NoValuesStillMapsAPage) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{0}, Dtype::Float64, 16});
  std::shared_ptr<ValuesWindow> w = ValuesWindow::map(m.segment());
  EXPECT_NE(w->values(), nullptr);
  w->detach();
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
namespace {
/// The permissions ("rw-p", "r--s", ...) /proc/self/maps gives the mapping holding `p`.
std::string perms_at(const void* p) {
  std::ifstream maps("/proc/self/maps");
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::string perms;
    std::istringstream in(line);
    in >> std::hex >> lo >> dash >> hi >> perms;
    if (addr >= lo && addr < hi) return perms;
  }
  return "";
}
}  // namespace
#endif

TEST(Window, ADetachThatCannotCopyLeavesTheWindowReadOnlyNotShared) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "an address-space limit starves the sanitizer's own shadow mappings";
#else
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{8u << 20}, Dtype::Float64, 16});  // 64 MiB
  std::shared_ptr<ValuesWindow> w = ValuesWindow::map(m.segment());
  EXPECT_EQ(perms_at(w->values()).substr(0, 2), "rw");
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &old), 0);
  rlimit tight = old;
  tight.rlim_cur = 0;  // no new mapping can be made: the private copy fails
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &tight), 0);
  bool threw = false;
  try {
    w->detach();
  } catch (const std::system_error&) {
    threw = true;
  }
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &old), 0);
  EXPECT_TRUE(threw) << "the failure is reported";
  EXPECT_TRUE(w->detached()) << "and the window is never handed out again";
  EXPECT_EQ(perms_at(w->values()).substr(0, 2), "r-") << "a late write can no longer reach the record";
#endif
}
