// The reader: a consistent copy of the record without ever waiting for a writer (the live
// slot, or the backup while the live one is being written), and the stall detection that
// turns a record no writer will ever finish into an error instead of a spin. Readers only
// load from the segment; nothing here stores to shared memory.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "clock.hpp"
#include "cpu.hpp"
#include "errors.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "record.hpp"
#include "segment.hpp"
#include "seqlock.hpp"
#include "typed.hpp"
#include "utf8.hpp"

namespace xshm {

/// The metadata of one consistent record.
struct RecordInfo {
  std::uint64_t seq = 0;
  std::uint64_t counter = 0;
  std::int64_t timestamp_ns = 0;
  std::uint32_t writer_pid = 0;
};

/// A consistent copy of the record.
struct Snapshot : RecordInfo {
  std::vector<unsigned char> data;  // the values, raw little-endian bytes
  std::string message;              // the bytes of the message slot, unchecked (see text())
  Dtype dtype = Dtype::Float64;     // the segment's (read() sets it); values<T>() checks T against it

  /// The values as T, which must be the segment's element type (typed.hpp: double for float64,
  /// float for float32, ...; std::byte for the raw bytes of any dtype): DtypeError otherwise,
  /// naming the type to use.
  template <class T>
  std::vector<T> values() const {
    check_dtype<T>(dtype, "values<{}>()");
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> packs bits: one at a time
      std::vector<bool> out(data.size());
      for (std::size_t i = 0; i < data.size(); ++i) out[i] = data[i] != 0;
      return out;
    } else {
      std::vector<T> out(data.size() / sizeof(T));
      if (!data.empty()) std::memcpy(out.data(), data.data(), out.size() * sizeof(T));
      return out;
    }
  }

  /// The message, checked to be UTF-8: throws MessageDecodeError (with the offset of the
  /// first invalid sequence) when a writer stored other bytes.
  const std::string& text() const {
    const std::size_t valid = utf8::valid_up_to(message);
    if (valid != message.size())
      throw MessageDecodeError(
          "the message is not valid UTF-8 (first invalid byte at offset " + std::to_string(valid) + ")",
          valid);
    return message;
  }
};

namespace reader {

/// What the reader saw at its last look at the slot locks, to tell a live writer from a
/// state that will never change by itself.
struct Stuck {
  std::uint64_t lock[2] = {0, 0};
  std::chrono::steady_clock::time_point since{};
};

/// How long a read tolerates a live writer stalled mid-write on a segment without backup.
inline std::chrono::nanoseconds stall_limit(const detail::Segment& s) noexcept {
  if (s.stall_timeout) return *s.stall_timeout;
  return std::chrono::seconds(2) + std::chrono::nanoseconds(4 * static_cast<std::int64_t>(s.geo.values_size));
}

/// Called every 1024 failed read attempts. With a backup, both slots odd and unchanged is
/// impossible for a working writer (it writes one slot at a time): the segment is corrupt.
/// Without one, the live slot odd and unchanged means its writer died (TornRecordError at
/// once) or stalls (TornRecordError after the stall limit). A lock word that changed since
/// the last look is no verdict: it restarts the clock.
inline void check_stuck(const detail::Segment& s, Stuck& st) {
  const std::uint64_t l0 = s.meta(0)->lock.load(std::memory_order_relaxed);
  const std::uint64_t l1 = s.geo.backup ? s.meta(1)->lock.load(std::memory_order_relaxed) : 0;
  const bool same = l0 == st.lock[0] && l1 == st.lock[1];
  const auto now = std::chrono::steady_clock::now();
  if (!same || !(l0 & 1)) {
    st = Stuck{{l0, l1}, now};
    return;
  }
  if (s.geo.backup) {
    if (l1 & 1)
      throw LayoutError("corrupt segment " + s.name + ": both record slots are marked as being written");
    return;
  }
  const std::uint32_t owner = s.header()->owner_pid.load(std::memory_order_seq_cst);
  // A writer that finished the slot since l0 was loaded has cleared owner_pid after its
  // end_slot_write: reading that 0 (or the next writer's pid) and the old odd l0 is no verdict.
  // SYNC POINT: the seq_cst load of owner_pid acquires the writer's seq_cst clear
  // (WriterLock::unlock), which follows its release of the slot, so this re-load sees the
  // slot's newer value.
  if (s.meta(0)->lock.load(std::memory_order_seq_cst) != l0) {
    st = Stuck{{s.meta(0)->lock.load(std::memory_order_relaxed), l1}, now};
    return;
  }
  if (!detail::process_alive(owner))
    throw TornRecordError("the record of " + s.name +
                          " was torn by a writer that died mid-write; it stays unreadable until the "
                          "next complete publish");
  const std::chrono::nanoseconds limit = stall_limit(s);
  if (now - st.since > limit)
    throw TornRecordError("no complete record of " + s.name + " for " + format_duration(limit) +
                          ": its writer (pid " + std::to_string(owner) + ") is stalled mid-write");
}

/// A consistent copy: `values_out` gets values_size bytes (nullptr: skip), `message_buf`
/// (room for message_capacity bytes; nullptr: skip) the message and `message_len` its length.
/// Tries the live slot, then the backup; never waits for a writer.
inline RecordInfo read_raw(const detail::Segment& s, void* values_out, char* message_buf,
                           std::uint32_t* message_len) {
  detail::MetaImage img{};
  const std::uint32_t cap = s.geo.message_capacity;
  Stuck stuck;
  for (unsigned attempt = 0;; ++attempt) {
    for (int i = 0; i < s.slots(); ++i) {
      const RecordMeta* m = s.meta(i);
      const bool ok = seqlock::try_read(m->lock, [&] {
        img = detail::load_meta(m);
        if (values_out != nullptr) seqlock::load_bytes(values_out, s.values(i), s.geo.values_size);
        if (message_buf != nullptr)
          seqlock::load_bytes(message_buf, s.message(i), std::min(img.message_len, cap));
      });
      if (ok) {
        if (img.message_len > cap)
          throw LayoutError("corrupt record: message length " + std::to_string(img.message_len) +
                            " exceeds the slot's " + std::to_string(cap) + " bytes");
        if (message_len != nullptr) *message_len = img.message_len;
        return RecordInfo{img.seq, img.counter, img.timestamp_ns, img.writer_pid};
      }
    }
    if ((attempt & 1023) == 1023) check_stuck(s, stuck);
    if (attempt < 64)
      cpu::relax();
    else
      sched_yield();
  }
}

}  // namespace reader
}  // namespace xshm
