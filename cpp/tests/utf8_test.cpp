// Checks the header's code-point cut against the vectors every language shares.
#include "xshm/utf8.hpp"

#include <gtest/gtest.h>

#include <string>

#include "test_util.hpp"

TEST(Utf8, CutMatchesSharedVectors) {
  int checked = 0;
  for (const auto& v : xshm_test::utf8_vectors()) {
    if (v.kind != "cut") continue;
    EXPECT_EQ(xshm::utf8::cut(v.input, std::stoul(v.n)), std::stoul(v.expected)) << v.line;
    ++checked;
  }
  EXPECT_GT(checked, 20) << "missing tests/vectors/utf8.tsv?";
}

TEST(Utf8, NeverSplitsACodePoint) {
  const std::string s =
      "a\xF0\x9F\x98\x80"
      "b";  // a, U+1F600, b
  EXPECT_EQ(xshm::utf8::cut(s, 1), 1u);
  EXPECT_EQ(xshm::utf8::cut(s, 4), 1u);
  EXPECT_EQ(xshm::utf8::cut(s, 5), 5u);
}

TEST(Utf8, ValidUpToMatchesSharedVectors) {
  int checked = 0;
  for (const auto& v : xshm_test::utf8_vectors()) {
    if (v.kind != "validate") continue;
    const long expected = std::stol(v.expected);
    const std::size_t want = expected < 0 ? v.input.size() : static_cast<std::size_t>(expected);
    EXPECT_EQ(xshm::utf8::valid_up_to(v.input), want) << v.line;
    ++checked;
  }
  EXPECT_GE(checked, 10) << "missing validate rows in tests/vectors/utf8.tsv?";
}

TEST(Utf8, ValidUpToRejectsOverlongSurrogateAndTooLarge) {
  EXPECT_EQ(xshm::utf8::valid_up_to("ok"), 2u);
  EXPECT_EQ(xshm::utf8::valid_up_to(""), 0u);
  EXPECT_EQ(xshm::utf8::valid_up_to("a\xF0\x9F\x98\x80"), 5u);  // U+1F600
  EXPECT_EQ(xshm::utf8::valid_up_to("\xC0\xAF"), 0u);           // overlong '/'
  EXPECT_EQ(xshm::utf8::valid_up_to("x\xE0\x80\x80"), 1u);      // overlong NUL
  EXPECT_EQ(xshm::utf8::valid_up_to("ab\xED\xA0\x80"), 2u);     // surrogate D800
  EXPECT_EQ(xshm::utf8::valid_up_to("\xF4\x90\x80\x80"), 0u);   // above U+10FFFF
  EXPECT_EQ(xshm::utf8::valid_up_to("abc\xE2\x82"), 3u);        // truncated at the end
}
