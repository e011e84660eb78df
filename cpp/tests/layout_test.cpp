#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "test_util.hpp"
#include "xshm/xshm.hpp"

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

TEST(Geometry, FormulasOfTheSpec) {
  // docs/LAYOUT.md, "Geometry": values after the meta line, then the message, each 64-aligned.
  Geometry g = compute_geometry(Dtype::Int16, {2, 3}, 20, true);
  EXPECT_EQ(g.values_size, 12u);
  EXPECT_EQ(g.values_offset, 64u);
  EXPECT_EQ(g.message_offset, 64u + 64u);
  EXPECT_EQ(g.record_size, 128u + 64u);
  EXPECT_EQ(g.record_offset[1], 4096u + 192u);
  EXPECT_EQ(g.total_size, 8192u);
  Geometry scalar = compute_geometry(Dtype::Complex128, {}, 0, false);
  EXPECT_EQ(scalar.values_size, 16u);  // ndim 0: one element
  EXPECT_EQ(scalar.record_size, 128u);
  EXPECT_EQ(scalar.record_offset[1], 0u);
}

TEST(Geometry, MessageFirstExactlyWhenTheMessageOffsetWouldNotFitU32) {
  // The switch: 64 + round_up(values_size, 64) > 2^32 - 1, i.e. values_size > 2^32 - 128.
  const std::uint64_t last_values_first = (std::uint64_t{1} << 32) - 128;
  Geometry a = compute_geometry(Dtype::UInt8, {last_values_first}, 100, true);
  EXPECT_EQ(a.values_offset, 64u);
  EXPECT_EQ(a.message_offset, 64u + last_values_first);
  EXPECT_EQ(a.message_offset, 0xFFFFFFC0u);
  EXPECT_EQ(a.record_size, 64u + last_values_first + 128u);
  Geometry b = compute_geometry(Dtype::UInt8, {last_values_first + 1}, 100, true);
  EXPECT_EQ(b.message_offset, 64u);
  EXPECT_EQ(b.values_offset, 64u + 128u);  // 64 + round_up(100, 64)
  EXPECT_EQ(b.record_size, 64u + 128u + ((std::uint64_t{1} << 32) - 64u));
  EXPECT_EQ(b.record_offset[1], 4096u + b.record_size);
  EXPECT_EQ(b.total_size, round_up(4096u + 2 * b.record_size, 4096u));
  Geometry c = compute_geometry(Dtype::Float64, {std::uint64_t{1} << 37}, 0, false);  // 2^40 bytes
  EXPECT_EQ(c.message_offset, 64u);
  EXPECT_EQ(c.values_offset, 64u);  // an empty message slot takes no room
  EXPECT_EQ(c.record_size, 64u + (std::uint64_t{1} << 40));
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

void expect_layout_error(const std::vector<unsigned char>& img, const std::string& text) {
  try {
    validate_header(img.data(), img.size());
    ADD_FAILURE() << "accepted; expected '" << text << "'";
  } catch (const LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
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
  const std::size_t fields[] = {0,  7,  8,  12,  16,  24,  28,  32,  36,  40,  44,
                                48, 56, 64, 112, 120, 128, 136, 144, 148, 152, 188};
  for (std::size_t off : fields) {
    auto img = good;
    img[off] ^= 0x41;
    EXPECT_THROW(validate_header(img.data(), img.size()), LayoutError) << "offset " << off;
  }
}

TEST(Validate, RefusesNonZeroReservedBytes) {
  Geometry geo;
  const auto good = valid_image(&geo);
  for (std::size_t off : {188u, 191u, 192u, 255u, 272u, 319u, 328u, 383u, 448u, 1000u, 4095u}) {
    auto img = good;
    img[off] = 1;
    try {
      validate_header(img.data(), img.size());
      ADD_FAILURE() << "reserved byte " << off << " accepted";
    } catch (const LayoutError& e) {
      EXPECT_NE(std::string(e.what()).find("reserved header byte " + std::to_string(off)), std::string::npos)
          << e.what();
    }
  }
}

TEST(Validate, RefusesStateNotReadyAndImpossibleMutexSize) {
  Geometry geo;
  const auto good = valid_image(&geo);
  auto img = good;
  std::memset(img.data() + 12, 0, 4);  // state 0: the creator never finished
  // What is known, no guess that the creator died; no name is known here.
  const std::string not_ready =
      "state is 0, not READY: the segment was never made ready (its creator stopped before finishing it, or "
      "is "
      "still creating it); if nothing is creating it, remove it with unlink(force=True) / xshm rm --force "
      "NAME";
  expect_layout_error(img, not_ready);
  std::vector<unsigned char> zero(img.size(), 0);  // it stopped before writing the header
  expect_layout_error(zero, not_ready);
  img[0] = 'Y';  // not ready, and foreign
  expect_layout_error(img, "bad magic");
  img = good;
  img[0] = 'Y';
  expect_layout_error(img, "bad magic");
  for (std::uint32_t size : {0u, 65u, 0xFFFFFFFFu}) {
    img = good;
    std::memcpy(img.data() + 152, &size, 4);
    EXPECT_THROW(validate_header(img.data(), img.size()), LayoutError) << "mutex_size " << size;
  }
}

TEST(Validate, IgnoresWhatReadersNeedNot) {
  // The spec leaves these free for a reader: the creator's identity, the mutex ABI tag and
  // size (writers check them), the mutex bytes, the control words, and the records' contents.
  Geometry geo;
  const auto good = valid_image(&geo);
  auto img = good;
  ASSERT_GT(img.size(), kHeaderSize);
  auto fill = [&img](std::size_t from, std::size_t to, unsigned char byte) {
    for (std::size_t i = from; i < to && i < img.size(); ++i) img[i] = byte;
  };
  fill(156, 188, 0xA5);  // mutex_abi, creation_id, created_ns, creator_pid
  const std::uint32_t size48 = 48;
  std::memcpy(img.data() + 152, &size48, 4);
  fill(256, 272, 0x5A);                 // seq, epoch, waiters
  fill(320, 328, 0x5A);                 // owner_pid, recoveries
  fill(384, 448, 0x77);                 // the mutex slot
  fill(kHeaderSize, img.size(), 0x33);  // the records
  EXPECT_NO_THROW(validate_header(img.data(), img.size()));
  EXPECT_NO_THROW(validate_header(img.data(), img.size() + 4096));  // a longer mapping is fine
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
