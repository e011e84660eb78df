// The bytes of an xshm segment, layout version 1: the header page, the record slots, the
// supported dtypes, and the one function that computes every size and offset from the
// creation parameters. docs/LAYOUT.md describes the same bytes; change both together and bump
// kLayoutVersion. The creator writes the identity fields once, before the ready marker; after
// that they are immutable, and openers copy and check them, never trusting them again.
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "errors.hpp"

namespace xshm {

inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr char kMagic[8] = {'X', 'S', 'H', 'M', 'S', 'E', 'G', '\0'};
inline constexpr std::uint32_t kStateReady = 0x59444552u;  // "REDY" little-endian
inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::size_t kHeaderSize = 4096;
inline constexpr std::size_t kMaxDims = 8;
inline constexpr std::uint64_t kMaxValuesBytes = std::uint64_t{1} << 40;
inline constexpr std::uint32_t kMaxMessageCapacity = 1u << 24;
inline constexpr std::uint32_t kFlagBackup = 1u << 0;
inline constexpr std::uint32_t kKnownFlags = kFlagBackup;

/// Element types of the values array; every one little-endian. The codes are part of the
/// layout: never renumber.
enum class Dtype : std::uint32_t {
  Bool = 1,
  Int8,
  UInt8,
  Int16,
  UInt16,
  Int32,
  UInt32,
  Int64,
  UInt64,
  Float16,
  Float32,
  Float64,
  Complex64,
  Complex128,
};

struct DtypeInfo {
  Dtype code;
  const char* name;  // numpy's canonical name
  std::uint32_t itemsize;
};

inline constexpr std::array<DtypeInfo, 14> kDtypes{{
    {Dtype::Bool, "bool", 1},
    {Dtype::Int8, "int8", 1},
    {Dtype::UInt8, "uint8", 1},
    {Dtype::Int16, "int16", 2},
    {Dtype::UInt16, "uint16", 2},
    {Dtype::Int32, "int32", 4},
    {Dtype::UInt32, "uint32", 4},
    {Dtype::Int64, "int64", 8},
    {Dtype::UInt64, "uint64", 8},
    {Dtype::Float16, "float16", 2},
    {Dtype::Float32, "float32", 4},
    {Dtype::Float64, "float64", 8},
    {Dtype::Complex64, "complex64", 8},
    {Dtype::Complex128, "complex128", 16},
}};

/// The info for a code read from a segment, or nullptr when the code is unknown.
inline const DtypeInfo* find_dtype(std::uint32_t code) noexcept {
  for (const auto& d : kDtypes)
    if (static_cast<std::uint32_t>(d.code) == code) return &d;
  return nullptr;
}

inline const DtypeInfo& dtype_info(Dtype code) {
  const DtypeInfo* d = find_dtype(static_cast<std::uint32_t>(code));
  if (d == nullptr) throw DtypeError("unknown dtype code " + std::to_string(static_cast<unsigned>(code)));
  return *d;
}

/// Parses numpy's canonical names ("float64", "int8", ...) and "<f8"-style codes.
inline Dtype parse_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.code;
  static constexpr std::pair<std::string_view, Dtype> kCodes[] = {
      {"?", Dtype::Bool},        {"|b1", Dtype::Bool},        {"i1", Dtype::Int8},
      {"|i1", Dtype::Int8},      {"u1", Dtype::UInt8},        {"|u1", Dtype::UInt8},
      {"<i2", Dtype::Int16},     {"<u2", Dtype::UInt16},      {"<i4", Dtype::Int32},
      {"<u4", Dtype::UInt32},    {"<i8", Dtype::Int64},       {"<u8", Dtype::UInt64},
      {"<f2", Dtype::Float16},   {"<f4", Dtype::Float32},     {"<f8", Dtype::Float64},
      {"<c8", Dtype::Complex64}, {"<c16", Dtype::Complex128},
  };
  for (const auto& [code, d] : kCodes)
    if (name == code) return d;
  throw DtypeError("unsupported dtype '" + std::string(name) +
                   "': xshm carries little-endian bool, int8..int64, uint8..uint64, "
                   "float16/32/64 and complex64/128");
}

/// The meta words at the start of every record slot. `lock` is that slot's seqlock word
/// (odd while a writer copies into the slot); the rest is written only under it.
struct RecordMeta {
  std::atomic<std::uint64_t> lock;  // seqlock of this slot: odd = being written
  std::uint64_t seq;                // the publish number this slot holds
  std::uint64_t counter;            // the user's counter
  std::int64_t timestamp_ns;        // CLOCK_REALTIME of the publish
  std::uint32_t writer_pid;         // pid of the process that published it
  std::uint32_t message_len;        // bytes used in the message slot (<= capacity)
  std::uint64_t reserved[3];
};
static_assert(sizeof(RecordMeta) == kCacheLine, "RecordMeta fills exactly one cache line.");
static_assert(offsetof(RecordMeta, lock) == 0 && offsetof(RecordMeta, seq) == 8 &&
                  offsetof(RecordMeta, counter) == 16 && offsetof(RecordMeta, timestamp_ns) == 24 &&
                  offsetof(RecordMeta, writer_pid) == 32 && offsetof(RecordMeta, message_len) == 36,
              "RecordMeta offsets are the ones docs/LAYOUT.md documents.");

/// Page 0 of a segment. Identity fields: written once by the creator before `state` turns
/// READY (release), read-only afterwards. Control lines: each on its own cache line.
struct Header {
  // --- identity [0, 256) ---
  char magic[8];                     // 0   kMagic
  std::uint32_t layout_version;      // 8   kLayoutVersion
  std::atomic<std::uint32_t> state;  // 12  0 while building, kStateReady once published
  std::uint64_t total_size;          // 16  bytes of the segment (a multiple of the page)
  std::uint32_t header_size;         // 24  kHeaderSize
  std::uint32_t flags;               // 28  kFlagBackup
  std::uint32_t dtype;               // 32  Dtype code
  std::uint32_t itemsize;            // 36  bytes per element
  std::uint32_t ndim;                // 40  0..kMaxDims
  std::uint32_t message_capacity;    // 44  bytes of the message slot
  std::uint64_t shape[kMaxDims];     // 48  extents; unused dims are 0
  std::uint64_t values_size;         // 112 prod(shape) * itemsize
  std::uint64_t record_size;         // 120 bytes of one record slot
  std::uint64_t record_offset[2];    // 128 live slot, backup slot (0 when no backup)
  std::uint32_t values_offset;       // 144 within a record
  std::uint32_t message_offset;      // 148 within a record
  std::uint32_t mutex_size;          // 152 sizeof(pthread_mutex_t) of the creator
  std::uint32_t mutex_abi;           // 156 libc/architecture tag of the creator
  std::uint8_t creation_id[16];      // 160 random; tells re-created segments apart
  std::int64_t created_ns;           // 176 CLOCK_REALTIME at creation
  std::uint32_t creator_pid;         // 184
  std::uint32_t reserved0;           // 188
  std::uint8_t reserved1[64];        // 192
  // --- publish line [256, 320): written by writers, read by everyone ---
  alignas(kCacheLine) std::atomic<std::uint64_t> seq;  // 256 completed publishes
  std::atomic<std::uint32_t> epoch;                    // 264 futex word, bumped after every publish
  std::atomic<std::uint32_t> waiters;                  // 268 processes sleeping on epoch
  // --- writer line [320, 448) ---
  alignas(kCacheLine) std::atomic<std::uint32_t> owner_pid;  // 320 pid holding the mutex, 0 none
  std::atomic<std::uint32_t> recoveries;                     // 324 dead writers recovered from
  alignas(kCacheLine) unsigned char mutex[64];               // 384 pthread_mutex_t
};
static_assert(offsetof(Header, state) == 12 && offsetof(Header, shape) == 48 &&
                  offsetof(Header, record_offset) == 128 && offsetof(Header, creation_id) == 160 &&
                  offsetof(Header, seq) == 256 && offsetof(Header, epoch) == 264 &&
                  offsetof(Header, waiters) == 268 && offsetof(Header, owner_pid) == 320 &&
                  offsetof(Header, recoveries) == 324 && offsetof(Header, mutex) == 384,
              "Header offsets are the ones docs/LAYOUT.md documents.");
static_assert(sizeof(Header) <= kHeaderSize, "The header fits in its page.");
static_assert(sizeof(pthread_mutex_t) <= sizeof(Header::mutex), "pthread_mutex_t fits its slot.");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "Atomics in shared memory must be lock-free, hence address-free.");

/// Tag of the libc and architecture whose pthread_mutex_t the creator initialised. Only
/// writers need to agree on it; read-only openers ignore it.
inline constexpr std::uint32_t mutex_abi_tag() noexcept {
  std::uint32_t libc =
#if defined(__GLIBC__)
      1;
#else
      2;
#endif
  std::uint32_t arch =
#if defined(__x86_64__)
      1;
#elif defined(__aarch64__)
      2;
#else
          0xff;
#endif
  return (libc << 8) | arch;
}

inline constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) noexcept {
  return (n + to - 1) / to * to;
}

/// Everything an opener needs about a segment, computed from the creation parameters.
struct Geometry {
  Dtype dtype = Dtype::Float64;
  std::uint32_t itemsize = 8;
  std::vector<std::uint64_t> shape;
  std::uint64_t values_size = 0;
  std::uint32_t message_capacity = 0;
  bool backup = true;
  std::uint64_t record_size = 0;
  std::uint64_t record_offset[2] = {0, 0};
  std::uint32_t values_offset = 0;
  std::uint32_t message_offset = 0;
  std::uint64_t total_size = 0;

  std::uint64_t count() const noexcept { return itemsize == 0 ? 0 : values_size / itemsize; }
};

/// The one place that decides sizes and offsets. Throws ArgumentError for shapes or
/// capacities the layout cannot hold.
inline Geometry compute_geometry(Dtype dtype, const std::vector<std::uint64_t>& shape,
                                 std::uint64_t message_capacity, bool backup) {
  Geometry g;
  g.dtype = dtype;
  g.itemsize = dtype_info(dtype).itemsize;
  if (shape.size() > kMaxDims)
    throw ArgumentError("shape has " + std::to_string(shape.size()) + " dimensions; at most " +
                        std::to_string(kMaxDims) + " are supported");
  std::uint64_t bytes = g.itemsize;
  for (std::uint64_t extent : shape) {
    if (extent != 0 && bytes > kMaxValuesBytes / extent)
      throw ArgumentError("shape is too large: the values array would exceed 2**40 bytes");
    bytes *= extent;
  }
  if (bytes > kMaxValuesBytes)
    throw ArgumentError("shape is too large: the values array would exceed 2**40 bytes");
  if (message_capacity > kMaxMessageCapacity)
    throw ArgumentError("message_capacity " + std::to_string(message_capacity) + " exceeds the limit of " +
                        std::to_string(kMaxMessageCapacity) + " bytes");
  g.shape = shape;
  g.values_size = bytes;
  g.message_capacity = static_cast<std::uint32_t>(message_capacity);
  g.backup = backup;
  g.values_offset = static_cast<std::uint32_t>(sizeof(RecordMeta));
  const std::uint64_t message_offset = g.values_offset + round_up(g.values_size, kCacheLine);
  if (message_offset > UINT32_MAX) {
    // Large arrays put the message first so both offsets fit in 32 bits.
    g.message_offset = g.values_offset;
    g.values_offset = static_cast<std::uint32_t>(g.message_offset + round_up(g.message_capacity, kCacheLine));
    g.record_size = g.values_offset + round_up(g.values_size, kCacheLine);
  } else {
    g.message_offset = static_cast<std::uint32_t>(message_offset);
    g.record_size = g.message_offset + round_up(g.message_capacity, kCacheLine);
  }
  g.record_offset[0] = kHeaderSize;
  g.record_offset[1] = backup ? kHeaderSize + g.record_size : 0;
  g.total_size = round_up(kHeaderSize + g.record_size * (backup ? 2 : 1), kHeaderSize);
  return g;
}

/// How to remove a segment that was never made ready, for the errors that report one: `canon`
/// is its canonical name ("/x"), or empty where it is not known.
inline std::string never_ready_removal(std::string_view canon) {
  const std::string_view bare =
      canon.empty() ? std::string_view("NAME") : canon.substr(canon[0] == '/' ? 1 : 0);
  return "if nothing is creating it, remove it with unlink(force=True) / xshm rm --force " +
         std::string(bare);
}

/// The checks every layout version shares, in their order: the page is there, the ready
/// marker (acquire), the magic. Magic and state sit at the same offsets in every version
/// (stream/layout.hpp's header too), so both validators start here.
inline void validate_prefix(const void* base, std::uint64_t mapped, std::string_view canon) {
  if (mapped < kHeaderSize)
    throw LayoutError("segment is " + std::to_string(mapped) + " bytes, smaller than the xshm header (" +
                      std::to_string(kHeaderSize) + "): not an xshm segment, or truncated");
  const auto* h = static_cast<const Header*>(base);
  // SYNC POINT: pairs with the creator's release store of READY: every identity field read
  // after this was written before it.
  const std::uint32_t state = h->state.load(std::memory_order_acquire);
  const bool magic_ok = std::memcmp(h->magic, kMagic, sizeof kMagic) == 0;
  // A creator that stopped before writing the header leaves a zero page: "never made ready",
  // not "bad magic". Only the state is known, not why: say so, not guess that it died.
  if (state != kStateReady && (magic_ok || h->magic[0] == '\0'))
    throw LayoutError("state is " + std::to_string(state) +
                      ", not READY: the segment was never made ready (its creator stopped before "
                      "finishing it, or is still creating it); " +
                      never_ready_removal(canon));
  if (!magic_ok) throw LayoutError("bad magic: not an xshm segment");
}

/// Checks the header of a segment mapped with `mapped` bytes, exactly as docs/LAYOUT.md
/// ("What an opener must refuse") lists it, in that order, and returns the geometry. Nothing
/// is dereferenced beyond `mapped`. Throws LayoutError naming the first bad field; `canon`, the
/// segment's name if known, goes into the removal hint of a segment never made ready. Not
/// checked here: the mutex ABI (only writers need it; the opener checks it) and the record
/// contents (the reader checks them at every read).
inline Geometry validate_header(const void* base, std::uint64_t mapped, std::string_view canon = {}) {
  validate_prefix(base, mapped, canon);
  const auto* h = static_cast<const Header*>(base);
  // Version 2 is the stream family (stream/layout.hpp): its `kind` is at offset 28.
  if (h->layout_version == 2 && h->flags == 2)
    throw LayoutError("it is a stream (layout version 2), not a record: open it with Stream.open");
  if (h->layout_version != kLayoutVersion)
    throw LayoutError("layout version " + std::to_string(h->layout_version) +
                      " is not supported (this build reads version " + std::to_string(kLayoutVersion) + ")");
  if (h->header_size != kHeaderSize)
    throw LayoutError("header_size " + std::to_string(h->header_size) + " is not " +
                      std::to_string(kHeaderSize));
  if ((h->flags & ~kKnownFlags) != 0) throw LayoutError("unknown flags " + std::to_string(h->flags));
  const DtypeInfo* info = find_dtype(h->dtype);
  if (info == nullptr) throw LayoutError("unknown dtype code " + std::to_string(h->dtype));
  if (h->itemsize != info->itemsize)
    throw LayoutError("itemsize " + std::to_string(h->itemsize) + " does not match dtype " + info->name);
  if (h->ndim > kMaxDims) throw LayoutError("ndim " + std::to_string(h->ndim) + " exceeds 8");
  for (std::uint32_t i = h->ndim; i < kMaxDims; ++i)
    if (h->shape[i] != 0) throw LayoutError("unused shape entries are not zero");
  if (h->mutex_size == 0 || h->mutex_size > sizeof(Header::mutex))
    throw LayoutError("mutex_size " + std::to_string(h->mutex_size) + " does not fit the 64-byte mutex slot");
  // The header bytes no field of version 1 uses: zero, so that a later layout can give them a
  // meaning only together with a new layout_version. The mutex slot [384, 448) is not among
  // them: it belongs to the creator's pthread_mutex_t.
  static constexpr std::size_t kReserved[][2] = {{188, 256}, {272, 320}, {328, 384}, {448, kHeaderSize}};
  const auto* bytes = static_cast<const unsigned char*>(base);
  for (const auto& range : kReserved)
    for (std::size_t i = range[0]; i < range[1]; ++i)
      if (bytes[i] != 0)
        throw LayoutError("reserved header byte " + std::to_string(i) +
                          " is not zero (a newer layout, or corrupt)");
  std::vector<std::uint64_t> shape(h->shape, h->shape + h->ndim);
  Geometry g;
  try {
    g = compute_geometry(info->code, shape, h->message_capacity, (h->flags & kFlagBackup) != 0);
  } catch (const ArgumentError& e) {
    throw LayoutError(std::string("impossible geometry: ") + e.what());
  }
  if (h->values_size != g.values_size || h->record_size != g.record_size ||
      h->record_offset[0] != g.record_offset[0] || h->record_offset[1] != g.record_offset[1] ||
      h->values_offset != g.values_offset || h->message_offset != g.message_offset)
    throw LayoutError("sizes or offsets in the header do not match its shape, dtype and capacity");
  if (h->total_size != g.total_size)
    throw LayoutError("total_size " + std::to_string(h->total_size) + " does not match the layout (" +
                      std::to_string(g.total_size) + ")");
  if (g.total_size > mapped)
    throw LayoutError("segment is truncated: header says " + std::to_string(g.total_size) + " bytes, only " +
                      std::to_string(mapped) + " exist");
  return g;
}

}  // namespace xshm
