// The seqlock protocol over one record slot: how a writer (already serialized by the robust
// mutex) marks a slot odd, copies into it and marks it even, and how a reader copies a slot
// and learns whether the copy is consistent. The slot's lock word and data live in shared
// memory; readers only ever load from it.
//
// Why the reader's copy is data-race-free under the C++ memory model: every byte of a record
// is accessed through atomic loads and stores (8-byte words, bytes for a tail), relaxed in
// normal builds, so a reader racing a writer is never UB; it may see a mix of old and new
// words, which the second look at the lock word rejects. Ordering follows Boehm (HPL-2012-68)
// and the Linux kernel seqlock: acquire load of the lock word, relaxed data loads, acquire
// fence, relaxed re-load. ThreadSanitizer does not model standalone fences, so under TSan the
// data loads are acquire and the data stores release instead of the fences: strictly
// stronger, same outcome, and no -Wtsan warning. Bulk copies stream their stores (cpu.hpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu.hpp"

namespace xshm::seqlock {

inline constexpr int kDataLoad = XSHM_TSAN ? __ATOMIC_ACQUIRE : __ATOMIC_RELAXED;
inline constexpr int kDataStore = XSHM_TSAN ? __ATOMIC_RELEASE : __ATOMIC_RELAXED;

/// Copies n bytes out of shared memory with atomic loads. `src` is 8-byte aligned.
inline void load_bytes(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* w = static_cast<const std::uint64_t*>(src);
  const std::size_t words = n / 8;
#if XSHM_STREAM_STORES
  if (n >= cpu::kStreamBytes && reinterpret_cast<std::uintptr_t>(d) % 8 == 0) {
    auto* dw = reinterpret_cast<std::uint64_t*>(d);  // private memory: streaming is just faster
    for (std::size_t i = 0; i < words; ++i) cpu::stream_word(dw + i, __atomic_load_n(w + i, kDataLoad));
    cpu::stream_fence();
  } else
#endif
  // Unrolled: a one-word loop body runs at half speed when the compiler happens to place it
  // across a 64-byte fetch boundary (read() of 8 KB took 2x on an EPYC after an unrelated
  // change moved the code); four words an iteration make the copy indifferent to where it lands.
#pragma GCC unroll 4
    for (std::size_t i = 0; i < words; ++i) {
      const std::uint64_t v = __atomic_load_n(w + i, kDataLoad);
      std::memcpy(d + 8 * i, &v, 8);
    }
  const auto* b = static_cast<const unsigned char*>(src);
  for (std::size_t i = words * 8; i < n; ++i) d[i] = __atomic_load_n(b + i, kDataLoad);
}

/// Copies n bytes into shared memory with atomic stores. `dst` is 8-byte aligned.
inline void store_bytes(void* dst, const void* src, std::size_t n) noexcept {
  auto* w = static_cast<std::uint64_t*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  const std::size_t words = n / 8;
#if XSHM_STREAM_STORES
  if (n >= cpu::kStreamBytes) {
    for (std::size_t i = 0; i < words; ++i) {
      std::uint64_t v;
      std::memcpy(&v, s + 8 * i, 8);
      cpu::stream_word(w + i, v);
    }
    cpu::stream_fence();  // the streamed words are visible before anything stored after this copy
  } else
#endif
#pragma GCC unroll 4  // as in load_bytes
    for (std::size_t i = 0; i < words; ++i) {
      std::uint64_t v;
      std::memcpy(&v, s + 8 * i, 8);
      __atomic_store_n(w + i, v, kDataStore);
    }
  auto* b = static_cast<unsigned char*>(dst);
  for (std::size_t i = words * 8; i < n; ++i) __atomic_store_n(b + i, s[i], kDataStore);
}

/// Shared-to-shared copy (the backup refresh and the recovery restore): both 8-byte aligned.
inline void copy_shared(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  const auto* s = static_cast<const std::uint64_t*>(src);
#if XSHM_STREAM_STORES
  if (n >= cpu::kStreamBytes) {
    for (std::size_t i = 0; i < n / 8; ++i) cpu::stream_word(d + i, __atomic_load_n(s + i, kDataLoad));
    cpu::stream_fence();
  } else
#endif
#pragma GCC unroll 4  // as in load_bytes
    for (std::size_t i = 0; i < n / 8; ++i)
      __atomic_store_n(d + i, __atomic_load_n(s + i, kDataLoad), kDataStore);
  auto* db = static_cast<unsigned char*>(dst);
  const auto* sb = static_cast<const unsigned char*>(src);
  for (std::size_t i = n / 8 * 8; i < n; ++i)
    __atomic_store_n(db + i, __atomic_load_n(sb + i, kDataLoad), kDataStore);
}

inline void acquire_fence() noexcept {
#if !XSHM_TSAN
  std::atomic_thread_fence(std::memory_order_acquire);
#endif
}

inline void release_fence() noexcept {
#if !XSHM_TSAN
  std::atomic_thread_fence(std::memory_order_release);
#endif
}

/// A slot write begins (mutex held): make the slot's lock word odd. A word left odd by a writer
/// that died stays odd; the returned odd value is what end_slot_write() completes.
inline std::uint64_t begin_slot_write(std::atomic<std::uint64_t>& lock) noexcept {
  std::uint64_t s = lock.load(std::memory_order_relaxed);
  if ((s & 1) == 0) lock.store(++s, std::memory_order_relaxed);
  // SYNC POINT: pairs with the reader's acquire_fence(): a reader that loads any data word
  // stored after this fence then sees the odd value (or later) when it re-loads the lock.
  release_fence();
  return s;
}

/// A slot write ends: publish the slot (even).
inline void end_slot_write(std::atomic<std::uint64_t>& lock, std::uint64_t odd) noexcept {
  // SYNC POINT: pairs with the reader's acquire load in try_read(): a reader that sees this
  // even value sees every data word stored before it.
  lock.store(odd + 1, std::memory_order_release);
}

/// Reader: runs copy() between two looks at the lock word. True when the copy is a
/// consistent image of one completed write; false when a writer was (or is) in the slot.
template <class Copy>
inline bool try_read(const std::atomic<std::uint64_t>& lock, Copy&& copy) noexcept {
  const std::uint64_t s0 = lock.load(std::memory_order_acquire);  // pairs with end_slot_write()
  if (s0 & 1) return false;
  copy();
  acquire_fence();  // pairs with begin_slot_write()'s release fence
  return lock.load(std::memory_order_relaxed) == s0;
}

}  // namespace xshm::seqlock
