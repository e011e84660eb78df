// typed.hpp: every C++ element type names its dtype, and every typed entry point refuses a T
// that is not the segment's element type with a DtypeError naming both and the type to use.
#include "xshm/typed.hpp"

#include <gtest/gtest.h>

#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using xshm_test::ScopedName;

static_assert(dtype_of_v<bool> == Dtype::Bool, "bool is numpy's bool.");
static_assert(dtype_of_v<std::int8_t> == Dtype::Int8 && dtype_of_v<std::uint8_t> == Dtype::UInt8,
              "The 1-byte integers have their dtypes.");
static_assert(dtype_of_v<std::int16_t> == Dtype::Int16 && dtype_of_v<std::uint16_t> == Dtype::UInt16,
              "The 2-byte integers have their dtypes.");
static_assert(dtype_of_v<std::int32_t> == Dtype::Int32 && dtype_of_v<std::uint32_t> == Dtype::UInt32,
              "The 4-byte integers have their dtypes.");
static_assert(dtype_of_v<std::int64_t> == Dtype::Int64 && dtype_of_v<std::uint64_t> == Dtype::UInt64,
              "The 8-byte integers have their dtypes.");
static_assert(dtype_of_v<long long> == Dtype::Int64 && dtype_of_v<unsigned long long> == Dtype::UInt64,
              "long long is an 8-byte integer like std::int64_t, whichever of long or long long that is.");
static_assert(dtype_of_v<float> == Dtype::Float32 && dtype_of_v<double> == Dtype::Float64,
              "float and double are float32 and float64.");
static_assert(dtype_of_v<std::complex<float>> == Dtype::Complex64 &&
                  dtype_of_v<std::complex<double>> == Dtype::Complex128,
              "std::complex<float|double> are complex64 and complex128.");
static_assert(dtype_of_v<const double> == Dtype::Float64, "cv-qualifiers do not change the dtype.");
static_assert(!kHasDtype<char> && !kHasDtype<long double> && !kHasDtype<std::string>,
              "Types without a dtype (plain char, long double, ...) do not compile in a typed call.");
static_assert(kIsRawBytes<std::byte> && !kHasDtype<std::byte>, "std::byte is the raw bytes of any dtype.");

namespace {

template <class Fn>
std::string dtype_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const DtypeError& e) {
    return e.what();
  }
  return "(no DtypeError)";
}

}  // namespace

TEST(Typed, EveryDtypeButFloat16HasACppTypeAndItsOwnName) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.code == Dtype::Float16)
      EXPECT_EQ(cpp_type_name(d.code), nullptr);
    else
      EXPECT_NE(cpp_type_name(d.code), nullptr) << d.name;
  }
  EXPECT_STREQ(cpp_type_name(Dtype::Float32), "float");
  EXPECT_STREQ(cpp_type_name(Dtype::Complex128), "std::complex<double>");
}

TEST(Typed, SnapshotValuesChecksTheType) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{4}, Dtype::Float32, 16});
  m.publish(std::vector<float>{1.5f, 2.5f, 3.5f, 4.5f});
  const Snapshot s = m.read();
  EXPECT_EQ(s.dtype, Dtype::Float32);
  EXPECT_EQ(s.values<float>(), (std::vector<float>{1.5f, 2.5f, 3.5f, 4.5f}));
  EXPECT_EQ(dtype_error_of([&] { (void)s.values<double>(); }),
            "values<double>() on a float32 segment: use values<float>()");
  EXPECT_EQ(dtype_error_of([&] { (void)s.values<std::int32_t>(); }),
            "values<std::int32_t>() on a float32 segment: use values<float>()");
  EXPECT_EQ(s.values<std::byte>().size(), 16u) << "std::byte: the raw bytes, whatever the dtype";
}

TEST(Typed, WriteTransactionValuesAsChecksTheType) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{3}, Dtype::Int16, 16});
  WriteTransaction tx = m.begin_write();
  EXPECT_EQ(dtype_error_of([&] { (void)tx.values_as<std::int32_t>(); }),
            "values_as<std::int32_t>() on an int16 segment: use values_as<std::int16_t>()");
  tx.values_as<std::int16_t>()[1] = -5;
  EXPECT_NE(tx.values_as<std::byte>(), nullptr);
  tx.commit();
  EXPECT_EQ(m.read().values<std::int16_t>(), (std::vector<std::int16_t>{0, -5, 0}));
}

TEST(Typed, PublishOfAVectorChecksTheTypeBeforeTheLength) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{2}, Dtype::Float64, 16});
  // Two floats are 8 bytes, not the 16 of two doubles; four floats would be 16 bytes of garbage.
  EXPECT_EQ(dtype_error_of([&] { m.publish(std::vector<float>(4, 1.0f)); }),
            "publish(std::vector<float>) on a float64 segment: use publish(std::vector<double>)");
  EXPECT_THROW(m.publish(std::vector<double>(3, 1.0)), ArgumentError) << "the right type, the wrong length";
  EXPECT_EQ(m.seq(), 0u) << "nothing was published";
  m.publish(std::vector<double>{1.0, 2.0});
  EXPECT_EQ(m.read().values<double>(), (std::vector<double>{1.0, 2.0}));
}

TEST(Typed, ReadIntoAVectorChecksTheTypeAndSizesIt) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{3}, Dtype::UInt64, 16});
  m.publish(std::vector<std::uint64_t>{7, 8, 9}, "m", 1);
  std::vector<std::uint64_t> out;
  std::string msg;
  EXPECT_EQ(m.read_into(out, &msg).counter, 1u);
  EXPECT_EQ(out, (std::vector<std::uint64_t>{7, 8, 9}));
  EXPECT_EQ(msg, "m");
  std::vector<double> wrong;
  EXPECT_EQ(
      dtype_error_of([&] { m.read_into(wrong); }),
      "read_into(std::vector<double>&) on a uint64 segment: use read_into(std::vector<std::uint64_t>&)");
}

TEST(Typed, BoolAndComplexRoundTrip) {
  ScopedName a, b;
  auto flags = SharedMemoryManager::create(a.str(), CreateOptions{{3}, Dtype::Bool, 16});
  flags.publish(std::vector<bool>{true, false, true});
  EXPECT_EQ(flags.read().values<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(flags.read().data, (std::vector<unsigned char>{1, 0, 1})) << "one byte per bool, 0 or 1";
  auto z = SharedMemoryManager::create(b.str(), CreateOptions{{2}, Dtype::Complex64, 16});
  z.publish(std::vector<std::complex<float>>{{1, 2}, {3, -4}});
  EXPECT_EQ(z.read().values<std::complex<float>>()[1], std::complex<float>(3, -4));
  EXPECT_THROW((void)z.read().values<std::complex<double>>(), DtypeError);
}

TEST(Typed, Float16HasNoCppTypeOnlyRawBytes) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{2}, Dtype::Float16, 16});
  const std::vector<std::byte> one_and_two{std::byte{0x00}, std::byte{0x3c}, std::byte{0x00},
                                           std::byte{0x40}};
  m.publish(one_and_two);  // 1.0 and 2.0 in binary16
  EXPECT_EQ(m.read().values<std::byte>(), one_and_two);
  EXPECT_EQ(dtype_error_of([&] { (void)m.read().values<std::uint16_t>(); }),
            "values<std::uint16_t>() on a float16 segment: float16 has no C++ type; use values<std::byte>() "
            "for the raw bytes");
}
