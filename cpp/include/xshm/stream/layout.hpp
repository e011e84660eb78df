// The bytes of a stream segment, layout version 2: the header page, the reader and writer
// tables, the ring of message slots, and the one function that computes every size and
// offset from the creation parameters. docs/LAYOUT.md ("Streams") describes the same bytes;
// change both together. Records keep layout version 1, byte for byte: a version-1 reader
// refuses this segment on its version field, and this build tells the two kinds apart by the
// `kind` field (offset 28) of a version-2 header.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../errors.hpp"
#include "../layout.hpp"

namespace xshm {

inline constexpr std::uint32_t kStreamLayoutVersion = 2;
/// Values of the version-2 header's `kind`. 1 is kept for a version-2 record.
inline constexpr std::uint32_t kKindStream = 2;
inline constexpr std::uint32_t kStreamFlagDropOldest = 1u << 0;
inline constexpr std::uint32_t kStreamKnownFlags = kStreamFlagDropOldest;

inline constexpr std::size_t kSlotHeaderSize = 64;
inline constexpr std::size_t kReaderEntrySize = 128;
inline constexpr std::size_t kWriterEntrySize = 64;
inline constexpr std::uint64_t kMaxStreamCapacity = std::uint64_t{1} << 30;
inline constexpr std::uint64_t kMaxMessageBytes = std::uint64_t{1} << 30;
inline constexpr std::uint64_t kMaxRingBytes = std::uint64_t{1} << 40;
inline constexpr std::uint32_t kMaxStreamReaders = 1024;
inline constexpr std::uint32_t kMaxStreamWriters = 1024;
inline constexpr std::uint32_t kMaxStreamGroups = 1024;
inline constexpr std::size_t kGroupEntrySize = 192;
inline constexpr std::size_t kMaxGroupName = 40;
/// Sequence numbers fit in the 62 high bits of a slot word.
inline constexpr std::uint64_t kMaxStreamSeq = (std::uint64_t{1} << 62) - 1;

/// How writers wait for readers: "block" (the slowest attached reader gates them) or
/// "drop_oldest" (they overwrite; a lapped reader counts what it lost).
enum class Backpressure : std::uint32_t { block = 0, drop_oldest = 1 };

/// The slot word: 0 for a slot never written, else (seq << 2) | tag.
namespace slot_word {
inline constexpr std::uint64_t kWriting = 1;    // a writer holds the slot for `seq`
inline constexpr std::uint64_t kCommitted = 2;  // the message `seq` is complete
inline constexpr std::uint64_t kAbandoned = 3;  // `seq` was lost with its writer: skip it
inline constexpr std::uint64_t make(std::uint64_t seq, std::uint64_t tag) noexcept {
  return (seq << 2) | tag;
}
inline constexpr std::uint64_t seq(std::uint64_t word) noexcept { return word >> 2; }
inline constexpr std::uint64_t tag(std::uint64_t word) noexcept { return word & 3; }
}  // namespace slot_word

/// The header of every slot; the payload follows at +64.
struct SlotHeader {
  std::atomic<std::uint64_t> word;  // 0   see slot_word
  std::uint64_t length;             // 8   payload bytes of the message (<= max_bytes)
  std::int64_t timestamp_ns;        // 16  CLOCK_REALTIME when it was sent
  std::uint32_t writer_pid;         // 24
  std::uint32_t writer_index;       // 28  entry of the writer table that claimed the slot
  std::uint64_t writer_state;       // 32  that entry's state word when it claimed it
  std::uint64_t cancelled;          // 40  seq + 1 of a claim its writer dropped (ABANDONED), else stale
  std::uint64_t reserved[2];        // 48
};
static_assert(sizeof(SlotHeader) == kSlotHeaderSize && offsetof(SlotHeader, cancelled) == 40,
              "SlotHeader fills one cache line, at the offsets docs/LAYOUT.md documents.");

/// One reader: line 0 is written by the reader alone (its cursor, per message); line 1 by
/// whoever attaches, detaches or reaps it.
struct ReaderEntry {
  std::atomic<std::uint64_t> cursor;      // 0   the next sequence this reader takes
  std::atomic<std::uint64_t> lost;        // 8   messages it missed (lapped, or their writer died)
  std::atomic<std::uint64_t> received;    // 16  messages it took
  std::atomic<std::uint64_t> start;       // 24  the cursor it attached at
  std::atomic<std::uint32_t> sleeping;    // 32  its generation while counted in data_waiters, else 0
  std::uint32_t reserved0a;               // 36
  std::atomic<std::uint64_t> skipped;     // 40  claims dropped by their writer (never sent); received
                                          //     + lost + skipped = cursor - start
  std::atomic<std::uint64_t> hold;        // 48  a group member, under the group mutex: the step it is
                                          //     in, (group cursor << 2) | step (group.hpp); else 0
  std::uint64_t reserved0[1];             // 56
  std::atomic<std::uint64_t> state;       // 64  0 free; (generation << 8) | 1 attached
  std::atomic<std::uint32_t> pid;         // 72  informational
  std::uint32_t generation;               // 76  attachments so far (under the mutex)
  std::atomic<std::int64_t> attached_ns;  // 80
  std::atomic<std::uint32_t> group;       // 88  group index + 1 of a member, else 0 (at attach)
  std::uint32_t reserved2a;               // 92
  std::uint64_t reserved2[4];             // 96
};
static_assert(sizeof(ReaderEntry) == kReaderEntrySize && offsetof(ReaderEntry, start) == 24 &&
                  offsetof(ReaderEntry, sleeping) == 32 && offsetof(ReaderEntry, skipped) == 40 &&
                  offsetof(ReaderEntry, hold) == 48 && offsetof(ReaderEntry, state) == 64 &&
                  offsetof(ReaderEntry, group) == 88,
              "ReaderEntry offsets are the ones docs/LAYOUT.md documents.");

/// One writer handle that has sent at least once.
struct WriterEntry {
  std::atomic<std::uint64_t> state;       // 0   0 free; (generation << 8) | 1 attached
  std::atomic<std::uint32_t> pid;         // 8
  std::uint32_t generation;               // 12  registrations so far (under the mutex)
  std::atomic<std::uint64_t> sent;        // 16  messages it claimed
  std::atomic<std::int64_t> attached_ns;  // 24
  std::atomic<std::uint32_t> sleeping;    // 32  its generation while counted in space_waiters, else 0
  std::uint32_t reserved1a;               // 36
  std::uint64_t reserved1[3];             // 40
};
static_assert(sizeof(WriterEntry) == kWriterEntrySize && offsetof(WriterEntry, sleeping) == 32,
              "WriterEntry fills one cache line, at the offsets docs/LAYOUT.md documents.");

/// One named group of readers (a work queue): its members share its cursor, each message goes
/// to one of them. Line 0 is written by the member holding the group mutex; the rest by whoever
/// creates the group, once, under the stream mutex. A group outlives its members.
struct GroupEntry {
  std::atomic<std::uint64_t> cursor;    // 0   the next sequence a member takes
  std::atomic<std::uint64_t> received;  // 8   messages its members took
  std::atomic<std::uint64_t> lost;      // 16  lapped, lost with their writer, or with a member
  std::atomic<std::uint64_t> skipped;   // 24  dropped claims; received + lost + skipped =
                                        //     cursor - start
  std::atomic<std::uint64_t> start;     // 32  the cursor it was created at
  std::uint64_t reserved0[3];           // 40
  unsigned char mutex[64];              // 64  pthread_mutex_t, robust, process-shared
  std::atomic<std::uint64_t> state;     // 128 kGroupFree, or kGroupActive once created
  std::uint32_t generation;             // 136 creations so far
  std::uint32_t name_len;               // 140 1 to 40
  std::int64_t created_ns;              // 144
  char name[kMaxGroupName];             // 152 not terminated
};
static_assert(sizeof(GroupEntry) == kGroupEntrySize && offsetof(GroupEntry, received) == 8 &&
                  offsetof(GroupEntry, lost) == 16 && offsetof(GroupEntry, skipped) == 24 &&
                  offsetof(GroupEntry, start) == 32 && offsetof(GroupEntry, mutex) == 64 &&
                  offsetof(GroupEntry, state) == 128 && offsetof(GroupEntry, generation) == 136 &&
                  offsetof(GroupEntry, name_len) == 140 && offsetof(GroupEntry, created_ns) == 144 &&
                  offsetof(GroupEntry, name) == 152,
              "GroupEntry offsets are the ones docs/LAYOUT.md documents.");
static_assert(sizeof(pthread_mutex_t) <= sizeof(GroupEntry::mutex), "A pthread_mutex_t fits a group's slot.");
inline constexpr std::uint64_t kGroupFree = 0;
inline constexpr std::uint64_t kGroupActive = 1;

inline constexpr std::uint64_t kEntryAttached = 1;
inline constexpr std::uint64_t entry_state(std::uint64_t generation) noexcept {
  return (generation << 8) | kEntryAttached;
}
/// The generation of an entry's state word, as its `sleeping` field holds it.
inline constexpr std::uint32_t entry_generation(std::uint64_t state) noexcept {
  return static_cast<std::uint32_t>(state >> 8);
}
/// The next generation of an entry: never 0, which `sleeping` reserves for "not asleep".
inline constexpr std::uint32_t next_generation(std::uint32_t g) noexcept { return g + 1 == 0 ? 1 : g + 1; }

/// Page 0 of a stream segment. Identity [0, 256) is written once by the creator before
/// `state` turns READY; the control lines after it each have their own cache line.
struct StreamHeader {
  // --- identity [0, 256) ---
  char magic[8];                     // 0   kMagic
  std::uint32_t layout_version;      // 8   2
  std::atomic<std::uint32_t> state;  // 12  0 while building, kStateReady once published
  std::uint64_t total_size;          // 16
  std::uint32_t header_size;         // 24  kHeaderSize
  std::uint32_t kind;                // 28  kKindStream
  std::uint32_t flags;               // 32  kStreamFlagDropOldest
  std::uint32_t capacity;            // 36  slots in the ring
  std::uint64_t max_bytes;           // 40  payload bytes a slot holds
  std::uint64_t slot_size;           // 48  64 + round_up(max_bytes, 64)
  std::uint64_t slots_offset;        // 56  page-aligned start of the ring
  std::uint32_t max_readers;         // 64
  std::uint32_t max_writers;         // 68
  std::uint64_t readers_offset;      // 72  kHeaderSize
  std::uint64_t writers_offset;      // 80  readers_offset + max_readers * 128
  std::uint32_t dtype;               // 88  0: byte messages; a Dtype code: frames
  std::uint32_t ndim;                // 92  frames only
  std::uint64_t shape[kMaxDims];     // 96  frames only; unused dims are 0
  std::uint32_t mutex_size;          // 160
  std::uint32_t mutex_abi;           // 164
  std::uint8_t creation_id[16];      // 168
  std::int64_t created_ns;           // 184
  std::uint32_t creator_pid;         // 192
  std::uint32_t max_groups;          // 196 entries of the group table (0: none)
  std::uint64_t groups_offset;       // 200 writers_offset + max_writers * 64, or 0 with no table
  std::uint8_t reserved0[48];        // 208
  // --- head line [256, 320): writers (under the mutex) and waiting readers ---
  alignas(kCacheLine) std::atomic<std::uint64_t> head;  // 256 the sequence the next claim gets
  std::atomic<std::uint32_t> data_epoch;                // 264 futex: bumped after every commit
  std::atomic<std::uint32_t> data_waiters;              // 268 readers sleeping on data_epoch
  std::atomic<std::uint64_t> claim_seq;                 // 272 seq + 1 of a dropping claim in progress
  std::atomic<std::uint64_t> claim_dropped;             // 280 `dropped` once that claim is made
  // --- space line [320, 384): readers wake writers waiting for room ---
  alignas(kCacheLine) std::atomic<std::uint32_t> space_epoch;  // 320 futex
  std::atomic<std::uint32_t> space_waiters;                    // 324 writers sleeping on it
  // --- stats line [384, 448) ---
  alignas(kCacheLine) std::atomic<std::uint64_t> dropped;  // 384 overwritten with no reader attached
  std::atomic<std::uint64_t> abandoned;                    // 392 claims lost with their writer
  std::atomic<std::uint32_t> readers_gen;                  // 400 bumped by every attach/detach/reap
  std::atomic<std::uint32_t> reaped;                       // 404 dead readers and writers reaped
  // --- writer line [448, 512) ---
  alignas(kCacheLine) std::atomic<std::uint32_t> owner_pid;  // 448 pid holding the mutex, 0 none
  std::atomic<std::uint32_t> recoveries;                     // 452
  alignas(kCacheLine) unsigned char mutex[64];               // 512 pthread_mutex_t
};
static_assert(offsetof(StreamHeader, magic) == offsetof(Header, magic) &&
                  offsetof(StreamHeader, state) == offsetof(Header, state),
              "The prefix every version shares (validate_prefix) sits where the record's does.");
static_assert(offsetof(StreamHeader, kind) == 28 && offsetof(StreamHeader, capacity) == 36 &&
                  offsetof(StreamHeader, shape) == 96 && offsetof(StreamHeader, mutex_size) == 160 &&
                  offsetof(StreamHeader, creator_pid) == 192 && offsetof(StreamHeader, max_groups) == 196 &&
                  offsetof(StreamHeader, groups_offset) == 200 && offsetof(StreamHeader, head) == 256 &&
                  offsetof(StreamHeader, claim_dropped) == 280 &&
                  offsetof(StreamHeader, space_epoch) == 320 && offsetof(StreamHeader, dropped) == 384 &&
                  offsetof(StreamHeader, reaped) == 404 && offsetof(StreamHeader, owner_pid) == 448 &&
                  offsetof(StreamHeader, mutex) == 512,
              "StreamHeader offsets are the ones docs/LAYOUT.md documents.");
static_assert(sizeof(StreamHeader) <= kHeaderSize, "The stream header fits in its page.");

/// Everything an opener needs about a stream, computed from the creation parameters.
struct StreamGeometry {
  std::uint64_t capacity = 0;
  std::uint64_t max_bytes = 0;
  Backpressure backpressure = Backpressure::block;
  std::uint32_t max_readers = 0;
  std::uint32_t max_writers = 0;
  std::uint32_t max_groups = 0;
  std::uint32_t dtype = 0;  // 0: bytes
  std::vector<std::uint64_t> shape;
  std::uint64_t slot_size = 0;
  std::uint64_t readers_offset = 0;
  std::uint64_t writers_offset = 0;
  std::uint64_t groups_offset = 0;  // 0 when max_groups is 0
  std::uint64_t slots_offset = 0;
  std::uint64_t total_size = 0;
};

/// The one place that decides a stream's sizes and offsets. Throws ArgumentError for what the
/// layout cannot hold. `dtype` 0 makes a byte stream of messages up to `max_bytes`; a Dtype
/// code makes a frame stream whose max_bytes must be prod(shape) * itemsize.
inline StreamGeometry compute_stream_geometry(std::uint64_t capacity, std::uint64_t max_bytes,
                                              Backpressure backpressure, std::uint32_t max_readers,
                                              std::uint32_t max_writers, std::uint32_t dtype = 0,
                                              const std::vector<std::uint64_t>& shape = {},
                                              std::uint32_t max_groups = 0) {
  if (capacity == 0 || capacity > kMaxStreamCapacity)
    throw ArgumentError("capacity must be 1 to 2**30 messages, got " + std::to_string(capacity));
  if (max_bytes == 0 || max_bytes > kMaxMessageBytes)
    throw ArgumentError("max_bytes must be 1 to 2**30 bytes, got " + std::to_string(max_bytes));
  if (max_readers == 0 || max_readers > kMaxStreamReaders)
    throw ArgumentError("max_readers must be 1 to 1024, got " + std::to_string(max_readers));
  if (max_writers == 0 || max_writers > kMaxStreamWriters)
    throw ArgumentError("max_writers must be 1 to 1024, got " + std::to_string(max_writers));
  if (max_groups > kMaxStreamGroups)
    throw ArgumentError("max_groups must be 0 to 1024, got " + std::to_string(max_groups));
  if (backpressure != Backpressure::block && backpressure != Backpressure::drop_oldest)
    throw ArgumentError("unknown backpressure " + std::to_string(static_cast<unsigned>(backpressure)));
  if (dtype == 0) {
    if (!shape.empty()) throw ArgumentError("a byte stream has no shape");
  } else {
    const DtypeInfo& info = dtype_info(static_cast<Dtype>(dtype));
    if (shape.size() > kMaxDims) throw ArgumentError("a frame has at most 8 dimensions");
    std::uint64_t bytes = info.itemsize;
    for (std::uint64_t e : shape) {
      if (e != 0 && bytes > kMaxMessageBytes / e) throw ArgumentError("a frame is limited to 2**30 bytes");
      bytes *= e;
    }
    if (bytes != max_bytes)
      throw ArgumentError("a frame of this dtype and shape is " + std::to_string(bytes) + " bytes, not " +
                          std::to_string(max_bytes));
  }
  StreamGeometry g;
  g.capacity = capacity;
  g.max_bytes = max_bytes;
  g.backpressure = backpressure;
  g.max_readers = max_readers;
  g.max_writers = max_writers;
  g.max_groups = max_groups;
  g.dtype = dtype;
  g.shape = shape;
  g.slot_size = kSlotHeaderSize + round_up(max_bytes, kCacheLine);
  if (capacity > kMaxRingBytes / g.slot_size)
    throw ArgumentError("capacity * max_bytes is too large: the ring would exceed 2**40 bytes");
  g.readers_offset = kHeaderSize;
  g.writers_offset = g.readers_offset + std::uint64_t{max_readers} * kReaderEntrySize;
  const std::uint64_t writers_end = g.writers_offset + std::uint64_t{max_writers} * kWriterEntrySize;
  g.groups_offset = max_groups == 0 ? 0 : writers_end;
  g.slots_offset = round_up(writers_end + std::uint64_t{max_groups} * kGroupEntrySize, kHeaderSize);
  g.total_size = round_up(g.slots_offset + capacity * g.slot_size, kHeaderSize);
  return g;
}

/// What kind of segment a mapped header page holds, read from the fields every layout
/// version shares (magic, version, and in version 2 the kind). For dispatch and messages
/// only: the full check is validate_header() or validate_stream_header().
enum class SegmentKind { unknown, record, stream };

inline SegmentKind peek_kind(const void* base, std::uint64_t mapped) noexcept {
  if (mapped < kHeaderSize) return SegmentKind::unknown;
  const auto* b = static_cast<const unsigned char*>(base);
  if (std::memcmp(b, kMagic, sizeof kMagic) != 0) return SegmentKind::unknown;
  std::uint32_t version = 0;
  std::uint32_t kind = 0;
  std::memcpy(&version, b + 8, 4);
  std::memcpy(&kind, b + 28, 4);
  if (version == kLayoutVersion) return SegmentKind::record;
  if (version == kStreamLayoutVersion && kind == kKindStream) return SegmentKind::stream;
  return SegmentKind::unknown;
}

/// Checks a stream header mapped with `mapped` bytes, in docs/LAYOUT.md's order, and returns
/// its geometry. Nothing is read beyond `mapped`. Throws LayoutError naming the first bad field.
inline StreamGeometry validate_stream_header(const void* base, std::uint64_t mapped,
                                             std::string_view canon = {}) {
  validate_prefix(base, mapped, canon);  // the page, READY (acquire), the magic (layout.hpp)
  const auto* h = static_cast<const StreamHeader*>(base);
  if (h->layout_version == kLayoutVersion)
    throw LayoutError(
        "it is a record (layout version 1), not a stream: open it with SharedMemoryManager.open");
  if (h->layout_version != kStreamLayoutVersion)
    throw LayoutError("layout version " + std::to_string(h->layout_version) +
                      " is not supported (this build reads versions 1 and 2)");
  if (h->header_size != kHeaderSize)
    throw LayoutError("header_size " + std::to_string(h->header_size) + " is not " +
                      std::to_string(kHeaderSize));
  if (h->kind != kKindStream) throw LayoutError("kind " + std::to_string(h->kind) + " is not a stream (2)");
  if ((h->flags & ~kStreamKnownFlags) != 0) throw LayoutError("unknown flags " + std::to_string(h->flags));
  if (h->ndim > kMaxDims) throw LayoutError("ndim " + std::to_string(h->ndim) + " exceeds 8");
  if (h->dtype == 0 && h->ndim != 0) throw LayoutError("a byte stream (dtype 0) has ndim 0");
  if (h->dtype != 0 && find_dtype(h->dtype) == nullptr)
    throw LayoutError("unknown dtype code " + std::to_string(h->dtype));
  for (std::uint32_t i = h->ndim; i < kMaxDims; ++i)
    if (h->shape[i] != 0) throw LayoutError("unused shape entries are not zero");
  if (h->mutex_size == 0 || h->mutex_size > sizeof(StreamHeader::mutex))
    throw LayoutError("mutex_size " + std::to_string(h->mutex_size) + " does not fit the 64-byte mutex slot");
  static constexpr std::size_t kReserved[][2] = {{208, 256}, {288, 320}, {328, 384},
                                                 {408, 448}, {456, 512}, {576, kHeaderSize}};
  const auto* bytes = static_cast<const unsigned char*>(base);
  for (const auto& range : kReserved)
    for (std::size_t i = range[0]; i < range[1]; ++i)
      if (bytes[i] != 0)
        throw LayoutError("reserved header byte " + std::to_string(i) +
                          " is not zero (a newer layout, or corrupt)");
  StreamGeometry g;
  try {
    g = compute_stream_geometry(
        h->capacity, h->max_bytes,
        (h->flags & kStreamFlagDropOldest) ? Backpressure::drop_oldest : Backpressure::block, h->max_readers,
        h->max_writers, h->dtype, std::vector<std::uint64_t>(h->shape, h->shape + h->ndim), h->max_groups);
  } catch (const Error& e) {
    throw LayoutError(std::string("impossible geometry: ") + e.what());
  }
  if (h->slot_size != g.slot_size || h->slots_offset != g.slots_offset ||
      h->readers_offset != g.readers_offset || h->writers_offset != g.writers_offset ||
      h->groups_offset != g.groups_offset)
    throw LayoutError("sizes or offsets in the header do not match its capacity, max_bytes and tables");
  if (h->total_size != g.total_size)
    throw LayoutError("total_size " + std::to_string(h->total_size) + " does not match the layout (" +
                      std::to_string(g.total_size) + ")");
  if (g.total_size > mapped)
    throw LayoutError("segment is truncated: header says " + std::to_string(g.total_size) + " bytes, only " +
                      std::to_string(mapped) + " exist");
  return g;
}

}  // namespace xshm
