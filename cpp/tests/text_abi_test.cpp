// The xshm-text C ABI called from C++ through its cbindgen header, linked against the Rust
// static library. Run under valgrind (and LeakSanitizer in the ASan build) for leaks of the
// owned strings.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "test_util.hpp"

#include "xshm/utf8.hpp"
#include "xshm_text.h"

namespace {

const std::uint8_t* bytes(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

}  // namespace

TEST(TextAbi, SharedVectorsAgreeWithTheHeader) {
  int n = 0;
  for (const auto& v : xshm_test::utf8_vectors()) {
    const std::string& s = v.input;
    if (v.kind == "cut") {
      std::size_t got = 0;
      ASSERT_EQ(xshm_text_cut(bytes(s), s.size(), std::stoul(v.n), &got), XSHM_TEXT_STATUS_OK);
      EXPECT_EQ(got, std::stoul(v.expected)) << v.line;
      EXPECT_EQ(got, xshm::utf8::cut(s, std::stoul(v.n))) << "Rust and the C++ header disagree: " << v.line;
    } else {
      std::size_t off = 0;
      const XshmTextStatus st = xshm_text_validate(bytes(s), s.size(), &off);
      const long want = std::stol(v.expected);
      if (want < 0) {
        EXPECT_EQ(st, XSHM_TEXT_STATUS_OK) << v.line;
      } else {
        EXPECT_EQ(st, XSHM_TEXT_STATUS_INVALID_UTF8) << v.line;
        EXPECT_EQ(off, static_cast<std::size_t>(want)) << v.line;
      }
    }
    ++n;
  }
  EXPECT_GT(n, 50);
}

TEST(TextAbi, OwnedStringsAreFreedByRust) {
  for (int i = 0; i < 1000; ++i) {
    const std::string s = "caf\xC3\xA9 \xFF!";
    char* out = nullptr;
    std::size_t len = 0;
    ASSERT_EQ(xshm_text_decode_lossy(bytes(s), s.size(), &out, &len), XSHM_TEXT_STATUS_OK);
    EXPECT_EQ(std::string(out, len), "caf\xC3\xA9 \xEF\xBF\xBD!");
    EXPECT_EQ(out[len], '\0');
    xshm_text_free(out);

    std::uint16_t* units = nullptr;
    std::size_t n = 0;
    ASSERT_EQ(xshm_text_utf8_to_utf16(bytes("a\xF0\x9F\x98\x80"), 5, &units, &n), XSHM_TEXT_STATUS_OK);
    ASSERT_EQ(n, 3u);
    EXPECT_EQ(units[1], 0xD83D);
    char* back = nullptr;
    ASSERT_EQ(xshm_text_utf16_to_utf8(units, n, &back, &len), XSHM_TEXT_STATUS_OK);
    EXPECT_EQ(std::string(back, len), "a\xF0\x9F\x98\x80");
    xshm_text_free(back);
    xshm_text_free_utf16(units);
  }
  xshm_text_free(nullptr);
  xshm_text_free_utf16(nullptr);
}

TEST(TextAbi, BadInputGetsAStatusNeverACrash) {
  std::size_t n = 0;
  char* out = nullptr;
  EXPECT_EQ(xshm_text_cut(nullptr, 5, 1, &n), XSHM_TEXT_STATUS_NULL_POINTER);
  EXPECT_EQ(xshm_text_cut(bytes("abc"), 3, 1, nullptr), XSHM_TEXT_STATUS_NULL_POINTER);
  EXPECT_EQ(xshm_text_decode_lossy(bytes("abc"), 3, nullptr, &n), XSHM_TEXT_STATUS_NULL_POINTER);
  EXPECT_EQ(xshm_text_cut(bytes("abc"), XSHM_TEXT_MAX_INPUT + 1u, 1, &n), XSHM_TEXT_STATUS_TOO_LARGE);
  const std::uint16_t lone[] = {0x61, 0xD800};
  EXPECT_EQ(xshm_text_utf16_to_utf8(lone, 2, &out, &n), XSHM_TEXT_STATUS_INVALID_UTF16);
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(out, nullptr);
  std::uint16_t* units = nullptr;
  EXPECT_EQ(xshm_text_utf8_to_utf16(bytes("ab\xFF"), 3, &units, &n), XSHM_TEXT_STATUS_INVALID_UTF8);
  EXPECT_EQ(n, 2u);
}
