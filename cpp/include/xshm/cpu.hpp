// What the CPU offers beside plain loads and stores: streaming (non-temporal) stores for bulk
// copies, prefetch hints, and the spin-wait hint. Touches only the memory it is handed; knows
// nothing of segments, slots or locks. seqlock.hpp builds its bulk copies on it, the writer
// its prefetch before a publish, every spinning loop its pause.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__SANITIZE_THREAD__)
#define XSHM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define XSHM_TSAN 1
#endif
#endif
#ifndef XSHM_TSAN
#define XSHM_TSAN 0
#endif

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace xshm::cpu {

// Bulk copies (at least kStreamBytes) write with non-temporal stores on x86-64: a store that
// misses the cache otherwise first reads the line it overwrites, so a plain copy of a large
// array moves three bytes for every two that memcpy (which streams) moves. An 8-byte aligned
// MOVNTI is single-copy atomic like an atomic store; it is written in inline assembly, outside
// the C++ abstract machine, so no non-atomic access races with a reader. NT stores are weakly
// ordered, so each bulk copy ends with stream_fence() (SFENCE), before the release store that
// publishes it. Not under TSan, which must see every access as an atomic.
inline constexpr std::size_t kStreamBytes = 256 * 1024;
#if (defined(__x86_64__) || defined(_M_X64)) && !XSHM_TSAN
#define XSHM_STREAM_STORES 1
inline void stream_word(std::uint64_t* dst, std::uint64_t v) noexcept {
  asm volatile("movnti %1, %0" : "=m"(*dst) : "r"(v));
}
inline void stream_fence() noexcept { asm volatile("sfence" ::: "memory"); }
#else
#define XSHM_STREAM_STORES 0
#endif

// Prefetching before a publish touches shared lines: PREFETCHW asks for ownership of the
// live slot's lines (held by the readers since their last copy) before the writer takes the
// mutex and the clock, so the transfers overlap that work instead of following it. Hints
// only: they never change what is read or written. At most kPrefetchBytes per call: beyond
// that the hardware prefetcher follows the copy. (Prefetching the whole slot before a read's
// copy measured no gain; the copy loop already has its loads in flight.)
inline constexpr std::size_t kPrefetchBytes = 4096;

#if defined(__x86_64__)
/// PREFETCHW exists on every x86-64 CPU that reports PRFCHW (all AMD, Intel since Broadwell).
inline bool have_prefetchw() noexcept {
  static const bool have = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(0x80000001u, &a, &b, &c, &d) != 0 && (c & bit_PRFCHW) != 0;
  }();
  return have;
}
#endif

inline void prefetch_for_write(const void* p, std::size_t n) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  n = n < kPrefetchBytes ? n : kPrefetchBytes;
#if defined(__x86_64__)
  if (!have_prefetchw()) return;
  for (std::size_t off = 0; off < n; off += 64) asm volatile("prefetchw %0" ::"m"(b[off]));
#else
  for (std::size_t off = 0; off < n; off += 64) __builtin_prefetch(b + off, 1, 3);
#endif
}

inline void prefetch_for_read(const void* p) noexcept { __builtin_prefetch(p, 0, 3); }

/// The CPU's spin-wait hint.
inline void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace xshm::cpu
