// Checks the header's code-point cut against the vectors every language shares.
#include "xshm/utf8.hpp"

#include <gtest/gtest.h>

#include <string>

#include "test_util.hpp"

TEST(Utf8, CutMatchesSharedVectors) {
  int checked = 0;
  for (const auto& v : xshm_test::utf8_vectors()) {
    if (v.kind != "cut") continue;
    EXPECT_EQ(xshm::utf8::cut_length(v.input, std::stoul(v.n)), std::stoul(v.expected)) << v.line;
    ++checked;
  }
  EXPECT_GT(checked, 20) << "missing tests/vectors/utf8.tsv?";
}

TEST(Utf8, NeverSplitsACodePoint) {
  const std::string s = "a\xF0\x9F\x98\x80" "b";  // a, U+1F600, b
  EXPECT_EQ(xshm::utf8::cut_length(s, 1), 1u);
  EXPECT_EQ(xshm::utf8::cut_length(s, 4), 1u);
  EXPECT_EQ(xshm::utf8::cut_length(s, 5), 5u);
}
