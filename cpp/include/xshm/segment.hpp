// POSIX shared-memory plumbing: the name rules every language shares, a file descriptor and a
// mapping with RAII lifetimes, and the create/open steps that never hand out a half-built
// segment. Knows nothing of records or locks; manager.hpp builds on it.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "errors.hpp"

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
    throw ArgumentError("segment name '" + std::string(name) +
                        "' contains '/' after the leading one");
  if (body.find('\0') != std::string_view::npos)
    throw ArgumentError("segment name contains a NUL byte");
  if (body == "." || body == "..")
    throw ArgumentError("segment name '" + std::string(name) + "' is not allowed");
  return "/" + std::string(body);
}

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

/// An owned mapping; munmap on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* base, std::size_t size) noexcept : base_(base), size_(size) {}
  Mapping(Mapping&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      base_ = std::exchange(o.base_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  static Mapping map(int fd, std::size_t size, bool writable) {
    void* p = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) detail::throw_errno(errno, "mmap");
    return Mapping(p, size);
  }
  void* data() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return base_ != nullptr; }
  void reset() noexcept {
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
  }

 private:
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {

/// shm_open with O_CLOEXEC, throwing std::system_error (ENOENT, EEXIST, EACCES...).
inline Fd shm_open_checked(const std::string& name, int flags, mode_t mode) {
  int fd = ::shm_open(name.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno(errno, "shm_open(" + name + ")");
  return Fd(fd);
}

/// flock with a deadline: LOCK_NB in a loop so an opener never waits unboundedly on a
/// creator that is stuck. Returns false when the deadline passed.
inline bool flock_until(int fd, int op, std::chrono::steady_clock::time_point deadline) {
  for (int pause_us = 50;; pause_us = pause_us < 5000 ? pause_us * 2 : 5000) {
    if (::flock(fd, op | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK && errno != EINTR) throw_errno(errno, "flock");
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
}

inline std::uint64_t file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, "fstat");
  return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace detail

/// Removes a segment name. Mappings that exist stay valid until they are unmapped.
inline void shm_unlink_name(const std::string& name) {
  if (::shm_unlink(normalize_name(name).c_str()) != 0) detail::throw_errno(errno, "shm_unlink(" + name + ")");
}

}  // namespace xshm
