#include "xshm/segment.hpp"

#include <gtest/gtest.h>

#include <string>

using xshm::normalize_name;

TEST(Names, LeadingSlashIsAddedOnce) {
  EXPECT_EQ(normalize_name("abc"), "/abc");
  EXPECT_EQ(normalize_name("/abc"), "/abc");
}

TEST(Names, AtMost255BytesAfterTheSlash) {
  EXPECT_EQ(normalize_name(std::string(255, 'a')).size(), 256u);
  EXPECT_THROW(normalize_name(std::string(256, 'a')), xshm::ArgumentError);
  EXPECT_THROW(normalize_name("/" + std::string(256, 'a')), xshm::ArgumentError);
}

TEST(Names, PathTricksAreRefused) {
  for (const char* bad : {"", "/", "//a", "a/b", "/a/b", ".", "..", "/..", "/."})
    EXPECT_THROW(normalize_name(bad), xshm::ArgumentError) << bad;
  EXPECT_THROW(normalize_name(std::string("a\0b", 3)), xshm::ArgumentError);
}

TEST(Names, DotsInsideANameAreFine) { EXPECT_EQ(normalize_name("a..b"), "/a..b"); }
