// Checks the header's code-point cut against the vectors every language shares.
#include "xshm/utf8.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string unhex(const std::string& h) {
  if (h == "-") return {};
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

TEST(Utf8, CutMatchesSharedVectors) {
  std::ifstream in(std::string(XSHM_VECTORS) + "/utf8.tsv");
  ASSERT_TRUE(in) << "missing tests/vectors/utf8.tsv";
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream row(line);
    std::string kind, input, n, expected;
    std::getline(row, kind, '\t');
    std::getline(row, input, '\t');
    std::getline(row, n, '\t');
    std::getline(row, expected, '\t');
    if (kind != "cut") continue;
    EXPECT_EQ(xshm::utf8::cut_length(unhex(input), std::stoul(n)), std::stoul(expected)) << line;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(Utf8, NeverSplitsACodePoint) {
  const std::string s = "a\xF0\x9F\x98\x80" "b";  // a, U+1F600, b
  EXPECT_EQ(xshm::utf8::cut_length(s, 1), 1u);
  EXPECT_EQ(xshm::utf8::cut_length(s, 4), 1u);
  EXPECT_EQ(xshm::utf8::cut_length(s, 5), 5u);
}
