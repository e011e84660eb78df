// A values window: a second mapping of the live slot's values, for bindings that hand the
// values of an in-place write transaction to code whose access they cannot revoke (numpy
// views derived from the block's array). While the transaction runs the window shares the
// segment's pages; detach() turns the same address range, in place and without a gap, into
// private pages holding what the window showed, so a late write through anything still
// pointing there lands in this process's private memory: it can never reach the record, and
// never faults. Who holds the window decides when it goes (munmap on destruction).
//
// Linux only (mremap): a window is made with mremap(old_size 0), which maps the same shared
// pages again, and detached by moving a private copy over it (MREMAP_FIXED replaces the range
// atomically).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "errors.hpp"
#include "segment.hpp"
#include "seqlock.hpp"

namespace xshm {

class ValuesWindow {
 public:
  ValuesWindow(const ValuesWindow&) = delete;
  ValuesWindow& operator=(const ValuesWindow&) = delete;
  ~ValuesWindow() {
    if (base_ != nullptr) ::munmap(base_, len_);
  }

  /// A window on the live slot's values of `s` (a writable mapping).
  static std::shared_ptr<ValuesWindow> map(const detail::Segment& s) {
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto first = reinterpret_cast<std::uintptr_t>(s.values(0));
    const std::uintptr_t start = first & ~(page - 1);
    std::uintptr_t end = (first + s.geo.values_size + page - 1) & ~(page - 1);
    if (end == start) end += page;  // no values: one page of the slot, never written
    const std::size_t len = end - start;
    void* p = ::mremap(reinterpret_cast<void*>(start), 0, len, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) detail::throw_errno(errno, "mremap (values window)");
#ifdef MADV_POPULATE_WRITE
    ::madvise(p, len, MADV_POPULATE_WRITE);  // a hint: page tables filled now, not fault by fault
#endif
    return std::shared_ptr<ValuesWindow>(new ValuesWindow(p, len, first - start));
  }

  /// Where the live values are in the window.
  void* values() const noexcept { return static_cast<unsigned char*>(base_) + offset_; }
  bool detached() const noexcept { return detached_; }

  /// Makes the window private: a copy of what it shows now replaces the shared pages at the
  /// same addresses. Call it while the writer mutex is still held (the copy is then exactly
  /// the block's values). Idempotent. When the copy cannot be made (no memory, or the
  /// process's map count is at vm.max_map_count), the window is made read-only instead, so
  /// that a late write through a view still cannot reach the shared record (it faults: the
  /// lesser harm), and the error is thrown.
  void detach() {
    if (detached_) return;
    detached_ = true;  // never handed out again, whatever happens below
    void* copy =
        ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (copy == MAP_FAILED) fail_closed(errno, "mmap (detached values window)");
    seqlock::load_bytes(copy, base_, len_);
    if (::mremap(copy, len_, len_, MREMAP_MAYMOVE | MREMAP_FIXED, base_) == MAP_FAILED) {
      const int err = errno;
      ::munmap(copy, len_);
      fail_closed(err, "mremap (detached values window)");
    }
  }

 private:
  ValuesWindow(void* base, std::size_t len, std::size_t offset) noexcept
      : base_(base), len_(len), offset_(offset) {}
  [[noreturn]] void fail_closed(int err, const char* what) {
    ::mprotect(base_, len_, PROT_READ);  // changes protection only: needs no new mapping
    detail::throw_errno(err, what);
  }
  void* base_;
  std::size_t len_;
  std::size_t offset_;
  bool detached_ = false;
};

}  // namespace xshm
