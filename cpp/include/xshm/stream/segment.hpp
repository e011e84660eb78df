// A stream segment (layout version 2, layout.hpp): the mapped, validated handle every stream
// API reaches the bytes through (detail::StreamSegment: the control pages, the ring, and the
// descriptor whose open file description carries this handle's liveness locks), and its
// create, open and exist_ok attach over the lifecycle every kind shares (lifecycle.hpp). Only
// the creator writes the identity fields, once, before the ready marker.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../clock.hpp"
#include "../errors.hpp"
#include "../lifecycle.hpp"
#include "../liveness.hpp"
#include "../process.hpp"
#include "../robust_mutex.hpp"
#include "../segment.hpp"
#include "../seqlock.hpp"
#include "layout.hpp"

namespace xshm {

/// Parameters of Stream::create().
struct StreamOptions {
  std::uint64_t capacity = 1024;   // messages the ring holds
  std::uint64_t max_bytes = 1024;  // payload bytes a message may have
  Backpressure backpressure = Backpressure::block;
  std::uint32_t max_readers = 16;
  std::uint32_t max_writers = 64;
  std::uint32_t max_groups = 16;  // named reader groups (work queues) it can hold; 0: none
  mode_t mode = 0600;
  bool exist_ok = false;  // attach to an existing stream of the same layout
  /// A frame stream: every message is one array of this dtype and shape (max_bytes must be
  /// its size). nullopt: byte messages of up to max_bytes.
  std::optional<Dtype> dtype;
  std::vector<std::uint64_t> shape;
};

/// Parameters of Stream::open().
struct StreamOpenOptions {
  bool readonly = false;                          // may receive, may not send
  Timeout timeout = std::chrono::nanoseconds{0};  // how long to wait for the name to appear
};

namespace detail {

/// A mapped, validated stream: the control pages (header and tables) and the ring, and the
/// descriptor whose open file description carries this handle's liveness locks.
struct StreamSegment {
  std::string name;
  StreamGeometry geo;
  bool readonly = false;
  bool writable_fd = false;  // the descriptor is O_RDWR: this handle can attach readers
  bool mutex_ok = false;     // its pthread_mutex_t is this process's kind (mutex_size, mutex_abi)
  Mapping ctl;               // [0, slots_offset): read-write
  Mapping ring;              // [slots_offset, total_size): read-write, or read-only
  dev_t dev = 0;
  ino_t ino = 0;
  liveness::Registered fd;  // closed in a forked child
  int pid = 0;              // the process that opened it

  // This handle's writer entry, registered at its first send (under the stream mutex).
  std::atomic<int> writer_index{-1};
  std::atomic<std::uint64_t> writer_state{0};
  // Under `local`: the reader entries this handle holds.
  std::mutex local;
  std::multiset<std::uint32_t> own_readers;
  int writer_sleepers = 0;  // this handle's threads asleep for room (stream_impl::WriterSleeper)
  // Under the stream mutex: what the last scan of the reader table found.
  std::uint32_t scan_gen = 0;
  bool scanned = false;
  bool any_reader = false;
  std::uint64_t gate = 0;                                 // the smallest cursor of an attached reader
  std::chrono::steady_clock::time_point last_reap{};      // when a full claim last reaped
  std::chrono::steady_clock::time_point last_lap_reap{};  // ... and a claim that crossed a lap
  std::atomic<std::int64_t> last_sweep_ns{0};             // steady clock: the last sleeper sweep

  StreamSegment() = default;
  StreamSegment(const StreamSegment&) = delete;
  StreamSegment& operator=(const StreamSegment&) = delete;
  ~StreamSegment() {
    const int w = writer_index.load(std::memory_order_relaxed);
    if (w >= 0 && !fd.forked && pid == current_pid()) {  // a clean close frees the entry
      std::uint64_t mine = writer_state.load(std::memory_order_relaxed);
      writer(static_cast<std::uint32_t>(w))
          ->state.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
    }
    liveness::close_registered(&fd);  // drops every liveness lock of this handle
  }

  StreamHeader* header() const noexcept { return static_cast<StreamHeader*>(ctl.data()); }
  pthread_mutex_t* mutex() const noexcept { return reinterpret_cast<pthread_mutex_t*>(header()->mutex); }
  ReaderEntry* reader(std::uint32_t i) const noexcept {
    return reinterpret_cast<ReaderEntry*>(static_cast<unsigned char*>(ctl.data()) + geo.readers_offset +
                                          std::uint64_t{i} * kReaderEntrySize);
  }
  WriterEntry* writer(std::uint32_t i) const noexcept {
    return reinterpret_cast<WriterEntry*>(static_cast<unsigned char*>(ctl.data()) + geo.writers_offset +
                                          std::uint64_t{i} * kWriterEntrySize);
  }
  GroupEntry* group(std::uint32_t i) const noexcept {
    return reinterpret_cast<GroupEntry*>(static_cast<unsigned char*>(ctl.data()) + geo.groups_offset +
                                         std::uint64_t{i} * kGroupEntrySize);
  }
  pthread_mutex_t* group_mutex(std::uint32_t i) const noexcept {
    return reinterpret_cast<pthread_mutex_t*>(group(i)->mutex);
  }
  std::uint64_t reader_lock_offset(std::uint32_t i) const noexcept {
    return geo.readers_offset + std::uint64_t{i} * kReaderEntrySize;
  }
  std::uint64_t writer_lock_offset(std::uint32_t i) const noexcept {
    return geo.writers_offset + std::uint64_t{i} * kWriterEntrySize;
  }
  SlotHeader* slot(std::uint64_t seq) const noexcept {
    return reinterpret_cast<SlotHeader*>(static_cast<unsigned char*>(ring.data()) +
                                         (seq % geo.capacity) * geo.slot_size);
  }
  static unsigned char* payload(SlotHeader* s) noexcept { return reinterpret_cast<unsigned char*>(s) + 64; }

  /// Every call that touches shared memory starts here: a closed handle, or one inherited
  /// across fork() (its locks are the parent's), is refused.
  void check_usable() const {
    if (fd.forked || pid != current_pid())
      throw Error("stream " + name + " was opened by process " + std::to_string(pid) +
                  " before a fork(); open it again in this process");
  }
};

/// Relaxed atomic access to the plain fields of a slot header (other processes race on them;
/// the slot word orders them).
template <class T>
inline void put(T& field, T v) noexcept {
  __atomic_store_n(&field, v, seqlock::kDataStore);
}
template <class T>
inline T get(const T& field) noexcept {
  return __atomic_load_n(&field, seqlock::kDataLoad);
}

/// Maps an opened stream and checks every header field against the mapping. `fd` is
/// borrowed; the handle keeps its own duplicate (same open file description: the liveness
/// locks of this handle are taken through it).
inline std::shared_ptr<StreamSegment> map_stream(const std::string& canon, int fd, std::uint64_t size,
                                                 bool readonly, bool writable_fd) {
  if (size < kHeaderSize)
    throw LayoutError("segment " + canon + " is " + std::to_string(size) +
                      " bytes, smaller than the xshm header: not an xshm segment, or truncated");
  auto s = std::make_shared<StreamSegment>();
  s->name = canon;
  s->readonly = readonly;
  s->writable_fd = writable_fd;
  s->pid = current_pid();
  {
    // The header page alone first: nothing beyond it is trusted before it is checked
    // (validate_stream_header reads only this page; `size` is what exists to map).
    Mapping first = Mapping::map(fd, kHeaderSize, false);
    if (peek_kind(first.data(), kHeaderSize) == SegmentKind::record)
      throw LayoutError("segment " + canon +
                        " is a record, not a stream: open it with SharedMemoryManager.open");
    try {
      s->geo = validate_stream_header(first.data(), size, canon);
    } catch (const LayoutError& e) {
      throw LayoutError("segment " + canon + ": " + e.what());
    }
    const auto* h = static_cast<const StreamHeader*>(first.data());
    s->mutex_ok = h->mutex_size == sizeof(pthread_mutex_t) && h->mutex_abi == mutex_abi_tag();
    if (!readonly && !s->mutex_ok)
      throw LayoutError("stream " + canon +
                        " was created by a process with another C library or architecture; it can "
                        "only be opened read-only here");
  }
  const StreamGeometry& g = s->geo;
  s->ctl = Mapping::map(fd, static_cast<std::size_t>(g.slots_offset), writable_fd);
  // Readers write slot words too (a slot abandoned by a dead writer), so the ring is mapped
  // like the control pages; `readonly` forbids sending, in the API.
  void* p = ::mmap(nullptr, static_cast<std::size_t>(g.total_size - g.slots_offset),
                   writable_fd ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd,
                   static_cast<off_t>(g.slots_offset));
  if (p == MAP_FAILED) throw_errno(errno, "mmap");
  s->ring = Mapping(p, static_cast<std::size_t>(g.total_size - g.slots_offset));
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, "fstat");
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  // The liveness locks go through an open file description of their own that nothing maps:
  // a mapping holds its description open, so locks taken through the mapped one would live
  // on in a forked child's inherited mappings after this process died.
  if (liveness::open_registered(&s->fd, canon.c_str(), writable_fd ? O_RDWR : O_RDONLY) < 0)
    throw_errno(errno, "shm_open(" + canon + ")");
  struct stat st2 {};
  if (::fstat(s->fd.fd, &st2) != 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino)
    throw_errno(ENOENT, "shm_open(" + canon + "): the name was removed or replaced while it was opened");
  return s;
}

inline std::shared_ptr<StreamSegment> build_stream(const std::string& canon, Fd fd, const StreamGeometry& g,
                                                   mode_t mode) {
  reserve_file(fd.get(), canon, g.total_size, mode);
  {
    Mapping map = Mapping::map(fd.get(), kHeaderSize, true);
    auto* h = static_cast<StreamHeader*>(map.data());  // fresh pages are zero
    std::memcpy(h->magic, kMagic, sizeof kMagic);
    h->layout_version = kStreamLayoutVersion;
    h->total_size = g.total_size;
    h->header_size = kHeaderSize;
    h->kind = kKindStream;
    h->flags = g.backpressure == Backpressure::drop_oldest ? kStreamFlagDropOldest : 0;
    h->capacity = static_cast<std::uint32_t>(g.capacity);
    h->max_bytes = g.max_bytes;
    h->slot_size = g.slot_size;
    h->slots_offset = g.slots_offset;
    h->max_readers = g.max_readers;
    h->max_writers = g.max_writers;
    h->readers_offset = g.readers_offset;
    h->writers_offset = g.writers_offset;
    h->max_groups = g.max_groups;
    h->groups_offset = g.groups_offset;
    h->dtype = g.dtype;
    h->ndim = static_cast<std::uint32_t>(g.shape.size());
    for (std::size_t i = 0; i < g.shape.size(); ++i) h->shape[i] = g.shape[i];
    h->mutex_size = sizeof(pthread_mutex_t);
    h->mutex_abi = mutex_abi_tag();
    if (::getrandom(h->creation_id, sizeof h->creation_id, 0) != static_cast<ssize_t>(sizeof h->creation_id))
      throw_errno(errno, "getrandom");
    h->created_ns = realtime_ns();
    h->creator_pid = static_cast<std::uint32_t>(current_pid());
    robust_mutex::init(reinterpret_cast<pthread_mutex_t*>(h->mutex));
    // SYNC POINT: pairs with the opener's acquire load of state.
    h->state.store(kStateReady, std::memory_order_release);
  }
  std::shared_ptr<StreamSegment> s = map_stream(canon, fd.get(), file_size(fd.get()), false, true);
  ::flock(fd.get(), LOCK_UN);
  return s;
}

/// Opens an existing stream. A reader writes its cursor line, so even a read-only handle asks
/// for O_RDWR first; a user who may only read the file gets a handle that can neither send nor
/// attach a reader.
template <class Hook = NoHook>
std::shared_ptr<StreamSegment> open_stream(std::string_view name, const StreamOpenOptions& opt,
                                           Hook&& between_slices = {}) {
  const std::string canon = normalize_name(name);
  ReadyFile f =
      open_ready(canon, OpenRequest{true, opt.readonly, opt.timeout}, std::forward<Hook>(between_slices));
  std::shared_ptr<StreamSegment> s = map_stream(canon, f.fd.get(), f.size, opt.readonly, f.writable);
  f.unlock();
  return s;
}

/// What differs between an existing stream's layout and the one asked for, both sides.
inline std::string stream_differences(const StreamGeometry& there, const StreamGeometry& asked) {
  std::string out;
  auto add = [&out](const char* field, const std::string& a, const std::string& b) {
    if (a != b) out += (out.empty() ? "" : "; ") + std::string(field) + " " + a + " there, " + b + " asked";
  };
  auto policy = [](Backpressure b) {
    return std::string(b == Backpressure::block ? "block" : "drop_oldest");
  };
  auto frames = [](const StreamGeometry& x) {
    return x.dtype == 0 ? std::string("bytes")
                        : std::string(dtype_info(static_cast<Dtype>(x.dtype)).name) + format_shape(x.shape);
  };
  add("capacity", std::to_string(there.capacity), std::to_string(asked.capacity));
  add("max_bytes", std::to_string(there.max_bytes), std::to_string(asked.max_bytes));
  add("backpressure", policy(there.backpressure), policy(asked.backpressure));
  add("max_readers", std::to_string(there.max_readers), std::to_string(asked.max_readers));
  add("max_writers", std::to_string(there.max_writers), std::to_string(asked.max_writers));
  add("max_groups", std::to_string(there.max_groups), std::to_string(asked.max_groups));
  add("frames", frames(there), frames(asked));
  return out;
}

inline std::shared_ptr<StreamSegment> create_stream(std::string_view name, const StreamOptions& opt) {
  const std::string canon = normalize_name(name);
  const StreamGeometry g = compute_stream_geometry(
      opt.capacity, opt.max_bytes, opt.backpressure, opt.max_readers, opt.max_writers,
      opt.dtype ? static_cast<std::uint32_t>(*opt.dtype) : 0, opt.shape, opt.max_groups);
  auto attach = [&] {
    std::shared_ptr<StreamSegment> s = open_stream(canon, StreamOpenOptions{});
    const std::string diff = stream_differences(s->geo, g);
    if (!diff.empty()) throw LayoutError("stream " + canon + " exists with another layout: " + diff);
    return s;
  };
  return create_exclusive(canon, opt.mode, opt.exist_ok, "Stream.open", attach,
                          [&](Fd fd) { return build_stream(canon, std::move(fd), g, opt.mode); });
}

}  // namespace detail

}  // namespace xshm
