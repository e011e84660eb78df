// The operating-system handles a segment is made of, with RAII lifetimes: an owned file
// descriptor, an owned mapping, shm_open and flock with deadlines, and the OS error that says
// what the user can do about it. Nothing here knows what the bytes mean.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "errors.hpp"

namespace xshm {

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
  Mapping(Mapping&& o) noexcept : base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}
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

/// An OS error (std::system_error, its errno the code) whose text goes on after the OS's with
/// what the user can do about it: "shm_open(/x): File exists: <hint>".
class OsErrorWithHint : public std::system_error {
 public:
  OsErrorWithHint(int err, const std::string& call, const std::string& hint)
      : std::system_error(err, std::generic_category(), call),
        text_(std::make_shared<const std::string>(std::string(std::system_error::what()) + ": " + hint)) {}
  const char* what() const noexcept override { return text_->c_str(); }

 private:
  std::shared_ptr<const std::string> text_;  // shared: copying an exception must not throw
};

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

/// Removes `canon` only if it still names the file (device, inode) given. Best effort: for
/// clean-up after a failure, whose own error is the one to report.
inline void unlink_if_same(const std::string& canon, dev_t dev, ino_t ino) noexcept {
  const int fd = ::shm_open(canon.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  struct stat st {};
  const bool same = ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
  ::close(fd);
  if (same) ::shm_unlink(canon.c_str());
}

}  // namespace detail

}  // namespace xshm
