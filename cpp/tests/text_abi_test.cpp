// The xshm-text C ABI called from C++ through its cbindgen header, linked against the Rust
// static library. Run under valgrind (and LeakSanitizer in the ASan build) for leaks of the
// owned strings.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "xshm/utf8.hpp"
#include "xshm_text.h"

namespace {

std::string unhex(const std::string& h) {
  if (h == "-") return {};
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

const std::uint8_t* bytes(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

}  // namespace

TEST(TextAbi, SharedVectorsAgreeWithTheHeader) {
  std::ifstream in(std::string(XSHM_VECTORS) + "/utf8.tsv");
  ASSERT_TRUE(in);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream row(line);
    std::string kind, input, max, expected;
    std::getline(row, kind, '\t');
    std::getline(row, input, '\t');
    std::getline(row, max, '\t');
    std::getline(row, expected, '\t');
    const std::string s = unhex(input);
    if (kind == "cut") {
      std::size_t got = 0;
      ASSERT_EQ(xshm_text_cut(bytes(s), s.size(), std::stoul(max), &got), XSHM_TEXT_STATUS_OK);
      EXPECT_EQ(got, std::stoul(expected)) << line;
      EXPECT_EQ(got, xshm::utf8::cut_length(s, std::stoul(max))) << "Rust and the C++ header disagree: " << line;
    } else {
      std::size_t off = 0;
      const XshmTextStatus st = xshm_text_validate(bytes(s), s.size(), &off);
      const long want = std::stol(expected);
      if (want < 0) {
        EXPECT_EQ(st, XSHM_TEXT_STATUS_OK) << line;
      } else {
        EXPECT_EQ(st, XSHM_TEXT_STATUS_INVALID_UTF8) << line;
        EXPECT_EQ(off, static_cast<std::size_t>(want)) << line;
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
