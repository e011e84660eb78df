// A segment's whole lifecycle, and nothing of what happens inside it: the name rules every
// language shares, a file descriptor and a mapping with RAII lifetimes, create (build the
// header, then mark it ready), open (wait for the ready marker, validate every identity field
// against the mapping), attach to an existing segment of the same layout, unlink by name or by
// handle. Only the creator writes the identity fields, once, before the ready marker; everyone
// else maps them and checks them. Records, locks and waits are the business of reader.hpp,
// writer.hpp and wait.hpp, which reach the bytes through detail::Segment.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "errors.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "robust_mutex.hpp"

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

}  // namespace detail

/// Parameters of create().
struct CreateOptions {
  std::vector<std::uint64_t> shape{100};
  Dtype dtype = Dtype::Float64;
  std::uint64_t message_capacity = 256;
  mode_t mode = 0600;
  /// Attach to an existing segment of the same layout instead of failing with EEXIST.
  bool exist_ok = false;
  /// Keep a backup copy of the record (one extra copy per publish). Without it, a writer that
  /// dies mid-write leaves a torn record: readers get TornRecordError until the next full
  /// publish, and the next writer must supply every field.
  bool backup = true;
};

/// Parameters of open().
struct OpenOptions {
  bool readonly = false;
  /// How long to wait for a segment that does not exist yet (nullopt: forever; zero: not at
  /// all). Measured on steady_clock.
  Timeout timeout = std::chrono::nanoseconds{0};
  /// Only for segments without backup: how long a read tolerates the live record staying
  /// mid-write (same odd lock word) while its writer seems alive, before it raises
  /// TornRecordError. nullopt: 2 s plus 4 ns per byte of values (a 256 MiB/s writer).
  Timeout stall_timeout = std::nullopt;
};

namespace detail {

/// A mapped, validated segment. Shared by the manager, write transactions and (in bindings)
/// every view of the values, so the mapping outlives whichever of them goes last.
struct Segment {
  std::string name;
  Geometry geo;
  bool readonly = false;
  Timeout stall_timeout = std::nullopt;
  Mapping map;
  Mapping header_alias;  // writable page 0 for a read-only handle, when the OS allows it
  dev_t dev = 0;
  ino_t ino = 0;

  Header* header() const noexcept { return static_cast<Header*>(map.data()); }
  /// The header through which this process may write its waiter count, or nullptr.
  Header* waiter_header() const noexcept {
    if (!readonly) return header();
    return static_cast<Header*>(header_alias.data());
  }
  unsigned char* slot(int i) const noexcept {
    return static_cast<unsigned char*>(map.data()) + geo.record_offset[i];
  }
  RecordMeta* meta(int i) const noexcept { return reinterpret_cast<RecordMeta*>(slot(i)); }
  unsigned char* values(int i) const noexcept { return slot(i) + geo.values_offset; }
  unsigned char* message(int i) const noexcept { return slot(i) + geo.message_offset; }
  pthread_mutex_t* mutex() const noexcept { return reinterpret_cast<pthread_mutex_t*>(header()->mutex); }
  int slots() const noexcept { return geo.backup ? 2 : 1; }
};

/// How long an opener racing the creator waits for the ready marker, beyond its own timeout.
inline constexpr std::chrono::seconds kReadyWait{2};

/// Maps an opened segment of `size` bytes and checks it: the ready marker, every identity
/// field (validate_header), and for a writer the mutex ABI.
inline std::shared_ptr<Segment> map_and_validate(const std::string& canon, int fd, std::uint64_t size,
                                                 bool readonly) {
  auto s = std::make_shared<Segment>();
  s->name = canon;
  s->readonly = readonly;
  s->map = Mapping::map(fd, size, !readonly);
  const auto* h = static_cast<const Header*>(s->map.data());
  try {
    // The ready marker first (its acquire load pairs with build_segment()'s release store),
    // then every identity field, in docs/LAYOUT.md's order; nothing read beyond `size`.
    s->geo = validate_header(h, size, canon);
  } catch (const LayoutError& e) {
    throw LayoutError("segment " + canon + ": " + e.what());
  }
  if (!readonly && (h->mutex_size != sizeof(pthread_mutex_t) || h->mutex_abi != mutex_abi_tag()))
    throw LayoutError("segment " + canon +
                      " was created by a process with another C library or architecture; it "
                      "can only be opened read-only here");
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, "fstat");
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  if (readonly) {
    // A writable alias of page 0 lets a read-only handle announce that it sleeps in wait().
    int rw = ::shm_open(canon.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (rw >= 0) {
      Fd rwfd(rw);
      struct stat st2 {};
      if (::fstat(rw, &st2) == 0 && st2.st_dev == st.st_dev && st2.st_ino == st.st_ino)
        s->header_alias = Mapping::map(rw, kHeaderSize, true);
    }
  }
  return s;
}

/// Sizes, fills and marks ready a segment just created exclusively (held under LOCK_EX so
/// openers wait for the ready marker), then maps it like an opener would.
inline std::shared_ptr<Segment> build_segment(const std::string& canon, Fd fd, const Geometry& geo,
                                              mode_t mode) {
  while (::flock(fd.get(), LOCK_EX) != 0)  // an opener may hold LOCK_SH for a moment
    if (errno != EINTR) throw_errno(errno, "flock");
  if (::fchmod(fd.get(), mode) != 0) throw_errno(errno, "fchmod");  // umask masked it
  if (::ftruncate(fd.get(), static_cast<off_t>(geo.total_size)) != 0) throw_errno(errno, "ftruncate");
  // Reserve the pages now: a full /dev/shm fails here with ENOSPC instead of SIGBUS later.
  if (int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(geo.total_size)); rc != 0)
    throw_errno(rc, "posix_fallocate(" + canon + ", " + std::to_string(geo.total_size) + " bytes)");
  Mapping map = Mapping::map(fd.get(), geo.total_size, true);
  auto* h = static_cast<Header*>(map.data());  // fresh pages are zero
  std::memcpy(h->magic, kMagic, sizeof kMagic);
  h->layout_version = kLayoutVersion;
  h->total_size = geo.total_size;
  h->header_size = kHeaderSize;
  h->flags = geo.backup ? kFlagBackup : 0;
  h->dtype = static_cast<std::uint32_t>(geo.dtype);
  h->itemsize = geo.itemsize;
  h->ndim = static_cast<std::uint32_t>(geo.shape.size());
  h->message_capacity = geo.message_capacity;
  for (std::size_t i = 0; i < geo.shape.size(); ++i) h->shape[i] = geo.shape[i];
  h->values_size = geo.values_size;
  h->record_size = geo.record_size;
  h->record_offset[0] = geo.record_offset[0];
  h->record_offset[1] = geo.record_offset[1];
  h->values_offset = geo.values_offset;
  h->message_offset = geo.message_offset;
  h->mutex_size = sizeof(pthread_mutex_t);
  h->mutex_abi = mutex_abi_tag();
  if (::getrandom(h->creation_id, sizeof h->creation_id, 0) != static_cast<ssize_t>(sizeof h->creation_id))
    throw_errno(errno, "getrandom");
  h->created_ns = realtime_ns();
  h->creator_pid = static_cast<std::uint32_t>(current_pid());
  robust_mutex::init(reinterpret_cast<pthread_mutex_t*>(h->mutex));
  const std::int64_t now = realtime_ns();
  for (int i = 0; i < (geo.backup ? 2 : 1); ++i) {
    auto* meta =
        reinterpret_cast<RecordMeta*>(static_cast<unsigned char*>(map.data()) + geo.record_offset[i]);
    meta->timestamp_ns = now;
    meta->writer_pid = h->creator_pid;
  }
  // SYNC POINT: pairs with the opener's acquire load of state: everything above is visible
  // to whoever sees READY.
  h->state.store(kStateReady, std::memory_order_release);
  map.reset();
  std::shared_ptr<Segment> s = map_and_validate(canon, fd.get(), file_size(fd.get()), false);
  ::flock(fd.get(), LOCK_UN);
  return s;
}

/// Opens an existing segment: waits up to `timeout` for its name and a bounded time for its
/// ready marker, then maps and validates it.
inline std::shared_ptr<Segment> open_segment(std::string_view name, const OpenOptions& opt) {
  const std::string canon = normalize_name(name);
  const auto start = std::chrono::steady_clock::now();
  const int flags = opt.readonly ? O_RDONLY : O_RDWR;
  // Negative counts as zero; beyond kForever as forever (a deadline must fit beside now()).
  Timeout timeout = opt.timeout;
  if (timeout && *timeout >= kForever) timeout = std::nullopt;
  if (timeout) timeout = std::max(*timeout, std::chrono::nanoseconds{0});
  Fd fd;
  for (int pause_us = 100;; pause_us = std::min(pause_us * 2, 10000)) {
    int raw = ::shm_open(canon.c_str(), flags | O_CLOEXEC, 0);
    if (raw >= 0) {
      fd = Fd(raw);
      break;
    }
    const int err = errno;
    if (err != ENOENT) throw_errno(err, "shm_open(" + canon + ")");
    if (timeout && std::chrono::steady_clock::now() - start >= *timeout)
      throw OsErrorWithHint(err, "shm_open(" + canon + ")",
                            timeout->count() > 0
                                ? "no segment of that name appeared within " + format_duration(*timeout)
                                : "no segment of that name (create it first, or give open a timeout to "
                                  "wait for its creator)");
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
  // An opener racing the creator waits a bounded time for the ready marker.
  const std::chrono::nanoseconds ready_wait = kReadyWait + timeout.value_or(std::chrono::nanoseconds{0});
  const auto ready_deadline = std::chrono::steady_clock::now() + ready_wait;
  for (;;) {
    if (!flock_until(fd.get(), LOCK_SH, ready_deadline))
      throw WaitTimeoutError("segment " + canon + " is still being created after " +
                             format_duration(ready_wait) + " (its creator holds its lock)");
    const std::uint64_t size = file_size(fd.get());
    if (size == 0) {  // created, not yet sized: the creator has not locked it yet
      ::flock(fd.get(), LOCK_UN);
      if (std::chrono::steady_clock::now() >= ready_deadline)
        throw LayoutError("segment " + canon + " was never made ready: it is still empty (0 bytes) after " +
                          format_duration(ready_wait) +
                          " (its creator stopped before sizing it, or is still creating it); " +
                          never_ready_removal(canon));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    std::shared_ptr<Segment> s = map_and_validate(canon, fd.get(), size, opt.readonly);
    s->stall_timeout = opt.stall_timeout;
    ::flock(fd.get(), LOCK_UN);
    return s;
  }
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

/// A shape as numpy writes a tuple: "()", "(5,)", "(2, 3)".
inline std::string format_shape(const std::vector<std::uint64_t>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

/// What differs between the layout of an existing segment (`there`) and the one asked for,
/// field by field, both sides: "shape (100,) there, (5,) asked; dtype float32 there, float64
/// asked". Empty when they agree on every field that exist_ok compares.
inline std::string layout_differences(const Geometry& there, const Geometry& asked) {
  std::string out;
  auto add = [&out](const char* field, const std::string& a, const std::string& b) {
    out += (out.empty() ? "" : "; ") + std::string(field) + " " + a + " there, " + b + " asked";
  };
  if (there.dtype != asked.dtype) add("dtype", dtype_info(there.dtype).name, dtype_info(asked.dtype).name);
  if (there.shape != asked.shape) add("shape", format_shape(there.shape), format_shape(asked.shape));
  if (there.message_capacity != asked.message_capacity)
    add("message capacity", std::to_string(there.message_capacity), std::to_string(asked.message_capacity));
  if (there.backup != asked.backup) add("backup", there.backup ? "on" : "off", asked.backup ? "on" : "off");
  return out;
}

/// Opens `canon` for exist_ok and checks that its layout is the one asked for.
inline std::shared_ptr<Segment> attach_existing(const std::string& canon, const Geometry& want) {
  std::shared_ptr<Segment> s = open_segment(canon, OpenOptions{});
  const std::string diff = layout_differences(s->geo, want);
  if (!diff.empty()) throw LayoutError("segment " + canon + " exists with another layout: " + diff);
  return s;
}

/// Creates a segment: exclusive, `mode` permissions, pages reserved up front, header
/// published last behind the ready marker. A failure removes the half-built name.
inline std::shared_ptr<Segment> create_segment(std::string_view name, const CreateOptions& opt) {
  const std::string canon = normalize_name(name);
  Geometry geo = compute_geometry(opt.dtype, opt.shape, opt.message_capacity, opt.backup);
  if (opt.mode > 0777) throw ArgumentError("mode must be a permission mask (at most 0o777)");
  // exist_ok: a segment removed between our EEXIST and our open is created after all (a
  // bounded number of times: a name that keeps coming and going is someone else's race).
  for (int attempt = 0;; ++attempt) {
    int fd = ::shm_open(canon.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, opt.mode & 0777);
    if (fd < 0) {
      const int err = errno;
      if (err == EEXIST && !opt.exist_ok)
        throw OsErrorWithHint(err, "shm_open(" + canon + ")",
                              "segment " + canon +
                                  " already exists (a segment outlives the process that created it): open "
                                  "it with SharedMemoryManager.open, pass exist_ok=True to attach to it, or "
                                  "remove it with `xshm rm " +
                                  canon.substr(1) + "`");
      if (err != EEXIST) throw_errno(err, "shm_open(" + canon + ")");
      try {
        return attach_existing(canon, geo);
      } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT || attempt >= 100) throw;
        continue;
      }
    }
    Fd owned(fd);
    struct stat mine {};
    const bool known = ::fstat(fd, &mine) == 0;
    try {
      return build_segment(canon, std::move(owned), geo, opt.mode & 0777);
    } catch (...) {
      // Remove the half-built name, but only if it is still ours: after a failure another
      // process may already have removed it and created its own under the same name.
      if (known) unlink_if_same(canon, mine.st_dev, mine.st_ino);
      throw;
    }
  }
}

/// Removes a segment name. Unless `force`, refuses a file that is not an xshm segment; one
/// whose creator died before it was sized (size 0) or before it wrote the header (a zero
/// first page) is an xshm segment that was never made ready, and is removed.
inline void unlink_segment(std::string_view name, bool force) {
  const std::string canon = normalize_name(name);
  if (!force) {
    Fd fd = shm_open_checked(canon, O_RDONLY, 0);
    const std::uint64_t size = file_size(fd.get());
    bool ours = size == 0;
    if (!ours) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size, kHeaderSize));
      Mapping m = Mapping::map(fd.get(), n, false);
      const auto* bytes = static_cast<const unsigned char*>(m.data());
      ours = (n >= sizeof kMagic && std::memcmp(bytes, kMagic, sizeof kMagic) == 0) ||
             std::all_of(bytes, bytes + n, [](unsigned char b) { return b == 0; });
    }
    if (!ours)
      throw LayoutError("segment " + canon + " is not an xshm segment; refusing to remove it without force");
  }
  if (::shm_unlink(canon.c_str()) != 0) throw_errno(errno, "shm_unlink(" + canon + ")");
}

/// Removes this segment's name, if the name still refers to this segment.
inline void unlink_segment(const Segment& s) {
  Fd fd = shm_open_checked(s.name, O_RDONLY, 0);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(errno, "fstat");
  if (st.st_dev != s.dev || st.st_ino != s.ino)
    throw_errno(ENOENT, "shm_unlink(" + s.name +
                            "): this segment was already removed and the name now belongs to another one");
  if (::shm_unlink(s.name.c_str()) != 0) throw_errno(errno, "shm_unlink(" + s.name + ")");
}

}  // namespace detail

}  // namespace xshm
