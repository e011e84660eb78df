// A record segment (layout version 1): the mapped, validated handle every record API reaches
// the bytes through (detail::Segment), and its create (build the header, then mark it ready),
// open (validate every identity field against the mapping) and exist_ok attach, over the
// lifecycle every kind shares (lifecycle.hpp). Only the creator writes the identity fields,
// once, before the ready marker; everyone else maps them and checks them. Records, locks and
// waits are the business of reader.hpp, writer.hpp and wait.hpp.
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
#include "lifecycle.hpp"
#include "process.hpp"
#include "robust_mutex.hpp"

namespace xshm {

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
  reserve_file(fd.get(), canon, geo.total_size, mode);
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
template <class Hook = NoHook>
std::shared_ptr<Segment> open_segment(std::string_view name, const OpenOptions& opt,
                                      Hook&& between_slices = {}) {
  const std::string canon = normalize_name(name);
  ReadyFile f =
      open_ready(canon, OpenRequest{!opt.readonly, false, opt.timeout}, std::forward<Hook>(between_slices));
  std::shared_ptr<Segment> s = map_and_validate(canon, f.fd.get(), f.size, opt.readonly);
  s->stall_timeout = opt.stall_timeout;
  f.unlock();
  return s;
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
  const Geometry geo = compute_geometry(opt.dtype, opt.shape, opt.message_capacity, opt.backup);
  return create_exclusive(
      canon, opt.mode, opt.exist_ok, "SharedMemoryManager.open", [&] { return attach_existing(canon, geo); },
      [&](Fd fd) { return build_segment(canon, std::move(fd), geo, opt.mode); });
}

/// Removes this segment's name, if the name still refers to this segment.
inline void unlink_segment(const Segment& s) { unlink_same(s.name, s.dev, s.ino); }

}  // namespace detail

}  // namespace xshm
