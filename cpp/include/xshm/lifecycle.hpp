// The lifecycle every kind of segment shares (records, streams): the name rules every language
// shares, exclusive creation with the pages reserved before anyone may look (`reserve_file`,
// under LOCK_EX), attaching to an existing name (`exist_ok`), opening with a wait for the name
// and a bounded wait for the creator's ready marker (`open_ready`, which hands back the file
// under LOCK_SH for its kind to map and validate), and removal by name or by handle. What the
// header holds is each kind's business (segment.hpp for records, stream/segment.hpp).
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "clock.hpp"
#include "errors.hpp"
#include "file.hpp"
#include "layout.hpp"

namespace xshm {

inline constexpr std::size_t kMaxNameBytes = 255;

/// The canonical form of a segment name: exactly one leading '/', then 1 to 255 bytes with
/// no '/' and no NUL, and not "." or "..". A name without the slash gets one. Throws
/// ArgumentError otherwise, so every language names the same segment with the same string.
inline std::string normalize_name(std::string_view name) {
  std::string_view body = name;
  if (!body.empty() && body.front() == '/') body.remove_prefix(1);
  if (body.empty()) throw ArgumentError("segment name is empty");
  if (body.size() > kMaxNameBytes)
    throw ArgumentError("segment name is " + std::to_string(body.size()) +
                        " bytes after the leading '/'; at most 255 are allowed");
  if (body.find('/') != std::string_view::npos)
    throw ArgumentError("segment name '" + std::string(name) + "' contains '/' after the leading one");
  if (body.find('\0') != std::string_view::npos) throw ArgumentError("segment name contains a NUL byte");
  if (body == "." || body == "..")
    throw ArgumentError("segment name '" + std::string(name) + "' is not allowed");
  return "/" + std::string(body);
}

namespace detail {

/// How long an opener racing the creator waits for the ready marker, beyond its own timeout.
inline constexpr std::chrono::seconds kReadyWait{2};

/// How an opener asks for the file.
struct OpenRequest {
  bool write = false;                             // O_RDWR, else O_RDONLY
  bool fallback_readonly = false;                 // O_RDWR refused (EACCES): take O_RDONLY instead
  Timeout timeout = std::chrono::nanoseconds{0};  // for the name to appear; nullopt: forever
};

/// A file found and made ready by its creator, still under LOCK_SH: its kind maps and checks
/// it, then calls unlock() (an opener must not read a header its creator is still writing).
struct ReadyFile {
  Fd fd;
  std::uint64_t size = 0;
  bool writable = false;  // opened O_RDWR
  void unlock() noexcept { ::flock(fd.get(), LOCK_UN); }
};

/// Opens `canon`: waits up to `req.timeout` for the name (calling `between_slices()` about every
/// 100 ms meanwhile; it may throw), then a bounded time for its ready marker. Returns it under
/// LOCK_SH, sized.
template <class Hook = NoHook>
ReadyFile open_ready(const std::string& canon, const OpenRequest& req, Hook&& between_slices = {}) {
  const auto start = std::chrono::steady_clock::now();
  // Negative counts as zero; beyond kForever as forever (a deadline must fit beside now()).
  const bool bounded = req.timeout.has_value() && *req.timeout < kForever;
  const std::chrono::nanoseconds limit =
      bounded ? std::max(*req.timeout, std::chrono::nanoseconds{0}) : std::chrono::nanoseconds{0};
  ReadyFile out;
  auto next_hook = start + std::chrono::milliseconds(100);
  for (int pause_us = 100;; pause_us = std::min(pause_us * 2, 10000)) {
    int raw = ::shm_open(canon.c_str(), (req.write ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    out.writable = req.write;
    if (raw < 0 && errno == EACCES && req.write && req.fallback_readonly) {
      raw = ::shm_open(canon.c_str(), O_RDONLY | O_CLOEXEC, 0);
      out.writable = false;
    }
    if (raw >= 0) {
      out.fd = Fd(raw);
      break;
    }
    const int err = errno;
    if (err != ENOENT) throw_errno(err, "shm_open(" + canon + ")");
    const auto now = std::chrono::steady_clock::now();
    if (bounded && now - start >= limit)
      throw OsErrorWithHint(err, "shm_open(" + canon + ")",
                            limit.count() > 0
                                ? "no segment of that name appeared within " + format_duration(limit)
                                : "no segment of that name (create it first, or give open a timeout to "
                                  "wait for its creator)");
    if constexpr (kHasHook<Hook>) {
      if (now >= next_hook) {
        between_slices();
        next_hook = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
  const std::chrono::nanoseconds ready_wait = kReadyWait + limit;
  const auto ready_deadline = std::chrono::steady_clock::now() + ready_wait;
  for (;;) {
    if (!flock_until(out.fd.get(), LOCK_SH, ready_deadline))
      throw WaitTimeoutError("segment " + canon + " is still being created after " +
                             format_duration(ready_wait) + " (its creator holds its lock)");
    out.size = file_size(out.fd.get());
    if (out.size != 0) return out;
    out.unlock();  // created, not yet sized: the creator has not locked it yet
    if (std::chrono::steady_clock::now() >= ready_deadline)
      throw LayoutError("segment " + canon + " was never made ready: it is still empty (0 bytes) after " +
                        format_duration(ready_wait) +
                        " (its creator stopped before sizing it, or is still creating it); " +
                        never_ready_removal(canon));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Takes LOCK_EX on a file just created exclusively (openers then wait for its ready marker),
/// gives it `mode` (umask masked it) and `size` bytes, and reserves its pages now: a full
/// /dev/shm fails here with ENOSPC instead of SIGBUS later. The caller unlocks once it is ready.
inline void reserve_file(int fd, const std::string& canon, std::uint64_t size, mode_t mode) {
  while (::flock(fd, LOCK_EX) != 0)  // an opener may hold LOCK_SH for a moment
    if (errno != EINTR) throw_errno(errno, "flock");
  if (::fchmod(fd, mode) != 0) throw_errno(errno, "fchmod");
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) throw_errno(errno, "ftruncate");
  if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); rc != 0)
    throw_errno(rc, "posix_fallocate(" + canon + ", " + std::to_string(size) + " bytes)");
}

/// Creates `canon` exclusively with `mode` and builds it with `build(Fd)`. An existing name is
/// EEXIST (its hint names `open_with`), or with `exist_ok` is attached with `attach()`; a name
/// removed between the EEXIST and the attach is created after all (a bounded number of times:
/// a name that keeps coming and going is someone else's race). A failed build removes the
/// half-built name, if it is still ours.
template <class Attach, class Build>
auto create_exclusive(const std::string& canon, mode_t mode, bool exist_ok, std::string_view open_with,
                      Attach&& attach, Build&& build) -> decltype(build(Fd{})) {
  if (mode > 0777) throw ArgumentError("mode must be a permission mask (at most 0o777)");
  for (int attempt = 0;; ++attempt) {
    const int fd = ::shm_open(canon.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
      const int err = errno;
      if (err == EEXIST && !exist_ok)
        throw OsErrorWithHint(err, "shm_open(" + canon + ")",
                              "segment " + canon +
                                  " already exists (a segment outlives the process that created it): open "
                                  "it with " +
                                  std::string(open_with) +
                                  ", pass exist_ok=True to attach to it, or remove it with `xshm rm " +
                                  canon.substr(1) + "`");
      if (err != EEXIST) throw_errno(err, "shm_open(" + canon + ")");
      try {
        return attach();
      } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT || attempt >= 100) throw;
        continue;
      }
    }
    Fd owned(fd);
    struct stat mine {};
    const bool known = ::fstat(fd, &mine) == 0;
    try {
      return build(std::move(owned));
    } catch (...) {
      // Only if it is still ours: after a failure another process may already have removed
      // it and created its own under the same name.
      if (known) unlink_if_same(canon, mine.st_dev, mine.st_ino);
      throw;
    }
  }
}

/// Removes a segment name (any kind). Unless `force`, refuses a file that is not an xshm
/// segment; one whose creator died before it was sized (size 0) or before it wrote the header
/// (a zero first page) is an xshm segment that was never made ready, and is removed. A file of
/// 1 to 4095 bytes is no segment (docs/LAYOUT.md 7.4), whatever its bytes.
inline void unlink_segment(std::string_view name, bool force) {
  const std::string canon = normalize_name(name);
  if (!force) {
    Fd fd = shm_open_checked(canon, O_RDONLY, 0);
    const std::uint64_t size = file_size(fd.get());
    bool ours = size == 0;
    if (size >= kHeaderSize) {
      Mapping m = Mapping::map(fd.get(), kHeaderSize, false);
      const auto* bytes = static_cast<const unsigned char*>(m.data());
      ours = std::memcmp(bytes, kMagic, sizeof kMagic) == 0 ||
             std::all_of(bytes, bytes + kHeaderSize, [](unsigned char b) { return b == 0; });
    }
    if (!ours)
      throw LayoutError("segment " + canon + " is not an xshm segment; refusing to remove it without force");
  }
  if (::shm_unlink(canon.c_str()) != 0) throw_errno(errno, "shm_unlink(" + canon + ")");
}

/// Removes the name `canon` if it still refers to the file (device, inode) a handle opened.
inline void unlink_same(const std::string& canon, dev_t dev, ino_t ino) {
  Fd fd = shm_open_checked(canon, O_RDONLY, 0);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(errno, "fstat");
  if (st.st_dev != dev || st.st_ino != ino)
    throw_errno(ENOENT, "shm_unlink(" + canon +
                            "): this segment was already removed and the name now belongs to another one");
  if (::shm_unlink(canon.c_str()) != 0) throw_errno(errno, "shm_unlink(" + canon + ")");
}

}  // namespace detail

}  // namespace xshm
