// The values window: a second mapping of the live values that shares the segment's pages
// until detach(), then holds a private copy at the same addresses.
#include "xshm/window.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
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
