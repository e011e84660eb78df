// Checks the header's code-point cut against the vectors every language shares.
#include "xshm/utf8.hpp"

#include <gtest/gtest.h>

#include <optional>
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

TEST(Utf8, FirstInvalidMatchesSharedVectors) {
  int checked = 0;
  for (const auto& v : xshm_test::utf8_vectors()) {
    if (v.kind != "validate") continue;
    const long expected = std::stol(v.expected);
    const auto got = xshm::utf8::first_invalid(v.input);
    if (expected < 0) {
      EXPECT_EQ(got, std::nullopt) << v.line;
    } else {
      EXPECT_EQ(got, std::optional<std::size_t>(static_cast<std::size_t>(expected))) << v.line;
    }
    ++checked;
  }
  EXPECT_GE(checked, 10) << "missing validate rows in tests/vectors/utf8.tsv?";
}

TEST(Utf8, FirstInvalidRejectsOverlongSurrogateAndTooLarge) {
  EXPECT_EQ(xshm::utf8::first_invalid("ok"), std::nullopt);
  EXPECT_EQ(xshm::utf8::first_invalid(""), std::nullopt);
  EXPECT_EQ(xshm::utf8::first_invalid("a\xF0\x9F\x98\x80"), std::nullopt);  // U+1F600
  EXPECT_EQ(xshm::utf8::first_invalid("\xC0\xAF"), 0u);                     // overlong '/'
  EXPECT_EQ(xshm::utf8::first_invalid("x\xE0\x80\x80"), 1u);                 // overlong NUL
  EXPECT_EQ(xshm::utf8::first_invalid("ab\xED\xA0\x80"), 2u);                // surrogate D800
  EXPECT_EQ(xshm::utf8::first_invalid("\xF4\x90\x80\x80"), 0u);              // above U+10FFFF
  EXPECT_EQ(xshm::utf8::first_invalid("abc\xE2\x82"), 3u);                   // truncated at the end
}
