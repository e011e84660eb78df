// xshm::Stream: every message, in order, through a ring of slots in one shared-memory segment
// (layout version 2, stream_layout.hpp; docs/LAYOUT.md "Streams").
//
// The protocol in one paragraph. Writers take the stream's robust mutex only to claim: under
// it a writer reads `head`, checks room (under "block", the slowest attached reader must be
// less than a ring behind), marks the slot WRITING for that sequence with its writer-table
// entry, and advances `head`. It then copies the payload with the mutex free and stores the
// slot word COMMITTED (release), and wakes sleeping readers. So sequence numbers give one
// total order, writers copy in parallel, and a writer killed anywhere leaves either nothing
// (killed before its mark: the next writer sees EOWNERDEAD and repairs `head`) or a slot
// marked WRITING by a writer-table entry whose kernel lock is gone: a reader that finds a
// slot WRITING for kHoleCheck judges its writer and, if it is dead, marks the slot ABANDONED
// (counted in `abandoned`); every reader counts it in its `lost` and moves on. Readers own a
// cursor line each and take messages by sequence number: a committed slot of their sequence
// is copied and re-checked (seqlock style: under "drop_oldest" a writer may overwrite it
// meanwhile; the copy is then discarded and the lap counted as lost). Liveness of readers and
// writers is an OFD lock on their table entry (liveness.hpp), never a pid.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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
#include <thread>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "cpu.hpp"
#include "errors.hpp"
#include "futex.hpp"
#include "liveness.hpp"
#include "process.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"
#include "seqlock.hpp"
#include "stream_layout.hpp"

namespace xshm {

/// How long a slot may stay WRITING before a waiting reader asks whether its writer lives,
/// and how often a writer blocked by a full ring asks whether the readers gating it live.
inline constexpr std::chrono::milliseconds kHoleCheck{10};
inline constexpr std::chrono::milliseconds kGateCheck{10};
/// How long a claim polls a held stream mutex before it waits for it; how long a writer that
/// finds the ring full polls for room before it sleeps; how long a reader polls for a message
/// before it sleeps (at least). Polling a few microseconds saves a futex round trip per
/// message when the other side is busy and keeps up.
inline constexpr std::chrono::microseconds kLockPoll{20};
inline constexpr std::chrono::microseconds kFullPoll{50};
inline constexpr std::chrono::microseconds kEmptyPoll{2};
inline constexpr unsigned kPollPauses = 16;
/// Claims of at most this many payload bytes are filled and committed before the mutex is
/// released: the slot's line is then taken from a polling reader once per message, not twice.
inline constexpr std::size_t kFillUnderLock = 4096;
/// How often a long send or receive calls its between-slices hook.
inline constexpr std::chrono::milliseconds kStreamSlice{100};

/// Parameters of Stream::create().
struct StreamOptions {
  std::uint64_t capacity = 1024;   // messages the ring holds
  std::uint64_t max_bytes = 1024;  // payload bytes a message may have
  Backpressure backpressure = Backpressure::block;
  std::uint32_t max_readers = 16;
  std::uint32_t max_writers = 64;
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

/// Where a new reader starts: the oldest message the ring still holds, or the next one sent.
enum class Start { oldest, latest };

/// What a receive returns besides the bytes.
struct MessageInfo {
  std::uint64_t seq = 0;
  std::int64_t timestamp_ns = 0;  // CLOCK_REALTIME when it was sent
  std::uint32_t writer_pid = 0;
  std::uint64_t size = 0;  // payload bytes
};

struct Message : MessageInfo {
  std::vector<unsigned char> data;
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
  // Under the stream mutex: what the last scan of the reader table found.
  std::uint32_t scan_gen = 0;
  bool scanned = false;
  bool any_reader = false;
  std::uint64_t gate = 0;                                 // the smallest cursor of an attached reader
  std::chrono::steady_clock::time_point last_reap{};      // when a full claim last reaped
  std::chrono::steady_clock::time_point last_lap_reap{};  // ... and a claim that crossed a lap

  StreamSegment() = default;
  StreamSegment(const StreamSegment&) = delete;
  StreamSegment& operator=(const StreamSegment&) = delete;
  ~StreamSegment() {
    liveness::withdraw(&fd);
    const int w = writer_index.load(std::memory_order_relaxed);
    if (w >= 0 && !fd.forked && pid == current_pid()) {  // a clean close frees the entry
      std::uint64_t mine = writer_state.load(std::memory_order_relaxed);
      writer(static_cast<std::uint32_t>(w))
          ->state.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
    }
    if (fd.fd >= 0) ::close(fd.fd);  // drops every liveness lock of this handle
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

inline std::uint64_t stream_file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(errno, "fstat");
  return static_cast<std::uint64_t>(st.st_size);
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
  const int own = ::shm_open(canon.c_str(), (writable_fd ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
  if (own < 0) throw_errno(errno, "shm_open(" + canon + ")");
  struct stat st2 {};
  if (::fstat(own, &st2) != 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino) {
    ::close(own);
    throw_errno(ENOENT, "shm_open(" + canon + "): the name was removed or replaced while it was opened");
  }
  s->fd.fd = own;
  liveness::enroll(&s->fd);
  return s;
}

inline std::shared_ptr<StreamSegment> build_stream(const std::string& canon, Fd fd, const StreamGeometry& g,
                                                   mode_t mode) {
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) throw_errno(errno, "flock");
  if (::fchmod(fd.get(), mode) != 0) throw_errno(errno, "fchmod");
  if (::ftruncate(fd.get(), static_cast<off_t>(g.total_size)) != 0) throw_errno(errno, "ftruncate");
  if (int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(g.total_size)); rc != 0)
    throw_errno(rc, "posix_fallocate(" + canon + ", " + std::to_string(g.total_size) + " bytes)");
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
  std::shared_ptr<StreamSegment> s = map_stream(canon, fd.get(), stream_file_size(fd.get()), false, true);
  ::flock(fd.get(), LOCK_UN);
  return s;
}

inline std::shared_ptr<StreamSegment> open_stream(std::string_view name, const StreamOpenOptions& opt) {
  const std::string canon = normalize_name(name);
  const auto start = std::chrono::steady_clock::now();
  Fd fd;
  bool writable_fd = true;
  for (int pause_us = 100;; pause_us = std::min(pause_us * 2, 10000)) {
    // A reader writes its cursor line, so even a read-only handle asks for O_RDWR first; a
    // user who may only read the file gets a handle that can neither send nor attach.
    int raw = ::shm_open(canon.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (raw < 0 && errno == EACCES && opt.readonly) {
      raw = ::shm_open(canon.c_str(), O_RDONLY | O_CLOEXEC, 0);
      writable_fd = false;
    }
    if (raw >= 0) {
      fd = Fd(raw);
      break;
    }
    if (errno != ENOENT || (opt.timeout && std::chrono::steady_clock::now() - start >= *opt.timeout))
      throw_errno(errno, "shm_open(" + canon + ")");
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
  const auto ready_deadline =
      std::chrono::steady_clock::now() + kReadyWait + opt.timeout.value_or(std::chrono::nanoseconds{0});
  for (;;) {
    if (!flock_until(fd.get(), LOCK_SH, ready_deadline))
      throw WaitTimeoutError("stream " + canon + " is still being created");
    const std::uint64_t size = stream_file_size(fd.get());
    if (size == 0) {
      ::flock(fd.get(), LOCK_UN);
      if (std::chrono::steady_clock::now() >= ready_deadline)
        throw LayoutError("segment " + canon +
                          " is an empty file: not an xshm segment, or its creator stopped before "
                          "sizing it (remove it with unlink(force=True))");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    std::shared_ptr<StreamSegment> s = map_stream(canon, fd.get(), size, opt.readonly, writable_fd);
    ::flock(fd.get(), LOCK_UN);
    return s;
  }
}

inline std::shared_ptr<StreamSegment> create_stream(std::string_view name, const StreamOptions& opt) {
  const std::string canon = normalize_name(name);
  const StreamGeometry g =
      compute_stream_geometry(opt.capacity, opt.max_bytes, opt.backpressure, opt.max_readers, opt.max_writers,
                              opt.dtype ? static_cast<std::uint32_t>(*opt.dtype) : 0, opt.shape);
  if (opt.mode > 0777) throw ArgumentError("mode must be a permission mask (at most 0o777)");
  for (int attempt = 0;; ++attempt) {
    int fd = ::shm_open(canon.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, opt.mode & 0777);
    if (fd < 0) {
      if (errno != EEXIST || !opt.exist_ok)
        throw_errno(errno,
                    "shm_open(" + canon + ")" +
                        (errno == EEXIST ? ": a segment of that name exists (open it with Stream::open, "
                                           "pass exist_ok, or remove it: xshm rm " +
                                               canon.substr(1) + ")"
                                         : std::string()));
      try {
        std::shared_ptr<StreamSegment> s = open_stream(canon, StreamOpenOptions{});
        const StreamGeometry& got = s->geo;
        std::string diff;
        auto note = [&](const char* field, const std::string& there, const std::string& asked) {
          if (there != asked)
            diff +=
                std::string(diff.empty() ? "" : ", ") + field + " " + there + " there, " + asked + " asked";
        };
        note("capacity", std::to_string(got.capacity), std::to_string(g.capacity));
        note("max_bytes", std::to_string(got.max_bytes), std::to_string(g.max_bytes));
        note("backpressure", got.backpressure == Backpressure::block ? "block" : "drop_oldest",
             g.backpressure == Backpressure::block ? "block" : "drop_oldest");
        note("max_readers", std::to_string(got.max_readers), std::to_string(g.max_readers));
        note("max_writers", std::to_string(got.max_writers), std::to_string(g.max_writers));
        auto kind = [](const StreamGeometry& x) {
          if (x.dtype == 0) return std::string("bytes");
          std::string t = std::string(dtype_info(static_cast<Dtype>(x.dtype)).name) + "(";
          for (std::size_t i = 0; i < x.shape.size(); ++i)
            t += std::to_string(x.shape[i]) + (x.shape.size() == 1      ? ","
                                               : i + 1 < x.shape.size() ? ", "
                                                                        : "");
          return t + ")";
        };
        note("frames", kind(got), kind(g));
        if (!diff.empty()) throw LayoutError("stream " + canon + " exists with another layout: " + diff);
        return s;
      } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT || attempt >= 100) throw;
        continue;
      }
    }
    Fd owned(fd);
    struct stat mine {};
    const bool known = ::fstat(fd, &mine) == 0;
    try {
      return build_stream(canon, std::move(owned), g, opt.mode & 0777);
    } catch (...) {
      if (known) unlink_if_same(canon, mine.st_dev, mine.st_ino);
      throw;
    }
  }
}

}  // namespace detail

namespace stream_impl {

using detail::get;
using detail::put;
using detail::StreamSegment;

/// Whether the writer-table entry `index`, seen with `state`, still belongs to a live writer.
inline bool writer_alive(StreamSegment& s, std::uint32_t index, std::uint64_t state) {
  if (index >= s.geo.max_writers) return false;  // a corrupt slot: nobody to wait for
  if (static_cast<int>(index) == s.writer_index.load(std::memory_order_acquire) &&
      state == s.writer_state.load(std::memory_order_acquire))
    return true;
  if (s.writer(index)->state.load(std::memory_order_acquire) != state) return false;
  return liveness::held_by_other(s.fd.fd, s.writer_lock_offset(index));
}

inline bool reader_alive(StreamSegment& s, std::uint32_t index) {
  {
    std::lock_guard<std::mutex> g(s.local);
    if (s.own_readers.count(index) != 0) return true;
  }
  return liveness::held_by_other(s.fd.fd, s.reader_lock_offset(index));
}

/// Wakes readers sleeping on data_epoch. SYNC POINT: the seq_cst bump and waiters load pair
/// with the reader's seq_cst waiters increment and epoch load (wait_for_message): either the
/// reader sees the new epoch (and the commits before it), or this load sees the reader.
inline void notify_readers(StreamHeader* h) noexcept {
  h->data_epoch.fetch_add(1, std::memory_order_seq_cst);
  if (h->data_waiters.load(std::memory_order_seq_cst) != 0) futex::wake_all(&h->data_epoch);
}

/// Wakes writers waiting for room. SYNC POINT: the seq_cst fence after the cursor store pairs
/// with the writer's fence after its waiters increment (send_batch): either this load sees the
/// writer, or the writer's next scan sees the cursor. ThreadSanitizer has no fences: there the
/// load is a read-modify-write of the waiter count, which orders the same way (the writer's
/// increment and this one are ordered, and each synchronizes with the one before it).
inline void notify_writers(StreamHeader* h) noexcept {
#if XSHM_TSAN
  const std::uint32_t waiting = h->space_waiters.fetch_add(0, std::memory_order_acq_rel);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint32_t waiting = h->space_waiters.load(std::memory_order_relaxed);
#endif
  if (waiting != 0) {
    h->space_epoch.fetch_add(1, std::memory_order_seq_cst);
    futex::wake_all(&h->space_epoch);
  }
}

/// A Deadline that reads the clock only when asked for the time left of a finite, non-zero
/// timeout: the first attempt of a send costs no clock read.
class LazyDeadline {
 public:
  explicit LazyDeadline(Timeout t) noexcept : t_(t) {}
  std::chrono::nanoseconds left() {
    if (!t_ || *t_ >= kForever) return std::chrono::nanoseconds::max();
    if (t_->count() <= 0) return std::chrono::nanoseconds{0};
    const auto now = std::chrono::steady_clock::now();
    if (!started_) {
      end_ = now + *t_;
      started_ = true;
    }
    return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(end_ - now),
                    std::chrono::nanoseconds{0});
  }

 private:
  Timeout t_;
  bool started_ = false;
  std::chrono::steady_clock::time_point end_{};
};

/// The counter of one sleeping wait, given back on every way out.
class Sleeping {
 public:
  explicit Sleeping(std::atomic<std::uint32_t>& n) noexcept : n_(n) {
    n_.fetch_add(1, std::memory_order_seq_cst);
  }
  ~Sleeping() { n_.fetch_sub(1, std::memory_order_seq_cst); }
  Sleeping(const Sleeping&) = delete;
  Sleeping& operator=(const Sleeping&) = delete;

 private:
  std::atomic<std::uint32_t>& n_;
};

/// Mutex held after EOWNERDEAD (LAYOUT.md "Streams: recovery"): a claim the dead holder left
/// half made is finished as ABANDONED, `head` is put past every slot it marked, and readers
/// and writers are told to look again.
inline void recover(StreamSegment& s) {
  StreamHeader* h = s.header();
  const std::uint64_t pending = h->claim_seq.load(std::memory_order_relaxed);
  if (pending != 0) {
    const std::uint64_t x = pending - 1;
    // Marked (WRITING, or already ABANDONED by a reader that judged it): its overwrite happened.
    const std::uint64_t w = s.slot(x)->word.load(std::memory_order_relaxed);
    if (w == slot_word::make(x, slot_word::kWriting) || w == slot_word::make(x, slot_word::kAbandoned))
      h->dropped.store(h->claim_dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
    h->claim_seq.store(0, std::memory_order_relaxed);
  }
  std::uint64_t head = h->head.load(std::memory_order_relaxed);
  for (std::uint64_t n = 0; n < s.geo.capacity; ++n, ++head) {
    // Under the mutex a slot is marked for `head` or later only by the holder that died: still
    // WRITING (abandon it here), or ABANDONED already by a reader that judged it. Either way
    // its sequence number is used up: head goes past it, never to reuse it.
    std::uint64_t w = slot_word::make(head, slot_word::kWriting);
    if (s.slot(head)->word.compare_exchange_strong(w, slot_word::make(head, slot_word::kAbandoned),
                                                   std::memory_order_acq_rel)) {
      h->abandoned.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (w != slot_word::make(head, slot_word::kAbandoned)) break;
  }
  // SYNC POINT: pairs with the reader's acquire load of head when it is lapped.
  h->head.store(head, std::memory_order_release);
  h->readers_gen.fetch_add(1, std::memory_order_relaxed);
  h->recoveries.fetch_add(1, std::memory_order_relaxed);
  notify_readers(h);
}

/// The stream mutex, held; released on destruction.
class StreamLock {
 public:
  /// Takes the mutex, waiting at most `timeout` (nullopt: forever). It is held for claims
  /// only (well under a microsecond), so it is first tried for up to kLockPoll before any
  /// wait: a call that may not wait at all (timeout zero) still gets it from a live holder.
  template <class Hook = NoHook>
  static std::optional<StreamLock> acquire(StreamSegment& s, Timeout timeout, Hook&& hook = {}) {
    std::optional<StreamLock> held;
    robust_mutex::LockResult r = robust_mutex::LockResult::TimedOut;
    int rc = pthread_mutex_trylock(s.mutex());
    std::chrono::steady_clock::time_point poll_end{};
    if (rc == EBUSY) poll_end = std::chrono::steady_clock::now() + kLockPoll;
    for (unsigned i = 0;; ++i, rc = pthread_mutex_trylock(s.mutex())) {
      if (rc != EBUSY) {
        r = robust_mutex::impl::lock_result(rc);
        break;
      }
      cpu::relax();
      if ((i & 15) == 15 && std::chrono::steady_clock::now() >= poll_end) {
        if (!timeout || timeout->count() > 0)
          r = robust_mutex::lock(s.mutex(), timeout, std::forward<Hook>(hook));
        break;
      }
    }
    switch (r) {
      case robust_mutex::LockResult::TimedOut:
        return held;
      case robust_mutex::LockResult::OwnerDied:
        held.emplace(StreamLock(s));
        recover(s);
        robust_mutex::consistent(s.mutex());
        break;
      case robust_mutex::LockResult::Acquired:
        held.emplace(StreamLock(s));
        break;
    }
    s.header()->owner_pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
    return held;
  }
  StreamLock(StreamLock&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  StreamLock& operator=(StreamLock&&) = delete;
  StreamLock(const StreamLock&) = delete;
  StreamLock& operator=(const StreamLock&) = delete;
  ~StreamLock() {
    if (s_ == nullptr) return;
    s_->header()->owner_pid.store(0, std::memory_order_relaxed);
    robust_mutex::unlock(s_->mutex());
  }

 private:
  explicit StreamLock(StreamSegment& s) noexcept : s_(&s) {}
  StreamSegment* s_;
};

/// Mutex held: this handle's writer entry, registered at its first send.
inline void ensure_writer(StreamSegment& s) {
  if (s.writer_index.load(std::memory_order_relaxed) >= 0) return;
  for (std::uint32_t i = 0; i < s.geo.max_writers; ++i) {
    WriterEntry* e = s.writer(i);
    const std::uint64_t st = e->state.load(std::memory_order_acquire);
    // A free entry, or one whose writer is gone (its slots then judge dead: the state changes).
    if (st != 0 && liveness::held_by_other(s.fd.fd, s.writer_lock_offset(i))) continue;
    if (!liveness::hold(s.fd.fd, s.writer_lock_offset(i))) continue;
    e->generation += 1;  // under the mutex; never reset, so a dead writer's slots never match
    const std::uint64_t mine = entry_state(e->generation);
    e->pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
    e->sent.store(0, std::memory_order_relaxed);
    e->attached_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
    e->state.store(mine, std::memory_order_release);
    if (st != 0) s.header()->reaped.fetch_add(1, std::memory_order_relaxed);  // a dead writer's entry
    s.writer_state.store(mine, std::memory_order_release);
    s.writer_index.store(static_cast<int>(i), std::memory_order_release);
    return;
  }
  throw Error("stream " + s.name + " has all " + std::to_string(s.geo.max_writers) +
              " writer entries in use by live writers (max_writers)");
}

/// Mutex held: the smallest cursor of the attached readers, from a fresh look at the table.
inline void scan_readers(StreamSegment& s) {
  StreamHeader* h = s.header();
  const std::uint64_t head = h->head.load(std::memory_order_relaxed);
  s.scan_gen = h->readers_gen.load(std::memory_order_acquire);
  s.any_reader = false;
  s.gate = UINT64_MAX;
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    if (r->state.load(std::memory_order_acquire) == 0) continue;
    // SYNC POINT: pairs with the reader's release store of its cursor after it copied out.
    // A cursor is never past head; a corrupt one is taken as head (it gates nothing).
    const std::uint64_t c = std::min(r->cursor.load(std::memory_order_acquire), head);
    s.any_reader = true;
    s.gate = std::min(s.gate, c);
  }
  s.scanned = true;
}

/// Mutex held: detaches attached readers whose liveness lock is gone. True if any was.
inline bool reap_readers(StreamSegment& s) {
  bool any = false;
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    std::uint64_t st = r->state.load(std::memory_order_acquire);
    if (st == 0 || reader_alive(s, i)) continue;
    if (r->state.compare_exchange_strong(st, 0, std::memory_order_acq_rel)) {
      s.header()->reaped.fetch_add(1, std::memory_order_relaxed);
      s.header()->readers_gen.fetch_add(1, std::memory_order_acq_rel);
      any = true;
    }
  }
  return any;
}

/// Without the mutex: whether `n` more messages would fit in front of every attached reader
/// now (a hint for polling; the claim decides under the mutex).
inline bool has_room(StreamSegment& s, std::uint64_t n) noexcept {
  const std::uint64_t head = s.header()->head.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    if (r->state.load(std::memory_order_acquire) == 0) continue;
    if (head + n > std::min(r->cursor.load(std::memory_order_acquire), head) + s.geo.capacity) return false;
  }
  return true;
}

/// Why a claim did not happen.
enum class Claim { made, full, busy };

struct GateInfo {
  std::uint64_t cursor = 0;
  std::uint32_t pid = 0;
};

inline GateInfo slowest_reader(StreamSegment& s) {
  GateInfo g{UINT64_MAX, 0};
  const std::uint64_t head = s.header()->head.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
    ReaderEntry* r = s.reader(i);
    if (r->state.load(std::memory_order_acquire) == 0) continue;
    const std::uint64_t c = std::min(r->cursor.load(std::memory_order_acquire), head);
    if (c < g.cursor) g = GateInfo{c, r->pid.load(std::memory_order_relaxed)};
  }
  return g;
}

/// Mutex held: claims `n` consecutive sequences, marking their slots WRITING. `first` gets the
/// first of them. `full` under "block" when the slowest attached reader is less than `n`
/// slots from a full ring behind; `busy` when a slot's previous writer is still copying into it.
inline Claim claim_locked(StreamSegment& s, std::uint64_t n, std::uint64_t& first) {
  StreamHeader* h = s.header();
  ensure_writer(s);
  const std::uint64_t head = h->head.load(std::memory_order_relaxed);
  if (head > kMaxStreamSeq - (n - 1))
    throw Error("stream " + s.name + " has used all 2**62 sequence numbers");
  if (!s.scanned || h->readers_gen.load(std::memory_order_acquire) != s.scan_gen) scan_readers(s);
  const std::uint64_t cap = s.geo.capacity;
  // Dead readers are detached when they would gate a claim (at most every kGateCheck: it asks
  // the kernel about each reader) and once per lap of the ring (a "drop_oldest" stream's
  // dead reader gates nothing, but it must not keep `dropped` from counting).
  if (s.any_reader && (head + n) / cap != head / cap) {
    const auto now = std::chrono::steady_clock::now();
    if (now - s.last_lap_reap >= kGateCheck) {
      s.last_lap_reap = now;
      if (reap_readers(s)) scan_readers(s);
    }
  }
  if (s.geo.backpressure == Backpressure::block && s.any_reader && head + n > s.gate + cap) {
    scan_readers(s);  // the cached cursors may be old
    if (s.any_reader && head + n > s.gate + cap) {
      const auto now = std::chrono::steady_clock::now();
      if (now - s.last_reap < kGateCheck) return Claim::full;
      s.last_reap = now;
      if (!reap_readers(s)) return Claim::full;
      scan_readers(s);
      if (s.any_reader && head + n > s.gate + cap) return Claim::full;
    }
  }
  // A slot whose previous claim is still WRITING: wait for a live writer, abandon a dead one.
  for (std::uint64_t j = 0; j < n; ++j) {
    if (head + j < cap) continue;  // never written
    SlotHeader* sl = s.slot(head + j);
    std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (slot_word::tag(w) != slot_word::kWriting || slot_word::seq(w) >= head) continue;
    if (writer_alive(s, get(sl->writer_index), get(sl->writer_state))) return Claim::busy;
    if (sl->word.compare_exchange_strong(w, slot_word::make(slot_word::seq(w), slot_word::kAbandoned),
                                         std::memory_order_acq_rel))
      h->abandoned.fetch_add(1, std::memory_order_relaxed);
  }
  const int widx = s.writer_index.load(std::memory_order_relaxed);
  const std::uint64_t wstate = s.writer_state.load(std::memory_order_relaxed);
  WriterEntry* me = s.writer(static_cast<std::uint32_t>(widx));
  // Every writer changes only its own entry, and only under the mutex: no read-modify-write.
  me->sent.store(me->sent.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  const bool drops = !s.any_reader;
  for (std::uint64_t j = 0; j < n; ++j) {
    const std::uint64_t x = head + j;
    SlotHeader* sl = s.slot(x);
    const bool overwrites = drops && x >= cap;
    if (overwrites) {
      // Recovery can tell whether this slot was marked, hence whether `dropped` counts it.
      h->claim_dropped.store(h->dropped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      h->claim_seq.store(x + 1, std::memory_order_relaxed);
    }
    put(sl->writer_index, static_cast<std::uint32_t>(widx));
    put(sl->writer_state, wstate);
    // SYNC POINT: release, so a reader judging this slot (acquire load of the word) sees the
    // writer fields above; the fence after it pairs with a lapped reader's acquire fence, as
    // in seqlock::begin_slot_write: a reader that sees any byte written after it re-reads
    // the word as changed.
    sl->word.store(slot_word::make(x, slot_word::kWriting), std::memory_order_release);
    seqlock::release_fence();
    if (overwrites)
      h->dropped.store(h->claim_dropped.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  // SYNC POINT: pairs with the acquire load of head by a lapped reader and Stream::head().
  h->head.store(head + n, std::memory_order_release);
  h->claim_seq.store(0, std::memory_order_relaxed);
  first = head;
  return Claim::made;
}

/// Fills a claimed slot and commits it.
inline bool fill_and_commit(StreamSegment& s, std::uint64_t x, const void* data, std::uint64_t len) noexcept {
  SlotHeader* sl = s.slot(x);
  put(sl->length, len);
  put(sl->timestamp_ns, detail::realtime_ns());
  put(sl->writer_pid, static_cast<std::uint32_t>(detail::current_pid()));
  if (len != 0) seqlock::store_bytes(StreamSegment::payload(sl), data, static_cast<std::size_t>(len));
  // SYNC POINT: pairs with the reader's acquire load of the word: a reader that sees COMMITTED
  // sees the payload and fields above.
  // A CAS, not a store: a slot a reader abandoned (its writer judged dead) stays abandoned.
  std::uint64_t w = slot_word::make(x, slot_word::kWriting);
  return sl->word.compare_exchange_strong(w, slot_word::make(x, slot_word::kCommitted),
                                          std::memory_order_release, std::memory_order_relaxed);
}

}  // namespace stream_impl

class Stream;

/// One reader of a stream: its own cursor (every message, in order, from where it started),
/// attached until close() or destruction. Not copyable; one thread at a time.
class StreamReader {
 public:
  StreamReader() = default;
  StreamReader(StreamReader&& o) noexcept
      : s_(std::move(o.s_)),
        index_(o.index_),
        state_(o.state_),
        cursor_(o.cursor_),
        lost_(o.lost_),
        received_(o.received_),
        hole_seen_(o.hole_seen_),
        hole_seq_(o.hole_seq_),
        hole_since_(o.hole_since_) {
    o.s_.reset();
  }
  StreamReader& operator=(StreamReader&& o) noexcept {
    if (this != &o) {
      close();
      s_ = std::move(o.s_);
      o.s_.reset();
      index_ = o.index_;
      state_ = o.state_;
      cursor_ = o.cursor_;
      lost_ = o.lost_;
      received_ = o.received_;
      hole_seen_ = o.hole_seen_;
      hole_seq_ = o.hole_seq_;
      hole_since_ = o.hole_since_;
    }
    return *this;
  }
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;
  ~StreamReader() { close(); }

  bool is_attached() const noexcept { return s_ != nullptr; }
  /// The sequence number of the next message this reader takes.
  std::uint64_t cursor() const { return seg(), cursor_; }
  /// Messages this reader skipped: overwritten before it got to them ("drop_oldest"), or
  /// abandoned by a writer that died before it committed them.
  std::uint64_t lost() const { return seg(), lost_; }
  std::uint64_t received() const { return seg(), received_; }
  /// Messages sent (or being sent) that this reader has not taken yet.
  std::uint64_t lag() const {
    const std::uint64_t head = seg().header()->head.load(std::memory_order_acquire);
    return head > cursor_ ? head - cursor_ : 0;
  }
  std::uint32_t index() const { return seg(), index_; }

  /// Takes the next message if one is committed: `f(const unsigned char* src, const
  /// MessageInfo&)` copies it out of the slot (with seqlock::load_bytes, or anything that only
  /// reads `info.size` bytes). `f` may run more than once for one call when a "drop_oldest"
  /// writer overwrote the slot meanwhile: only the last run is a message. False when there
  /// is nothing to take yet.
  template <class F>
  bool try_visit(F&& f) {
    return take(f) == Took::message;
  }

  /// Waits up to `timeout` (nullopt: forever) for the next message and visits it as
  /// try_visit() does; polls `spin` (at least kEmptyPoll) first, then sleeps. False on timeout.
  /// `between_slices()` runs about every `slice` while waiting (it may throw).
  template <class F, class Hook = NoHook>
  bool visit(F&& f, Timeout timeout = std::nullopt,
             std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}, Hook&& between_slices = {},
             std::chrono::nanoseconds slice = std::chrono::milliseconds(100)) {
    Took t = take(f);
    if (t == Took::message) return true;
    StreamHeader* h = seg().header();
    const timespec start = futex::monotonic_now();
    timespec deadline{};
    if (timeout) deadline = futex::add_ns(start, std::max<std::int64_t>(timeout->count(), 0));
    timespec next_hook = futex::add_ns(start, slice.count());
    spin = std::max<std::chrono::nanoseconds>(spin, kEmptyPoll);
    if (timeout) spin = std::min<std::chrono::nanoseconds>(spin, *timeout);
    if (spin.count() > 0) {
      const timespec spin_end = futex::add_ns(start, spin.count());
      unsigned pauses = 1;
      for (unsigned i = 0;; ++i) {
        // Back off between looks, up to kPollPauses: each look takes the slot's line from a
        // writer that is about to fill it, and a look every few nanoseconds makes every send
        // wait for the line (measured: 2.2 M against 5.9 M messages/s, Python to Python). A
        // reader that finds messages again takes them from a backlog without looking in vain.
        for (unsigned k = 0; k < pauses; ++k) cpu::relax();
        if (pauses < kPollPauses) pauses *= 2;
        if ((t = take(f)) == Took::message) return true;
        if ((i & 15) == 15) {
          const timespec now = futex::monotonic_now();
          if (timeout && !futex::before(now, deadline)) return false;
          if (!futex::before(now, spin_end)) break;
        }
      }
    }
    stream_impl::Sleeping sleeping(h->data_waiters);
    for (;;) {
      // SYNC POINT: pairs with stream_impl::notify_readers (seq_cst on both sides).
      const std::uint32_t epoch = h->data_epoch.load(std::memory_order_seq_cst);
      if ((t = take(f)) == Took::message) return true;
      timespec now = futex::monotonic_now();
      if (timeout && !futex::before(now, deadline)) return false;
      if constexpr (kHasHook<Hook>) {
        if (!futex::before(now, next_hook)) {
          between_slices();
          next_hook = futex::add_ns(futex::monotonic_now(), slice.count());
          continue;
        }
      }
      timespec until = timeout ? deadline : futex::add_ns(now, INT64_C(3600) * 1'000'000'000);
      if constexpr (kHasHook<Hook>) {
        if (futex::before(next_hook, until)) until = next_hook;
      }
      if (t == Took::hole) {  // wake to judge it (take() does, once it is kHoleCheck old)
        const timespec judge = futex::add_ns(now, std::chrono::nanoseconds(kHoleCheck).count());
        if (futex::before(judge, until)) until = judge;
      }
      futex::wait(&h->data_epoch, epoch, &until);
    }
  }

  /// The next message, waiting up to `timeout`; WaitTimeoutError when none came.
  Message recv(Timeout timeout = std::nullopt, std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) {
    Message m;
    if (!visit([&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); }, timeout, spin))
      throw WaitTimeoutError("no message on stream " + seg().name + " within the timeout");
    return m;
  }

  std::optional<Message> try_recv() {
    Message m;
    if (!try_visit([&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); }))
      return std::nullopt;
    return m;
  }

  /// Receives into `buf` (at least max_bytes() long, so any message fits). nullopt on timeout.
  std::optional<MessageInfo> recv_into(void* buf, std::size_t size, Timeout timeout = std::nullopt,
                                       std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) {
    if (size < seg().geo.max_bytes)
      throw ArgumentError("recv_into: the buffer holds " + std::to_string(size) +
                          " bytes; a message may have " + std::to_string(seg().geo.max_bytes));
    MessageInfo out;
    auto copy = [&](const unsigned char* src, const MessageInfo& info) {
      seqlock::load_bytes(buf, src, static_cast<std::size_t>(info.size));
      out = info;
    };
    if (!visit(copy, timeout, spin)) return std::nullopt;
    return out;
  }

  /// Waits up to `timeout` for one message, then takes every message already committed, up
  /// to `max_n`. Empty on timeout.
  std::vector<Message> recv_many(std::size_t max_n, Timeout timeout = std::nullopt) {
    std::vector<Message> out;
    if (max_n == 0) return out;
    Message m;
    auto f = [&](const unsigned char* src, const MessageInfo& info) { fill(m, src, info); };
    if (!visit(f, timeout)) return out;
    out.push_back(std::move(m));
    while (out.size() < max_n && try_visit(f)) out.push_back(std::move(m));
    return out;
  }

  /// Detaches: a "block" writer stops waiting for this reader. Idempotent.
  void close() noexcept {
    if (s_ == nullptr) return;
    detail::StreamSegment& s = *s_;
    if (!s.fd.forked && s.pid == detail::current_pid()) {
      StreamHeader* h = s.header();
      ReaderEntry* r = s.reader(index_);
      // Under the mutex when it comes within kGateCheck (writers then see the detach at their
      // next claim, no reaper runs meanwhile, and no reader attaches to this entry); without
      // it otherwise (a stopped writer holds it), which only delays what the writers see.
      std::optional<stream_impl::StreamLock> lock = lock_for_close(s);
      // The entry stays this handle's own (never judged dead by a reaper of this handle) until
      // its state is 0; the lock byte goes first: once the state is 0 another reader of this
      // handle (same open file description) may take the entry, and a release after that would
      // drop its lock.
      liveness::release(s.fd.fd, s.reader_lock_offset(index_));
      std::uint64_t st = state_;
      if (r->state.compare_exchange_strong(st, 0, std::memory_order_acq_rel))
        h->readers_gen.fetch_add(1, std::memory_order_acq_rel);
      {
        std::lock_guard<std::mutex> g(s.local);
        auto it = s.own_readers.find(index_);  // one instance: a later attachment keeps its own
        if (it != s.own_readers.end()) s.own_readers.erase(it);
      }
      lock.reset();
      h->space_epoch.fetch_add(1, std::memory_order_seq_cst);
      futex::wake_all(&h->space_epoch);
    }
    s_.reset();
  }

 private:
  friend class Stream;
  enum class Took { message, empty, hole };

  StreamReader(std::shared_ptr<detail::StreamSegment> s, std::uint32_t index, std::uint64_t state,
               std::uint64_t cursor)
      : s_(std::move(s)), index_(index), state_(state), cursor_(cursor) {}

  detail::StreamSegment& seg() const {
    if (s_ == nullptr) throw ClosedError("the stream reader is closed");
    s_->check_usable();
    return *s_;
  }

  static void fill(Message& m, const unsigned char* src, const MessageInfo& info) {
    static_cast<MessageInfo&>(m) = info;
    m.data.resize(static_cast<std::size_t>(info.size));
    if (info.size != 0) seqlock::load_bytes(m.data.data(), src, static_cast<std::size_t>(info.size));
  }

  static std::optional<stream_impl::StreamLock> lock_for_close(detail::StreamSegment& s) noexcept {
    if (!s.mutex_ok) return std::nullopt;
    try {
      return stream_impl::StreamLock::acquire(s, std::chrono::nanoseconds(kGateCheck));
    } catch (...) {
      return std::nullopt;
    }
  }

  void advance(std::uint64_t next, bool took) noexcept {
    ReaderEntry* r = s_->reader(index_);
    if (took) {
      ++received_;
      r->received.store(received_, std::memory_order_relaxed);
    }
    cursor_ = next;
    // SYNC POINT: pairs with the writer's acquire load of cursors (scan_readers): the writer
    // that sees this cursor may overwrite the slots before it, which this reader has copied.
    r->cursor.store(next, std::memory_order_release);
    if (s_->geo.backpressure == Backpressure::block) stream_impl::notify_writers(s_->header());
  }

  void count_lost(std::uint64_t n) noexcept {
    lost_ += n;
    s_->reader(index_)->lost.store(lost_, std::memory_order_relaxed);
  }

  /// One look at the slot of the cursor.
  template <class F>
  Took take(F& f) {
    detail::StreamSegment& s = seg();
    const std::uint64_t cap = s.geo.capacity;
    for (;;) {
      const std::uint64_t c = cursor_;
      SlotHeader* sl = s.slot(c);
      // SYNC POINT: pairs with the release store of COMMITTED in fill_and_commit().
      const std::uint64_t w = sl->word.load(std::memory_order_acquire);
      if (w == slot_word::make(c, slot_word::kCommitted)) {
        MessageInfo info;
        info.seq = c;
        info.size = detail::get(sl->length);
        info.timestamp_ns = detail::get(sl->timestamp_ns);
        info.writer_pid = detail::get(sl->writer_pid);
        const bool sane = info.size <= s.geo.max_bytes;
        if (sane) f(detail::StreamSegment::payload(sl), info);
        // SYNC POINT: pairs with the release fence after a lapping writer's WRITING mark.
        seqlock::acquire_fence();
        if (sl->word.load(std::memory_order_relaxed) != w) continue;  // overwritten meanwhile: look again
        if (!sane)
          throw LayoutError("stream " + s.name + ": message " + std::to_string(c) + " claims " +
                            std::to_string(info.size) + " bytes, more than max_bytes (corrupt segment)");
        advance(c + 1, true);
        return Took::message;
      }
      const std::uint64_t ws = slot_word::seq(w);
      if (w != 0 && ws > c) {  // lapped: the ring has moved past the cursor
        // A real lap left a later sequence of the same slot; anything else is a corrupt word,
        // which must not walk the cursor forward one number at a time.
        if (ws % cap != c % cap || ws > kMaxStreamSeq)
          throw LayoutError("stream " + s.name + ": slot of message " + std::to_string(c) +
                            " holds a word for message " + std::to_string(ws) + " (corrupt segment)");
        const std::uint64_t head = s.header()->head.load(std::memory_order_acquire);
        std::uint64_t next = head >= cap ? head - cap + 1 : 0;
        if (cap == 1) next = head;
        // Every sequence up to ws - capacity has had its slot claimed again: lost for sure.
        next = std::max({next, c + 1, ws - cap + 1});
        count_lost(next - c);
        advance(next, false);
        continue;
      }
      if (w == slot_word::make(c, slot_word::kAbandoned)) {
        count_lost(1);
        advance(c + 1, false);
        continue;
      }
      if (w != slot_word::make(c, slot_word::kWriting)) return Took::empty;
      // A hole: judged once it has stayed WRITING for kHoleCheck, counted across calls (a
      // reader that only polls, or waits in short timeouts, judges it too).
      const auto now = std::chrono::steady_clock::now();
      if (!hole_seen_ || hole_seq_ != c) {
        hole_seen_ = true;
        hole_seq_ = c;
        hole_since_ = now;
        return Took::hole;
      }
      if (now - hole_since_ < kHoleCheck) return Took::hole;
      hole_since_ = now;  // judge again after another kHoleCheck if its writer lives
      if (!judge_hole()) return Took::hole;
      // abandoned: the next look counts it and moves on
    }
  }

  /// The slot of the cursor has been WRITING for kHoleCheck: abandon it if its writer died.
  /// True when it is abandoned now.
  bool judge_hole() {
    detail::StreamSegment& s = seg();
    const std::uint64_t c = cursor_;
    SlotHeader* sl = s.slot(c);
    std::uint64_t w = sl->word.load(std::memory_order_acquire);
    if (w != slot_word::make(c, slot_word::kWriting)) return true;  // moved on: look again
    if (stream_impl::writer_alive(s, detail::get(sl->writer_index), detail::get(sl->writer_state)))
      return false;
    if (sl->word.compare_exchange_strong(w, slot_word::make(c, slot_word::kAbandoned),
                                         std::memory_order_acq_rel)) {
      s.header()->abandoned.fetch_add(1, std::memory_order_relaxed);
      stream_impl::notify_readers(s.header());
    }
    return true;
  }

  std::shared_ptr<detail::StreamSegment> s_;
  std::uint32_t index_ = 0;
  std::uint64_t state_ = 0;
  std::uint64_t cursor_ = 0;
  std::uint64_t lost_ = 0;
  std::uint64_t received_ = 0;
  bool hole_seen_ = false;  // the cursor's slot was found WRITING, since hole_since_
  std::uint64_t hole_seq_ = 0;
  std::chrono::steady_clock::time_point hole_since_{};
};

/// A handle to a stream. Copies share the mapping; any thread may send through it.
class Stream {
 public:
  Stream() = default;

  /// Creates a stream: exclusive, `mode` permissions (0600), pages reserved up front.
  static Stream create(std::string_view name, const StreamOptions& opt = {}) {
    return Stream(detail::create_stream(name, opt));
  }
  /// Opens an existing stream, validating every header field against the mapping.
  static Stream open(std::string_view name, const StreamOpenOptions& opt = {}) {
    return Stream(detail::open_stream(name, opt));
  }
  /// Removes a stream's name (as SharedMemoryManager::unlink: an xshm segment of any kind).
  static void unlink(std::string_view name, bool force = false) { detail::unlink_segment(name, force); }

  bool is_open() const noexcept { return s_ != nullptr; }
  const std::string& name() const { return seg().name; }
  std::uint64_t capacity() const { return seg().geo.capacity; }
  std::uint64_t max_bytes() const { return seg().geo.max_bytes; }
  Backpressure backpressure() const { return seg().geo.backpressure; }
  std::uint32_t max_readers() const { return seg().geo.max_readers; }
  std::uint32_t max_writers() const { return seg().geo.max_writers; }
  bool readonly() const { return seg().readonly; }
  const StreamGeometry& geometry() const { return seg().geo; }
  /// The sequence number the next message will get.
  std::uint64_t head() const { return seg().header()->head.load(std::memory_order_acquire); }
  /// Messages overwritten while no reader was attached.
  std::uint64_t dropped() const { return seg().header()->dropped.load(std::memory_order_relaxed); }
  /// Messages lost because their writer died between its claim and its commit.
  std::uint64_t abandoned() const { return seg().header()->abandoned.load(std::memory_order_relaxed); }
  std::uint32_t recoveries() const { return seg().header()->recoveries.load(std::memory_order_relaxed); }
  const StreamHeader* header() const { return seg().header(); }

  /// Sends one message of `size` bytes; returns its sequence number. Under "block", waits up
  /// to `timeout` (nullopt: forever) while the ring is full, then throws StreamFullError.
  /// `between_slices()` runs about every kStreamSlice while it waits (it may throw).
  template <class Hook = NoHook>
  std::uint64_t send(const void* data, std::size_t size, Timeout timeout = std::nullopt,
                     Hook&& between_slices = {}) {
    const std::pair<const void*, std::size_t> one{data, size};
    std::size_t done = 0;
    std::uint64_t last = 0;
    const Sent r = send_some(&one, 1, timeout, std::forward<Hook>(between_slices), done, last);
    if (r != Sent::all) throw_full(seg(), 0, r);
    return last;
  }
  std::uint64_t send(std::string_view bytes, Timeout timeout = std::nullopt) {
    return send(bytes.data(), bytes.size(), timeout);
  }

  /// Sends if there is room now; nullopt when a "block" stream is full, its mutex stays held
  /// (a stopped writer) for kLockPoll, or the next slot's earlier writer is still writing it
  /// (a ring lapped within one send, either policy). Never sleeps.
  std::optional<std::uint64_t> try_send(const void* data, std::size_t size) {
    const std::pair<const void*, std::size_t> one{data, size};
    std::size_t done = 0;
    std::uint64_t last = 0;
    if (send_some(&one, 1, std::chrono::nanoseconds{0}, NoHook{}, done, last) != Sent::all)
      return std::nullopt;
    return last;
  }
  std::optional<std::uint64_t> try_send(std::string_view bytes) {
    return try_send(bytes.data(), bytes.size());
  }

  /// Sends every message in order, claiming as many slots at once as there is room for;
  /// returns the sequence number of the last. On timeout, StreamFullError says how many went
  /// (they are in the stream).
  template <class Hook = NoHook>
  std::uint64_t send_many(const std::vector<std::pair<const void*, std::size_t>>& items,
                          Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    if (items.empty()) throw ArgumentError("send_many: no messages");
    std::size_t done = 0;
    std::uint64_t last = 0;
    const Sent r =
        send_some(items.data(), items.size(), timeout, std::forward<Hook>(between_slices), done, last);
    if (r != Sent::all) throw_full(seg(), done, r);
    return last;
  }

  /// Attaches a new reader. Needs a handle whose file is open for writing (its cursor line).
  StreamReader reader(Start start = Start::oldest) {
    detail::StreamSegment& s = seg();
    if (!s.writable_fd)
      throw ReadOnlyError("stream " + s.name +
                          ": a reader writes its cursor into the segment, and this process may only read it");
    if (!s.mutex_ok)
      throw LayoutError("stream " + s.name +
                        " was created by a process with another C library or architecture: attaching a "
                        "reader takes its mutex, which this process cannot use");
    std::optional<stream_impl::StreamLock> lock =
        stream_impl::StreamLock::acquire(s, std::chrono::seconds(10));
    if (!lock) throw WaitTimeoutError("stream " + s.name + ": its mutex stayed held for 10 s");
    StreamHeader* h = s.header();
    for (int pass = 0; pass < 2; ++pass) {
      for (std::uint32_t i = 0; i < s.geo.max_readers; ++i) {
        ReaderEntry* r = s.reader(i);
        const std::uint64_t st = r->state.load(std::memory_order_acquire);
        if (st != 0) continue;
        if (!liveness::hold(s.fd.fd, s.reader_lock_offset(i))) continue;
        const std::uint64_t head = h->head.load(std::memory_order_relaxed);
        std::uint64_t cursor = head;
        if (start == Start::oldest) cursor = head >= s.geo.capacity ? head - s.geo.capacity : 0;
        r->generation += 1;  // under the mutex; tells this attachment from the entry's earlier ones
        const std::uint64_t mine = entry_state(r->generation);
        r->cursor.store(cursor, std::memory_order_relaxed);
        r->lost.store(0, std::memory_order_relaxed);
        r->received.store(0, std::memory_order_relaxed);
        r->pid.store(static_cast<std::uint32_t>(detail::current_pid()), std::memory_order_relaxed);
        r->attached_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
        {
          std::lock_guard<std::mutex> g(s.local);
          s.own_readers.insert(i);
        }
        // SYNC POINT: release, with the fields above; writers scan under the mutex we hold.
        r->state.store(mine, std::memory_order_release);
        h->readers_gen.fetch_add(1, std::memory_order_acq_rel);
        return StreamReader(s_, i, mine, cursor);
      }
      if (pass == 0 && !stream_impl::reap_readers(s)) break;
    }
    throw Error("stream " + s.name + " has all " + std::to_string(s.geo.max_readers) +
                " reader entries in use by live readers (max_readers); close a reader or create the "
                "stream with more");
  }

  /// The mapped segment, for bindings and tests that drive the protocol steps themselves.
  const std::shared_ptr<detail::StreamSegment>& segment() const {
    seg();
    return s_;
  }

  /// Unmaps; readers made from this handle keep the mapping until they close.
  void close() noexcept { s_.reset(); }
  /// Removes this stream's name, if the name still refers to this stream.
  void unlink() {
    const detail::StreamSegment& s = seg();
    Fd fd = detail::shm_open_checked(s.name, O_RDONLY, 0);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) detail::throw_errno(errno, "fstat");
    if (st.st_dev != s.dev || st.st_ino != s.ino)
      detail::throw_errno(ENOENT, "shm_unlink(" + s.name + "): the name now belongs to another segment");
    if (::shm_unlink(s.name.c_str()) != 0) detail::throw_errno(errno, "shm_unlink(" + s.name + ")");
  }

  /// What send_some() did: everything, or it stopped early because the ring stayed full or
  /// the mutex stayed held (by a stopped writer) past the timeout.
  enum class Sent { all, full, mutex_held, busy };

  /// The form of send_many() that reports instead of throwing: sends items[0, n) in order;
  /// `done` counts those sent, `last` is the sequence of the last of them.
  template <class Hook>
  Sent send_some(const std::pair<const void*, std::size_t>* items, std::size_t n, Timeout timeout,
                 Hook&& between_slices, std::size_t& done, std::uint64_t& last) {
    detail::StreamSegment& s = seg();
    if (s.readonly) throw ReadOnlyError("stream " + s.name + " was opened read-only");
    for (std::size_t i = 0; i < n; ++i)
      if (s.geo.dtype != 0 && items[i].second != s.geo.max_bytes)
        throw ArgumentError("a frame of stream " + s.name + " is " + std::to_string(s.geo.max_bytes) +
                            " bytes, not " + std::to_string(items[i].second));
    for (std::size_t i = 0; i < n; ++i)
      if (items[i].second > s.geo.max_bytes)
        throw MessageTooLongError("message is " + std::to_string(items[i].second) + " bytes; stream " +
                                  s.name + " takes at most " + std::to_string(s.geo.max_bytes) +
                                  " (max_bytes)");
    StreamHeader* h = s.header();
    stream_impl::LazyDeadline deadline(timeout);  // no clock read unless it has to wait
    std::optional<stream_impl::Sleeping> sleeping;
    std::optional<timespec> next_hook;
    bool polled = false;
    std::size_t lost_commits = 0;  // slots readers abandoned before this writer committed them
    done = 0;
    while (done < n) {
      // SYNC POINT (once sleeping): seq_cst, pairs with the reader's notify_writers fence.
      const std::uint32_t epoch = h->space_epoch.load(std::memory_order_seq_cst);
      std::uint64_t first = 0;
      std::uint64_t want = std::min<std::uint64_t>(n - done, s.geo.capacity);
      stream_impl::Claim got = stream_impl::Claim::full;
      bool filled = false;
      {
        const std::chrono::nanoseconds left = deadline.left();
        std::optional<stream_impl::StreamLock> lock = stream_impl::StreamLock::acquire(
            s, left == std::chrono::nanoseconds::max() ? Timeout{} : Timeout{left}, between_slices);
        if (!lock) return Sent::mutex_held;
        got = stream_impl::claim_locked(s, want, first);
        if (got == stream_impl::Claim::full && want > 1) {
          // Take what room there is now rather than wait for the whole batch.
          const std::uint64_t head = h->head.load(std::memory_order_relaxed);
          const std::uint64_t room = s.gate + s.geo.capacity > head ? s.gate + s.geo.capacity - head : 0;
          if (room > 0) {
            want = std::min(want, room);
            got = stream_impl::claim_locked(s, want, first);
          }
        }
        if (got == stream_impl::Claim::made) {
          std::size_t bytes = 0;
          for (std::uint64_t j = 0; j < want; ++j) bytes += items[done + j].second;
          if (bytes <= kFillUnderLock) {
            for (std::uint64_t j = 0; j < want; ++j)
              lost_commits +=
                  !stream_impl::fill_and_commit(s, first + j, items[done + j].first, items[done + j].second);
            filled = true;
          }
        }
        if (got == stream_impl::Claim::full && deadline.left().count() > 0) {
          if (polled && !sleeping) {
            sleeping.emplace(h->space_waiters);
            // SYNC POINT: pairs with the reader's fence in notify_writers: either it sees this
            // waiter, or the next claim's scan sees its cursor.
#if !XSHM_TSAN
            std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
            continue;
          }
          if (sleeping && stream_impl::reap_readers(s)) continue;
        }
      }
      if (got == stream_impl::Claim::made) {
        if (!filled)
          for (std::uint64_t j = 0; j < want; ++j)
            lost_commits +=
                !stream_impl::fill_and_commit(s, first + j, items[done + j].first, items[done + j].second);
        stream_impl::notify_readers(h);
        done += want;
        last = first + want - 1;
        continue;
      }
      const std::chrono::nanoseconds left = deadline.left();
      if (left.count() == 0) return got == stream_impl::Claim::busy ? Sent::busy : Sent::full;
      if (got == stream_impl::Claim::full && !polled) {
        // A reader that is taking messages frees a slot within microseconds: poll for it
        // before paying a sleep and the reader's wake.
        polled = true;
        const auto poll_end =
            std::chrono::steady_clock::now() + std::min<std::chrono::nanoseconds>(kFullPoll, left);
        for (unsigned i = 0; !stream_impl::has_room(s, want); ++i) {
          cpu::relax();
          if ((i & 15) == 15 && std::chrono::steady_clock::now() >= poll_end) break;
        }
        continue;
      }
      const timespec now = futex::monotonic_now();
      if (!next_hook) next_hook = futex::add_ns(now, std::chrono::nanoseconds(kStreamSlice).count());
      if constexpr (kHasHook<Hook>) {
        if (!futex::before(now, *next_hook)) {
          between_slices();
          next_hook = futex::add_ns(futex::monotonic_now(), std::chrono::nanoseconds(kStreamSlice).count());
        }
      }
      // Busy (a slot's previous writer still copying): a short pause. Full: sleep until a
      // reader moves, and look at the gating readers' liveness every kGateCheck.
      const std::int64_t nap =
          got == stream_impl::Claim::busy ? 50'000 : std::chrono::nanoseconds(kGateCheck).count();
      timespec until = futex::add_ns(now, std::min<std::int64_t>(nap, left.count()));
      if constexpr (kHasHook<Hook>) {
        if (futex::before(*next_hook, until)) until = *next_hook;
      }
      futex::wait(&h->space_epoch, epoch, &until);
    }
    if (lost_commits != 0)
      throw Error("stream " + s.name + ": " + std::to_string(lost_commits) +
                  " of the messages sent were abandoned by readers that judged this writer dead (was its "
                  "handle closed while it sent?)");
    return Sent::all;
  }

  /// The StreamFullError for a send that stopped early after `done` messages.
  [[noreturn]] static void throw_full(detail::StreamSegment& s, std::size_t done, Sent why) {
    const std::string sent = done == 0 ? "" : " (" + std::to_string(done) + " of the batch were sent)";
    if (why == Sent::mutex_held)
      throw StreamFullError("stream " + s.name + ": its mutex stayed held past the timeout" + sent);
    if (why == Sent::busy)
      throw StreamFullError("stream " + s.name +
                            ": the next slot's earlier writer was still writing it past the timeout (a ring "
                            "lapped within one send)" +
                            sent);
    const stream_impl::GateInfo g = stream_impl::slowest_reader(s);
    throw StreamFullError("stream " + s.name + " is full: the slowest reader (pid " + std::to_string(g.pid) +
                          ", at message " + std::to_string(g.cursor) + ") is " +
                          std::to_string(s.geo.capacity) + " messages behind" + sent);
  }

 private:
  explicit Stream(std::shared_ptr<detail::StreamSegment> s) : s_(std::move(s)) {}

  detail::StreamSegment& seg() const {
    if (s_ == nullptr) throw ClosedError("the stream handle is closed");
    s_->check_usable();
    return *s_;
  }

  std::shared_ptr<detail::StreamSegment> s_;
};

}  // namespace xshm
