#include "xshm/layout.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;

TEST(Geometry, DefaultRecordIsCacheLineAligned) {
  Geometry g = compute_geometry(Dtype::Float64, {100}, 256, true);
  EXPECT_EQ(g.values_size, 800u);
  EXPECT_EQ(g.values_offset, 64u);
  EXPECT_EQ(g.message_offset % 64, 0u);
  EXPECT_EQ(g.record_size % 64, 0u);
  EXPECT_EQ(g.record_offset[0], kHeaderSize);
  EXPECT_EQ(g.record_offset[1], kHeaderSize + g.record_size);
  EXPECT_EQ(g.total_size % kHeaderSize, 0u);
  EXPECT_GE(g.total_size, kHeaderSize + 2 * g.record_size);
}

TEST(Geometry, NoBackupHasOneSlot) {
  Geometry g = compute_geometry(Dtype::UInt8, {3}, 0, false);
  EXPECT_EQ(g.record_offset[1], 0u);
  EXPECT_EQ(g.total_size, 2 * kHeaderSize);
}

TEST(Geometry, RefusesOverflowAndTooManyDims) {
  EXPECT_THROW(compute_geometry(Dtype::Float64, {UINT64_MAX, 2}, 0, true), ArgumentError);
  EXPECT_THROW(compute_geometry(Dtype::Float64, {1u << 30, 1u << 30}, 0, true), ArgumentError);
  EXPECT_THROW(compute_geometry(Dtype::Float64, std::vector<std::uint64_t>(9, 1), 0, true), ArgumentError);
  EXPECT_THROW(compute_geometry(Dtype::Float64, {1}, kMaxMessageCapacity + 1u, true), ArgumentError);
}

TEST(Dtypes, ParseNamesAndCodes) {
  EXPECT_EQ(parse_dtype("float64"), Dtype::Float64);
  EXPECT_EQ(parse_dtype("<f8"), Dtype::Float64);
  EXPECT_EQ(parse_dtype("bool"), Dtype::Bool);
  EXPECT_EQ(dtype_info(Dtype::Complex128).itemsize, 16u);
  EXPECT_THROW(parse_dtype(">f8"), DtypeError);
  EXPECT_THROW(parse_dtype("object"), DtypeError);
}

namespace {

/// A valid header image, made by creating a real segment and copying its first page.
std::vector<unsigned char> valid_image(Geometry* geo) {
  xshm_test::ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{4, 5}, Dtype::Int16, 32});
  *geo = m.geometry();
  std::vector<unsigned char> img(geo->total_size);
  std::memcpy(img.data(), m.base(), img.size());
  return img;
}

}  // namespace

TEST(Validate, AcceptsWhatCreateWrote) {
  Geometry geo;
  auto img = valid_image(&geo);
  Geometry got = validate_header(img.data(), img.size());
  EXPECT_EQ(got.shape, (std::vector<std::uint64_t>{4, 5}));
  EXPECT_EQ(got.dtype, Dtype::Int16);
  EXPECT_EQ(got.message_capacity, 32u);
}

TEST(Validate, RefusesEveryMutatedIdentityField) {
  Geometry geo;
  const auto good = valid_image(&geo);
  // Each identity byte that is not padding: flipping it must be refused.
  const std::size_t fields[] = {0, 7, 8, 16, 24, 28, 32, 36, 40, 44, 48, 56, 64, 112, 120, 128, 136, 144, 148};
  for (std::size_t off : fields) {
    auto img = good;
    img[off] ^= 0x41;
    EXPECT_THROW(validate_header(img.data(), img.size()), LayoutError) << "offset " << off;
  }
}

TEST(Validate, RefusesTruncation) {
  Geometry geo;
  const auto good = valid_image(&geo);
  EXPECT_THROW(validate_header(good.data(), good.size() - 1), LayoutError);
  EXPECT_THROW(validate_header(good.data(), 100), LayoutError);
}

TEST(Validate, RandomBytesNeverCrash) {
  Geometry geo;
  const auto good = valid_image(&geo);
  std::mt19937_64 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    auto img = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) img[rng() % 256] = static_cast<unsigned char>(rng());
    try {
      Geometry g = validate_header(img.data(), img.size());
      EXPECT_LE(g.total_size, img.size());
      ++accepted;
    } catch (const LayoutError&) {
    }
  }
  SUCCEED() << accepted << " mutated headers were still valid (padding bytes)";
}
