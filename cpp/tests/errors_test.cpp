// The error tree: the same classes, names and shape as Python's xshm.errors.
#include "xshm/errors.hpp"

#include <gtest/gtest.h>

#include <type_traits>

using namespace xshm;

static_assert(std::is_same_v<XshmError, Error>, "XshmError is Python's name of the base class.");
static_assert(std::is_base_of_v<Error, LayoutError>, "LayoutError is an Error.");
static_assert(std::is_base_of_v<Error, ArgumentError>, "ArgumentError is an Error.");
static_assert(std::is_base_of_v<ArgumentError, DtypeError>, "DtypeError is an ArgumentError.");
static_assert(std::is_base_of_v<ArgumentError, MessageTooLongError>,
              "MessageTooLongError is an ArgumentError.");
static_assert(
    std::is_base_of_v<Error, ReadOnlyError> && !std::is_base_of_v<ArgumentError, ReadOnlyError>,
    "ReadOnlyError sits directly under Error (in Python it is a PermissionError, not a ValueError).");
static_assert(std::is_base_of_v<Error, MessageDecodeError>, "MessageDecodeError is an Error.");
static_assert(std::is_base_of_v<Error, TornRecordError>, "TornRecordError is an Error.");
static_assert(std::is_base_of_v<Error, WaitTimeoutError>, "WaitTimeoutError is an Error.");
static_assert(std::is_base_of_v<Error, ClosedError>, "ClosedError is an Error.");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static_assert(std::is_same_v<TimeoutError, WaitTimeoutError>, "TimeoutError stays a (deprecated) alias.");
#pragma GCC diagnostic pop

TEST(Errors, MessageDecodeErrorCarriesTheOffset) {
  try {
    throw MessageDecodeError("bad byte", 7);
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "bad byte");
    EXPECT_EQ(dynamic_cast<const MessageDecodeError&>(e).offset(), 7u);
  }
}
