// xshm::SharedMemoryManager: the public C++ API over one segment. Creating, opening and
// validating (segment.hpp, layout.hpp); publishing under the robust writer mutex
// (robust_mutex.hpp) into the live record slot and then refreshing the backup slot
// (seqlock.hpp); lock-free consistent reads that fall back to the backup while the live slot
// is being written; change notification on the futex epoch (futex.hpp).
//
// The protocol, in order, for one publish (writer holds the mutex throughout):
//   1. live slot lock odd; write meta, values, message; live slot lock even
//   2. header seq = n (release); epoch += 1; futex wake if anyone sleeps
//   3. backup slot lock odd; copy live into backup; backup slot lock even
// At every instant one slot holds a complete record of the newest returned publish (or of the
// one being made), so a reader never waits for a writer, alive or dead. A writer that dies
// leaves at most one slot odd; the next locker sees EOWNERDEAD and copies the complete slot
// over the odd one before it goes on. docs/LAYOUT.md tells the same story byte by byte.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "futex.hpp"
#include "layout.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"
#include "seqlock.hpp"
#include "utf8.hpp"

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
  /// How long to wait for a segment that does not exist yet.
  std::chrono::nanoseconds timeout{0};
  /// Only for segments without backup: how long a read tolerates the live record staying
  /// mid-write (same odd lock word) while its writer seems alive, before it raises
  /// TornRecordError. Zero: 2 s plus 4 ns per byte of values (a 256 MiB/s writer).
  std::chrono::nanoseconds stall_timeout{0};
};

/// The metadata of one consistent record.
struct RecordInfo {
  std::uint64_t seq = 0;
  std::uint64_t counter = 0;
  std::int64_t timestamp_ns = 0;
  std::uint32_t writer_pid = 0;
};

/// A consistent copy of the record.
struct Snapshot : RecordInfo {
  std::vector<unsigned char> data;  // the values, raw little-endian bytes
  std::string message;              // the bytes of the message slot (UTF-8 when the writer was)

  template <class T>
  std::vector<T> values() const {
    static_assert(std::is_trivially_copyable_v<T>, "values<T>() copies bytes into T.");
    if (data.size() % sizeof(T) != 0)
      throw ArgumentError("values<T>(): sizeof(T) does not divide the values array");
    std::vector<T> out(data.size() / sizeof(T));
    if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
    return out;
  }
};

namespace detail {

inline std::atomic<int> g_cached_pid{0};

/// getpid() costs a syscall on current glibc; publish needs it every time. Cached per
/// process and cleared in the child after fork.
inline int current_pid() noexcept {
  int pid = g_cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    static const int registered =
        pthread_atfork(nullptr, nullptr, [] { g_cached_pid.store(0, std::memory_order_relaxed); });
    (void)registered;
    pid = static_cast<int>(::getpid());
    g_cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

inline std::int64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline bool process_alive(std::uint32_t pid) noexcept {
  if (pid == 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

/// A mapped, validated segment. Shared by the manager, write transactions and (in bindings)
/// every view of the values, so the mapping outlives whichever of them goes last.
struct Segment {
  std::string name;
  Geometry geo;
  bool readonly = false;
  std::chrono::nanoseconds stall_timeout{0};
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

/// The meta words after the lock word, as one image: written and read with atomic words.
struct MetaImage {
  std::uint64_t seq;
  std::uint64_t counter;
  std::int64_t timestamp_ns;
  std::uint32_t writer_pid;
  std::uint32_t message_len;
};
static_assert(sizeof(MetaImage) == 32 && offsetof(RecordMeta, seq) == 8,
              "MetaImage mirrors RecordMeta from the word after the lock.");

inline MetaImage load_meta(const RecordMeta* m) noexcept {
  MetaImage img;
  seqlock::load_bytes(&img, &m->seq, sizeof img);
  return img;
}

inline void store_meta(RecordMeta* m, const MetaImage& img) noexcept {
  seqlock::store_bytes(&m->seq, &img, sizeof img);
}

}  // namespace detail

class SharedMemoryManager;

/// A publish in the making, holding the writer mutex: the values, counter and message are
/// private copies of the current record until commit() publishes them all at once. Dropping
/// it without commit() publishes nothing and releases the mutex.
class WriteTransaction {
 public:
  WriteTransaction(WriteTransaction&& o) noexcept
      : counter(o.counter),
        seg_(std::move(o.seg_)),
        values_(std::move(o.values_)),
        message_(std::move(o.message_)),
        active_(std::exchange(o.active_, false)) {}
  WriteTransaction& operator=(WriteTransaction&&) = delete;
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  ~WriteTransaction() { abort(); }

  /// The private values buffer (geometry().values_size bytes). It belongs to the
  /// transaction: writing to it after commit() or abort() changes nothing shared.
  void* values() noexcept { return values_.data(); }
  std::size_t values_bytes() const noexcept { return values_.size(); }
  template <class T>
  T* values_as() noexcept { return reinterpret_cast<T*>(values_.data()); }
  const std::string& message() const noexcept { return message_; }
  /// Sets the message; longer than the slot throws MessageTooLongError unless `truncate`,
  /// which cuts on a code-point boundary.
  void set_message(std::string_view text, bool truncate = false);

  /// Publishes the staged record and releases the mutex. Returns the new sequence.
  std::uint64_t commit();
  /// Releases the mutex without publishing. Idempotent.
  void abort() noexcept {
    if (!active_) return;
    active_ = false;
    seg_->header()->owner_pid.store(0, std::memory_order_seq_cst);
    robust_mutex::unlock(seg_->mutex());
  }
  bool active() const noexcept { return active_; }

  std::uint64_t counter = 0;

 private:
  friend class SharedMemoryManager;
  explicit WriteTransaction(std::shared_ptr<detail::Segment> seg) : seg_(std::move(seg)) {}
  std::shared_ptr<detail::Segment> seg_;
  std::vector<unsigned char> values_;
  std::string message_;
  bool active_ = false;
};

/// Holds the writer mutex for a critical section of the caller's own.
class LockGuard {
 public:
  LockGuard(LockGuard&& o) noexcept : seg_(std::move(o.seg_)) {}
  LockGuard& operator=(LockGuard&&) = delete;
  ~LockGuard() { unlock(); }
  void unlock() noexcept {
    if (!seg_) return;
    seg_->header()->owner_pid.store(0, std::memory_order_seq_cst);
    robust_mutex::unlock(seg_->mutex());
    seg_.reset();
  }

 private:
  friend class SharedMemoryManager;
  explicit LockGuard(std::shared_ptr<detail::Segment> seg) : seg_(std::move(seg)) {}
  std::shared_ptr<detail::Segment> seg_;
};

class SharedMemoryManager {
 public:
  SharedMemoryManager() = default;

  /// Creates a segment: exclusive, `mode` permissions (0600 by default), pages reserved up
  /// front, header published last behind the ready marker.
  static SharedMemoryManager create(std::string_view name, const CreateOptions& opt = {}) {
    const std::string canon = normalize_name(name);
    Geometry geo = compute_geometry(opt.dtype, opt.shape, opt.message_capacity, opt.backup);
    if (opt.mode > 0777) throw ArgumentError("mode must be a permission mask (at most 0o777)");
    int fd = ::shm_open(canon.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, opt.mode & 0777);
    if (fd < 0) {
      if (errno == EEXIST && opt.exist_ok) return attach_existing(canon, geo);
      detail::throw_errno(errno, "shm_open(" + canon + ")");
    }
    Fd owned(fd);
    try {
      return build(canon, std::move(owned), std::move(geo), opt.mode & 0777);
    } catch (...) {
      ::shm_unlink(canon.c_str());
      throw;
    }
  }

  /// Opens an existing segment, validating every field of its header against the mapping.
  static SharedMemoryManager open(std::string_view name, const OpenOptions& opt = {}) {
    const std::string canon = normalize_name(name);
    const auto start = std::chrono::steady_clock::now();
    const int flags = opt.readonly ? O_RDONLY : O_RDWR;
    Fd fd;
    for (int pause_us = 100;; pause_us = std::min(pause_us * 2, 10000)) {
      int raw = ::shm_open(canon.c_str(), flags | O_CLOEXEC, 0);
      if (raw >= 0) {
        fd = Fd(raw);
        break;
      }
      if (errno != ENOENT || std::chrono::steady_clock::now() - start >= opt.timeout)
        detail::throw_errno(errno, "shm_open(" + canon + ")");
      std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
    }
    // An opener racing the creator waits a bounded time for the ready marker.
    const auto ready_deadline = std::chrono::steady_clock::now() + kReadyWait + opt.timeout;
    for (;;) {
      if (!detail::flock_until(fd.get(), LOCK_SH, ready_deadline))
        throw TimeoutError("segment " + canon + " is still being created");
      const std::uint64_t size = detail::file_size(fd.get());
      if (size == 0) {  // created, not yet sized: the creator has not locked it yet
        ::flock(fd.get(), LOCK_UN);
        if (std::chrono::steady_clock::now() >= ready_deadline)
          throw LayoutError("segment " + canon +
                            " was never made ready: its creator died while creating it "
                            "(remove it with unlink)");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      SharedMemoryManager m;
      m.seg_ = map_and_validate(canon, fd.get(), size, opt.readonly);
      m.seg_->stall_timeout = opt.stall_timeout;
      ::flock(fd.get(), LOCK_UN);
      return m;
    }
  }

  /// Removes a segment name. Unless `force`, refuses a segment that is not an xshm segment.
  static void unlink(std::string_view name, bool force = false) {
    const std::string canon = normalize_name(name);
    if (!force) {
      Fd fd = detail::shm_open_checked(canon, O_RDONLY, 0);
      const std::uint64_t size = detail::file_size(fd.get());
      char magic[sizeof kMagic] = {};
      if (size >= kHeaderSize) {
        Mapping m = Mapping::map(fd.get(), kHeaderSize, false);
        std::memcpy(magic, m.data(), sizeof magic);
      }
      if (std::memcmp(magic, kMagic, sizeof magic) != 0)
        throw LayoutError("segment " + canon + " is not an xshm segment; refusing to remove it "
                          "without force");
    }
    if (::shm_unlink(canon.c_str()) != 0) detail::throw_errno(errno, "shm_unlink(" + canon + ")");
  }

  // ---- identity ----
  bool is_open() const noexcept { return seg_ != nullptr; }
  const std::string& name() const { return seg().name; }
  const Geometry& geometry() const { return seg().geo; }
  Dtype dtype() const { return seg().geo.dtype; }
  const std::vector<std::uint64_t>& shape() const { return seg().geo.shape; }
  std::uint32_t message_capacity() const { return seg().geo.message_capacity; }
  bool readonly() const { return seg().readonly; }
  bool backup() const { return seg().geo.backup; }
  /// Completed publishes; only grows; never shows a publish in progress.
  std::uint64_t seq() const {
    // SYNC POINT: pairs with the release store in publish_locked().
    return seg().header()->seq.load(std::memory_order_acquire);
  }
  /// The pid of the process holding the writer mutex (0: none, or it has not said yet).
  std::uint32_t owner_pid() const { return seg().header()->owner_pid.load(std::memory_order_relaxed); }
  /// The live values array, in place: shows a write in progress (no seqlock).
  const void* live_values() const { return seg().values(0); }
  /// The whole mapping, read-only, for tools that inspect the raw bytes.
  const void* base() const { return seg().map.data(); }
  std::size_t mapped_size() const { return seg().map.size(); }
  /// The shared state that keeps the mapping alive (bindings tie views to it).
  std::shared_ptr<const void> keepalive() const { return seg_; }

  /// Unmaps this handle. Views and transactions that still hold the segment keep it mapped.
  void close() noexcept { seg_.reset(); }

  /// Removes this segment's name, if the name still refers to this segment.
  void unlink() const {
    const detail::Segment& s = seg();
    Fd fd = detail::shm_open_checked(s.name, O_RDONLY, 0);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) detail::throw_errno(errno, "fstat");
    if (st.st_dev != s.dev || st.st_ino != s.ino)
      detail::throw_errno(ENOENT, "shm_unlink(" + s.name +
                                      "): this segment was already removed and the name now "
                                      "belongs to another one");
    if (::shm_unlink(s.name.c_str()) != 0) detail::throw_errno(errno, "shm_unlink(" + s.name + ")");
  }

  // ---- reading ----

  /// Copies a consistent record: `values_out` gets values_size bytes (nullptr: skip),
  /// `message_out` the message bytes (nullptr: skip). Never waits for a writer.
  RecordInfo read_into(void* values_out, std::size_t values_bytes, std::string* message_out = nullptr) const {
    const detail::Segment& s = seg();
    if (values_out != nullptr && values_bytes != s.geo.values_size)
      throw ArgumentError("read_into: buffer has " + std::to_string(values_bytes) +
                          " bytes, the values array has " + std::to_string(s.geo.values_size));
    if (message_out != nullptr) message_out->resize(s.geo.message_capacity);
    std::uint32_t len = 0;
    RecordInfo info = read_raw(s, values_out, message_out != nullptr ? message_out->data() : nullptr, &len);
    if (message_out != nullptr) message_out->resize(len);
    return info;
  }

  /// A consistent copy of the whole record.
  Snapshot read() const {
    Snapshot snap;
    snap.data.resize(seg().geo.values_size);
    static_cast<RecordInfo&>(snap) = read_into(snap.data.data(), snap.data.size(), &snap.message);
    return snap;
  }

  /// The reader's core, for bindings that bring their own buffers: `message_buf` has room for
  /// message_capacity bytes; `message_len` receives the length.
  RecordInfo read_raw(void* values_out, char* message_buf, std::uint32_t* message_len) const {
    return read_raw(seg(), values_out, message_buf, message_len);
  }

  // ---- writing ----

  /// Writes and publishes in one call; a null field keeps its current value. Returns the new
  /// sequence. `values` must be values_size bytes. The writer mutex is waited for until the
  /// absolute CLOCK_REALTIME `lock_deadline` (nullptr: forever; one already past: only if it
  /// is free), then TimeoutError, having published nothing.
  std::uint64_t publish(const void* values, std::size_t values_bytes,
                        std::optional<std::string_view> message = std::nullopt,
                        std::optional<std::uint64_t> counter = std::nullopt, bool truncate = false,
                        const timespec* lock_deadline = nullptr) {
    const detail::Segment& s = seg();
    require_writable(s);
    if (values != nullptr && values_bytes != s.geo.values_size)
      throw ArgumentError("publish: values have " + std::to_string(values_bytes) +
                          " bytes, the segment's array has " + std::to_string(s.geo.values_size));
    std::string_view msg;
    if (message) msg = fit_message(s, *message, truncate);
    prefetch_live(s, values != nullptr, message ? msg.size() : 0);  // overlaps the mutex and the clock
    Locked locked(*this, lock_deadline);
    if (locked.torn && (values == nullptr || !message || !counter))
      throw TornRecordError("the record was torn by a writer that died mid-write and has no "
                            "backup: the next publish must give values, message and counter");
    return publish_locked(s, values, message ? &msg : nullptr, counter);
  }

  /// Publishes counter and message only (values unchanged).
  std::uint64_t publish(std::optional<std::string_view> message, std::optional<std::uint64_t> counter) {
    return publish(nullptr, 0, message, counter);
  }

  /// Typed convenience: publishes a vector of the segment's element type.
  template <class T>
  std::uint64_t publish(const std::vector<T>& values, std::optional<std::string_view> message = std::nullopt,
                        std::optional<std::uint64_t> counter = std::nullopt) {
    return publish(values.data(), values.size() * sizeof(T), message, counter);
  }

  /// Starts a write transaction: takes the writer mutex (waiting until the CLOCK_REALTIME
  /// deadline when one is given) and stages a private copy of the current record.
  WriteTransaction begin_write(const timespec* realtime_deadline = nullptr) {
    std::shared_ptr<detail::Segment> sp = seg_;
    detail::Segment& s = seg();
    require_writable(s);
    Locked locked(*this, realtime_deadline);
    if (locked.torn)
      throw TornRecordError("the record was torn by a writer that died mid-write and has no "
                            "backup: publish every field with publish() first");
    WriteTransaction tx(sp);
    tx.values_.resize(s.geo.values_size);
    tx.message_.resize(s.geo.message_capacity);
    const detail::MetaImage img = detail::load_meta(s.meta(0));
    seqlock::load_bytes(tx.values_.data(), s.values(0), s.geo.values_size);
    const std::uint32_t len = std::min(img.message_len, s.geo.message_capacity);
    seqlock::load_bytes(tx.message_.data(), s.message(0), len);
    tx.message_.resize(len);
    tx.counter = img.counter;
    tx.active_ = true;
    locked.release();  // the transaction owns the mutex now
    return tx;
  }

  /// Runs fn(tx) inside a write transaction and publishes when it returns; when it throws,
  /// nothing is published and the exception goes on.
  template <class Fn>
  std::uint64_t write(Fn&& fn) {
    WriteTransaction tx = begin_write();
    std::invoke(std::forward<Fn>(fn), tx);
    return tx.commit();
  }

  /// Holds the writer mutex for the caller's own critical section.
  LockGuard lock(const timespec* realtime_deadline = nullptr) {
    detail::Segment& s = seg();
    require_writable(s);
    Locked locked(*this, realtime_deadline);
    locked.release();
    return LockGuard(seg_);
  }

  // ---- waiting ----

  /// Blocks until seq() > last or the relative timeout passes (nullopt: never). Returns the
  /// new sequence, or nullopt on timeout. `spin` first polls for that long with the CPU's
  /// pause instruction before sleeping on the futex.
  std::optional<std::uint64_t> wait_for(std::uint64_t last, std::optional<std::chrono::nanoseconds> timeout,
                                        std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) const {
    const detail::Segment& s = seg();
    const Header* h = s.header();
    std::uint64_t cur = h->seq.load(std::memory_order_acquire);
    if (cur > last) return cur;
    const timespec now = futex::monotonic_now();
    timespec deadline{};
    if (timeout) deadline = futex::add_ns(now, timeout->count());
    if (spin.count() > 0) {
      const timespec spin_end = futex::add_ns(now, spin.count());
      for (unsigned i = 0;; ++i) {
        seqlock::cpu_relax();
        cur = h->seq.load(std::memory_order_acquire);
        if (cur > last) return cur;
        if ((i & 63) == 63) {
          const timespec t = futex::monotonic_now();
          if (timeout && !futex::before(t, deadline)) return std::nullopt;
          if (!futex::before(t, spin_end)) break;
        }
      }
    }
    Header* wh = s.waiter_header();
    // Without a writable header page (a read-only handle of a user who may not write), this
    // process cannot announce that it sleeps, so it sleeps in slices of 1 ms.
    constexpr std::int64_t kBlindSliceNs = 1'000'000;
    if (wh != nullptr) wh->waiters.fetch_add(1, std::memory_order_seq_cst);
    std::optional<std::uint64_t> result;
    for (;;) {
      // SYNC POINT: seq_cst, paired with the writer's seq_cst epoch bump and waiters load:
      // either the writer sees our waiter count and wakes us, or we see its new epoch.
      const std::uint32_t epoch = h->epoch.load(std::memory_order_seq_cst);
      cur = h->seq.load(std::memory_order_acquire);
      if (cur > last) {
        result = cur;
        break;
      }
      const timespec t = futex::monotonic_now();
      if (timeout && !futex::before(t, deadline)) break;
      timespec until = timeout ? deadline : futex::add_ns(t, INT64_C(3600) * 1'000'000'000);
      if (wh == nullptr) {
        const timespec slice = futex::add_ns(t, kBlindSliceNs);
        if (futex::before(slice, until)) until = slice;
      }
      futex::wait(&h->epoch, epoch, &until);
    }
    if (wh != nullptr) wh->waiters.fetch_sub(1, std::memory_order_seq_cst);
    return result;
  }

  /// Blocks until seq() > last; throws TimeoutError when `timeout` passes.
  std::uint64_t wait(std::uint64_t last, std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                     std::chrono::nanoseconds spin = std::chrono::nanoseconds{0}) const {
    auto r = wait_for(last, timeout, spin);
    if (!r) throw TimeoutError("no publish after sequence " + std::to_string(last) + " within the timeout");
    return *r;
  }

  /// Times a writer that died recovered this segment's record since it was created.
  std::uint32_t recoveries() const { return seg().header()->recoveries.load(std::memory_order_relaxed); }

 private:
  friend class WriteTransaction;
  static constexpr std::chrono::seconds kReadyWait{2};

  explicit SharedMemoryManager(std::shared_ptr<detail::Segment> s) : seg_(std::move(s)) {}

  detail::Segment& seg() const {
    if (!seg_) throw ClosedError("the segment handle is closed");
    return *seg_;
  }

  static void require_writable(const detail::Segment& s) {
    if (s.readonly) throw ReadOnlyError("segment " + s.name + " was opened read-only");
  }

  static std::string_view fit_message(const detail::Segment& s, std::string_view text, bool truncate) {
    if (text.size() <= s.geo.message_capacity) return text;
    if (!truncate)
      throw MessageTooLongError("message is " + std::to_string(text.size()) +
                                " bytes; the slot holds " + std::to_string(s.geo.message_capacity));
    return text.substr(0, utf8::cut_length(text, s.geo.message_capacity));
  }

  /// The writer mutex, held for a scope, with crash recovery on EOWNERDEAD.
  struct Locked {
    Locked(const SharedMemoryManager& m, const timespec* deadline) : s(m.seg()) {
      switch (robust_mutex::lock(s.mutex(), deadline)) {
        case robust_mutex::LockResult::TimedOut:
          throw TimeoutError("timed out waiting for the writer lock of " + s.name);
        case robust_mutex::LockResult::OwnerDied:
          held = true;
          recover(s);
          robust_mutex::consistent(s.mutex());
          break;
        case robust_mutex::LockResult::Acquired:
          held = true;
          break;
      }
      s.header()->owner_pid.store(static_cast<std::uint32_t>(detail::current_pid()),
                                  std::memory_order_seq_cst);
      torn = (s.meta(0)->lock.load(std::memory_order_relaxed) & 1) != 0;
    }
    ~Locked() {
      if (held) {
        s.header()->owner_pid.store(0, std::memory_order_seq_cst);
        robust_mutex::unlock(s.mutex());
      }
    }
    void release() noexcept { held = false; }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    const detail::Segment& s;
    bool held = false;
    bool torn = false;
  };

  /// Mutex held after EOWNERDEAD: make both slots complete again and the header agree.
  static void recover(const detail::Segment& s) {
    Header* h = s.header();
    RecordMeta* live = s.meta(0);
    const std::size_t body = s.geo.record_size - sizeof(std::uint64_t);
    if (s.geo.backup) {
      RecordMeta* backup = s.meta(1);
      const std::uint64_t l0 = live->lock.load(std::memory_order_relaxed);
      const std::uint64_t l1 = backup->lock.load(std::memory_order_relaxed);
      if (l0 & 1) {  // died writing the live slot: the backup holds the last complete record
        seqlock::begin_write(live->lock);
        seqlock::copy_shared(&live->seq, &backup->seq, body);
        seqlock::end_write(live->lock, l0);
      } else if ((l1 & 1) || detail::load_meta(backup).seq != detail::load_meta(live).seq) {
        // Died refreshing the backup, or between completing the live slot and starting the
        // refresh (backup even but stale): the live slot is complete. A stale backup left in
        // place would send readers of the next publish back to an older record (found by the
        // loom model in rust/protocol-model).
        seqlock::begin_write(backup->lock);
        seqlock::copy_shared(&backup->seq, &live->seq, body);
        seqlock::end_write(backup->lock, l1);
      }
    }
    // A writer that died between completing the live slot and publishing seq: publish it.
    if ((live->lock.load(std::memory_order_relaxed) & 1) == 0) {
      const std::uint64_t live_seq = detail::load_meta(live).seq;
      if (h->seq.load(std::memory_order_relaxed) < live_seq) h->seq.store(live_seq, std::memory_order_release);
    }
    h->recoveries.fetch_add(1, std::memory_order_relaxed);
    notify(s);
  }

  static void notify(const detail::Segment& s) noexcept {
    Header* h = s.header();
    // SYNC POINT: seq_cst pairs with the waiter's seq_cst waiters increment and epoch load.
    h->epoch.fetch_add(1, std::memory_order_seq_cst);
    if (h->waiters.load(std::memory_order_seq_cst) != 0) futex::wake_all(&h->epoch);
  }

  /// Starts the transfers a publish will wait for, before it takes the mutex and the clock:
  /// ownership of the live slot's lines it is about to write (the readers hold them since
  /// their last copy) and a copy of the header's publish line (the spinning readers keep
  /// pulling it away). Measured by the ladder in benchmarks/cpp/pingpong.cpp.
  static void prefetch_live(const detail::Segment& s, bool values, std::size_t message_bytes) noexcept {
    seqlock::prefetch_for_write(s.meta(0), sizeof(RecordMeta));
    if (values) seqlock::prefetch_for_write(s.values(0), s.geo.values_size);
    if (message_bytes != 0) seqlock::prefetch_for_write(s.message(0), message_bytes);
    seqlock::prefetch_for_read(&s.header()->seq);
  }

  /// Steps 1-3 of the protocol; the writer mutex is held. `values`/`message`/`counter` that
  /// are null keep the current ones.
  static std::uint64_t publish_locked(const detail::Segment& s, const void* values,
                                      const std::string_view* message, std::optional<std::uint64_t> counter) {
    Header* h = s.header();
    RecordMeta* live = s.meta(0);
    detail::MetaImage img = detail::load_meta(live);
    // With a backup the live slot is whole under the mutex (recovery saw to it) and its seq is
    // the header's. Taking it from there spares a load of the header's publish line, which the
    // spinning readers keep pulling away from this core (+25 ns a hop: the ladder in
    // benchmarks/cpp/pingpong.cpp). Without a backup a torn slot's seq is not to be trusted.
    const std::uint64_t next = (s.geo.backup ? img.seq : h->seq.load(std::memory_order_relaxed)) + 1;
    img.seq = next;
    if (counter) img.counter = *counter;
    img.timestamp_ns = detail::realtime_ns();
    img.writer_pid = static_cast<std::uint32_t>(detail::current_pid());
    if (message) img.message_len = static_cast<std::uint32_t>(message->size());

    const std::uint64_t odd = seqlock::begin_write(live->lock);
    detail::store_meta(live, img);
    if (values != nullptr) seqlock::store_bytes(s.values(0), values, s.geo.values_size);
    if (message) seqlock::store_bytes(s.message(0), message->data(), message->size());
    seqlock::end_write(live->lock, odd);

    // SYNC POINT: pairs with the acquire loads of seq in seq() and wait_for().
    h->seq.store(next, std::memory_order_release);
    notify(s);

    if (s.geo.backup) {
      RecordMeta* backup = s.meta(1);
      const std::uint64_t odd1 = seqlock::begin_write(backup->lock);
      seqlock::copy_shared(&backup->seq, &live->seq, sizeof(detail::MetaImage));
      if (values != nullptr) seqlock::copy_shared(s.values(1), s.values(0), s.geo.values_size);
      if (message) seqlock::copy_shared(s.message(1), s.message(0), message->size());
      seqlock::end_write(backup->lock, odd1);
    }
    return next;
  }

  static RecordInfo read_raw(const detail::Segment& s, void* values_out, char* message_buf,
                             std::uint32_t* message_len) {
    detail::MetaImage img{};
    const std::uint32_t cap = s.geo.message_capacity;
    Stuck stuck;
    for (unsigned attempt = 0;; ++attempt) {
      for (int i = 0; i < s.slots(); ++i) {
        const RecordMeta* m = s.meta(i);
        const bool ok = seqlock::try_read(m->lock, [&] {
          img = detail::load_meta(m);
          if (values_out != nullptr) seqlock::load_bytes(values_out, s.values(i), s.geo.values_size);
          if (message_buf != nullptr) seqlock::load_bytes(message_buf, s.message(i), std::min(img.message_len, cap));
        });
        if (ok) {
          if (img.message_len > cap)
            throw LayoutError("corrupt record: message length " + std::to_string(img.message_len) +
                              " exceeds the slot's " + std::to_string(cap) + " bytes");
          if (message_len != nullptr) *message_len = img.message_len;
          return RecordInfo{img.seq, img.counter, img.timestamp_ns, img.writer_pid};
        }
      }
      if ((attempt & 1023) == 1023) check_stuck(s, stuck);
      if (attempt < 64) seqlock::cpu_relax();
      else sched_yield();
    }
  }

  /// What the reader saw at its last look at the slot locks, to tell a live writer from a
  /// state that will never change by itself.
  struct Stuck {
    std::uint64_t lock[2] = {0, 0};
    std::chrono::steady_clock::time_point since{};
  };

  /// Called every 1024 failed read attempts. With a backup, both slots odd and unchanged is
  /// impossible for a working writer (it writes one slot at a time): the segment is corrupt.
  /// Without one, the live slot odd and unchanged means its writer died (TornRecordError at
  /// once) or stalls (TornRecordError after stall_timeout).
  static void check_stuck(const detail::Segment& s, Stuck& st) {
    const std::uint64_t l0 = s.meta(0)->lock.load(std::memory_order_relaxed);
    const std::uint64_t l1 = s.geo.backup ? s.meta(1)->lock.load(std::memory_order_relaxed) : 0;
    const bool same = l0 == st.lock[0] && l1 == st.lock[1];
    const auto now = std::chrono::steady_clock::now();
    if (!same || !(l0 & 1)) {
      st = Stuck{{l0, l1}, now};
      return;
    }
    if (s.geo.backup) {
      if (l1 & 1)
        throw LayoutError("corrupt segment " + s.name + ": both record slots are marked as being written");
      return;
    }
    const std::uint32_t owner = s.header()->owner_pid.load(std::memory_order_seq_cst);
    // A writer that finished the slot since l0 was loaded has cleared owner_pid after its
    // end_write: reading that 0 (or the next writer's pid) and the old odd l0 is no verdict.
    // SYNC POINT: the seq_cst load of owner_pid acquires the writer's seq_cst clear, which
    // follows its release of the slot, so this re-load sees the slot's newer value.
    if (s.meta(0)->lock.load(std::memory_order_seq_cst) != l0) {
      st = Stuck{{s.meta(0)->lock.load(std::memory_order_relaxed), l1}, now};
      return;
    }
    if (!detail::process_alive(owner))
      throw TornRecordError("the record of " + s.name +
                            " was torn by a writer that died mid-write; it stays unreadable until the "
                            "next complete publish");
    auto limit = s.stall_timeout;
    if (limit.count() == 0)
      limit = std::chrono::seconds(2) + std::chrono::nanoseconds(4 * static_cast<std::int64_t>(s.geo.values_size));
    if (now - st.since > limit)
      throw TornRecordError("no complete record of " + s.name + " for " +
                            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(limit).count()) +
                            " ms: its writer (pid " + std::to_string(owner) + ") is stalled mid-write");
  }

  static SharedMemoryManager attach_existing(const std::string& canon, const Geometry& want) {
    SharedMemoryManager m = open(canon, OpenOptions{});
    const Geometry& got = m.geometry();
    if (got.dtype != want.dtype || got.shape != want.shape ||
        got.message_capacity != want.message_capacity || got.backup != want.backup)
      throw LayoutError("segment " + canon + " exists with another layout (dtype " +
                        dtype_info(got.dtype).name + ", " + std::to_string(got.shape.size()) +
                        " dimensions, message capacity " + std::to_string(got.message_capacity) + ")");
    return m;
  }

  static SharedMemoryManager build(const std::string& canon, Fd fd, Geometry geo, mode_t mode) {
    if (::flock(fd.get(), LOCK_EX) != 0) detail::throw_errno(errno, "flock");
    if (::fchmod(fd.get(), mode) != 0) detail::throw_errno(errno, "fchmod");  // umask masked it
    if (::ftruncate(fd.get(), static_cast<off_t>(geo.total_size)) != 0) detail::throw_errno(errno, "ftruncate");
    // Reserve the pages now: a full /dev/shm fails here with ENOSPC instead of SIGBUS later.
    if (int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(geo.total_size)); rc != 0)
      detail::throw_errno(rc, "posix_fallocate(" + canon + ", " + std::to_string(geo.total_size) + " bytes)");
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
      detail::throw_errno(errno, "getrandom");
    h->created_ns = detail::realtime_ns();
    h->creator_pid = static_cast<std::uint32_t>(detail::current_pid());
    robust_mutex::init(reinterpret_cast<pthread_mutex_t*>(h->mutex));
    const std::int64_t now = detail::realtime_ns();
    for (int i = 0; i < (geo.backup ? 2 : 1); ++i) {
      auto* meta = reinterpret_cast<RecordMeta*>(static_cast<unsigned char*>(map.data()) + geo.record_offset[i]);
      meta->timestamp_ns = now;
      meta->writer_pid = h->creator_pid;
    }
    // SYNC POINT: pairs with the opener's acquire load of state: everything above is visible
    // to whoever sees READY.
    h->state.store(kStateReady, std::memory_order_release);
    map.reset();
    const std::uint64_t size = detail::file_size(fd.get());
    SharedMemoryManager m(map_and_validate(canon, fd.get(), size, false));
    ::flock(fd.get(), LOCK_UN);
    return m;
  }

  static std::shared_ptr<detail::Segment> map_and_validate(const std::string& canon, int fd, std::uint64_t size,
                                                           bool readonly) {
    auto s = std::make_shared<detail::Segment>();
    s->name = canon;
    s->readonly = readonly;
    if (size < kHeaderSize)
      throw LayoutError("segment " + canon + " is " + std::to_string(size) +
                        " bytes, smaller than the xshm header: not an xshm segment, or truncated");
    s->map = Mapping::map(fd, size, !readonly);
    const auto* h = static_cast<const Header*>(s->map.data());
    if (h->state.load(std::memory_order_acquire) != kStateReady) {
      if (std::memcmp(h->magic, kMagic, sizeof kMagic) != 0 && h->magic[0] != '\0')
        throw LayoutError("bad magic: " + canon + " is not an xshm segment");
      throw LayoutError("segment " + canon +
                        " was never made ready: its creator died while creating it (remove it "
                        "with unlink)");
    }
    s->geo = validate_header(h, size);
    if (!readonly && (h->mutex_size != sizeof(pthread_mutex_t) || h->mutex_abi != mutex_abi_tag()))
      throw LayoutError("segment " + canon +
                        " was created by a process with another C library or architecture; it "
                        "can only be opened read-only here");
    struct stat st {};
    if (::fstat(fd, &st) != 0) detail::throw_errno(errno, "fstat");
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

  std::shared_ptr<detail::Segment> seg_;
};

inline void WriteTransaction::set_message(std::string_view text, bool truncate) {
  message_.assign(SharedMemoryManager::fit_message(*seg_, text, truncate));
}

inline std::uint64_t WriteTransaction::commit() {
  if (!active_) throw ArgumentError("the write transaction is no longer active");
  const std::string_view msg = message_;
  SharedMemoryManager::prefetch_live(*seg_, true, msg.size());  // overlaps the clock
  std::uint64_t seq = SharedMemoryManager::publish_locked(*seg_, values_.data(), &msg, counter);
  abort();  // releases the mutex
  return seq;
}

/// Removes a segment name; see SharedMemoryManager::unlink.
inline void unlink(std::string_view name, bool force = false) { SharedMemoryManager::unlink(name, force); }

}  // namespace xshm
