// xshm::SharedMemoryManager: the public C++ API over one segment, a facade that delegates
// every step to the header that owns it: the lifecycle to segment.hpp, publishing and the
// writer mutex to writer.hpp, consistent reads to reader.hpp, waiting to wait.hpp. A handle
// shares its mapped segment with its copies, transactions and lock guards; the mapping goes
// when the last of them does. Every bounded call takes a relative Timeout (clock.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "errors.hpp"
#include "layout.hpp"
#include "reader.hpp"
#include "segment.hpp"
#include "transaction.hpp"
#include "typed.hpp"
#include "wait.hpp"
#include "writer.hpp"

namespace xshm {

class SharedMemoryManager {
 public:
  SharedMemoryManager() = default;

  /// Creates a segment: exclusive, `mode` permissions (0600 by default), pages reserved up
  /// front, header published last behind the ready marker.
  static SharedMemoryManager create(std::string_view name, const CreateOptions& opt = {}) {
    return SharedMemoryManager(detail::create_segment(name, opt));
  }

  /// Opens an existing segment, validating every field of its header against the mapping.
  static SharedMemoryManager open(std::string_view name, const OpenOptions& opt = {}) {
    return SharedMemoryManager(detail::open_segment(name, opt));
  }

  /// Removes a segment name. Unless `force`, refuses a segment that is not an xshm segment.
  static void unlink(std::string_view name, bool force = false) { detail::unlink_segment(name, force); }

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
    // SYNC POINT: pairs with the release store of seq in writer::publish_locked().
    return seg().header()->seq.load(std::memory_order_acquire);
  }
  /// The pid of the process holding the writer mutex (0: none, or it has not said yet).
  std::uint32_t owner_pid() const { return seg().header()->owner_pid.load(std::memory_order_relaxed); }
  /// Times a writer that died recovered this segment's record since it was created.
  std::uint32_t recoveries() const { return seg().header()->recoveries.load(std::memory_order_relaxed); }
  /// The live values array, in place: shows a write in progress (no seqlock).
  const void* live_values() const { return seg().values(0); }
  /// The whole mapping, read-only, for tools that inspect the raw bytes.
  const void* base() const { return seg().map.data(); }
  std::size_t mapped_size() const { return seg().map.size(); }
  /// The mapped segment, for code that drives the steps of writer.hpp, reader.hpp and
  /// wait.hpp itself (the tests, the ladder benchmark). Throws ClosedError when closed.
  const detail::Segment& segment() const { return seg(); }
  /// The shared state that keeps the mapping alive (bindings tie views to it).
  std::shared_ptr<const void> keepalive() const { return seg_; }

  /// Unmaps this handle. Views and transactions that still hold the segment keep it mapped.
  void close() noexcept { seg_.reset(); }

  /// Removes this segment's name, if the name still refers to this segment.
  void unlink() const { detail::unlink_segment(seg()); }

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
    RecordInfo info =
        reader::read_raw(s, values_out, message_out != nullptr ? message_out->data() : nullptr, &len);
    if (message_out != nullptr) message_out->resize(len);
    return info;
  }

  /// Typed: a consistent record's values into `out` (resized to the element count; T the
  /// segment's element type, else DtypeError: typed.hpp).
  template <class T>
  RecordInfo read_into(std::vector<T>& out, std::string* message_out = nullptr) const {
    static_assert(!std::is_same_v<T, bool>,
                  "std::vector<bool> packs bits: read() a Snapshot and values<bool>().");
    const detail::Segment& s = seg();
    check_dtype<T>(s.geo.dtype, "read_into(std::vector<{}>&)");
    out.resize(s.geo.values_size / sizeof(T));
    return read_into(out.data(), out.size() * sizeof(T), message_out);
  }

  /// A consistent copy of the whole record.
  Snapshot read() const {
    Snapshot snap;
    snap.dtype = seg().geo.dtype;
    snap.data.resize(seg().geo.values_size);
    static_cast<RecordInfo&>(snap) = read_into(snap.data.data(), snap.data.size(), &snap.message);
    return snap;
  }

  /// The reader's core, for bindings that bring their own buffers: `message_buf` has room for
  /// message_capacity bytes; `message_len` receives the length.
  RecordInfo read_raw(void* values_out, char* message_buf, std::uint32_t* message_len) const {
    return reader::read_raw(seg(), values_out, message_buf, message_len);
  }

  // ---- writing ----

  /// Writes and publishes in one call; a null field keeps its current value. Returns the new
  /// sequence. `values` must be values_size bytes. Waits for the writer mutex at most
  /// `timeout` (nullopt: forever), then throws WaitTimeoutError, having published nothing.
  /// `between_slices()` runs every slice of that wait (robust_mutex::lock) and may throw.
  template <class Hook = NoHook>
  std::uint64_t publish(const void* values, std::size_t values_bytes,
                        std::optional<std::string_view> message = std::nullopt,
                        std::optional<std::uint64_t> counter = std::nullopt, bool truncate = false,
                        Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    const detail::Segment& s = seg();
    const auto seq = writer::publish(s, values, values_bytes, message, counter, truncate, timeout,
                                     std::forward<Hook>(between_slices));
    if (!seq) writer::throw_lock_timeout(s, timeout);
    return *seq;
  }

  /// Publishes counter and message only (values unchanged).
  std::uint64_t publish(std::optional<std::string_view> message, std::optional<std::uint64_t> counter) {
    return publish(nullptr, 0, message, counter);
  }

  /// Typed convenience: publishes a vector of the segment's element type (typed.hpp: double
  /// for float64, ...; std::byte for raw bytes); another T throws DtypeError, a wrong length
  /// ArgumentError.
  template <class T>
  std::uint64_t publish(const std::vector<T>& values, std::optional<std::string_view> message = std::nullopt,
                        std::optional<std::uint64_t> counter = std::nullopt) {
    check_dtype<T>(seg().geo.dtype, "publish(std::vector<{}>)");
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> packs bits: one byte each
      std::vector<unsigned char> bytes(values.begin(), values.end());
      return publish(bytes.data(), bytes.size(), message, counter);
    } else {
      return publish(values.data(), values.size() * sizeof(T), message, counter);
    }
  }

  /// publish() only if the writer mutex is free now: nullopt (nothing published) when it is
  /// taken.
  std::optional<std::uint64_t> try_publish(const void* values, std::size_t values_bytes,
                                           std::optional<std::string_view> message = std::nullopt,
                                           std::optional<std::uint64_t> counter = std::nullopt,
                                           bool truncate = false) {
    return writer::publish(seg(), values, values_bytes, message, counter, truncate,
                           std::chrono::nanoseconds{0});
  }

  /// Starts a write transaction: takes the writer mutex (waiting at most `timeout`, then
  /// WaitTimeoutError) and opens the record for writing as `mode` says (WriteMode: in place
  /// with a backup, staged without, unless asked).
  template <class Hook = NoHook>
  WriteTransaction begin_write(WriteMode mode, Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    std::optional<WriteTransaction> tx =
        WriteTransaction::begin(seg_ptr(), mode, timeout, std::forward<Hook>(between_slices));
    if (!tx) writer::throw_lock_timeout(seg(), timeout);
    return std::move(*tx);
  }
  template <class Hook = NoHook>
  WriteTransaction begin_write(Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    return begin_write(WriteMode::automatic, timeout, std::forward<Hook>(between_slices));
  }

  /// begin_write() only if the writer mutex is free now: nullopt when it is taken.
  std::optional<WriteTransaction> try_begin_write(WriteMode mode = WriteMode::automatic) {
    return WriteTransaction::begin(seg_ptr(), mode, std::chrono::nanoseconds{0});
  }

  /// Runs fn(tx) inside a write transaction and publishes when it returns; when it throws,
  /// nothing is published (the record is restored; WriteMode) and the exception goes on.
  template <class Fn>
  std::uint64_t write(WriteMode mode, Fn&& fn) {
    WriteTransaction tx = begin_write(mode);
    std::invoke(std::forward<Fn>(fn), tx);
    return tx.commit();
  }
  template <class Fn>
  std::uint64_t write(Fn&& fn) {
    return write(WriteMode::automatic, std::forward<Fn>(fn));
  }

  /// Holds the writer mutex for the caller's own critical section; waits at most `timeout`,
  /// then WaitTimeoutError.
  template <class Hook = NoHook>
  LockGuard lock(Timeout timeout = std::nullopt, Hook&& between_slices = {}) {
    std::optional<LockGuard> g = LockGuard::acquire(seg_ptr(), timeout, std::forward<Hook>(between_slices));
    if (!g) writer::throw_lock_timeout(seg(), timeout);
    return std::move(*g);
  }

  /// The writer mutex if it is free now; nullopt when another holder has it.
  std::optional<LockGuard> try_lock() { return LockGuard::acquire(seg_ptr(), std::chrono::nanoseconds{0}); }

  // ---- waiting ----

  /// Blocks until seq() > last or `timeout` passes (nullopt: never). Returns the new
  /// sequence, or nullopt on timeout. `spin`: how long to poll with the CPU's pause
  /// instruction before sleeping on the futex. `between_slices()`: see wait::wait_for.
  template <class Hook = NoHook>
  std::optional<std::uint64_t> wait_for(std::uint64_t last, Timeout timeout,
                                        std::chrono::nanoseconds spin = std::chrono::nanoseconds{0},
                                        Hook&& between_slices = {}) const {
    return wait::wait_for(seg(), last, timeout, spin, std::forward<Hook>(between_slices));
  }

  /// wait_for() up to its sleep, for an event loop that sleeps elsewhere (sleep_ticket.hpp): an
  /// armed ticket while seq() <= last, else an unarmed one (read seq()).
  SleepTicket prepare_wait(std::uint64_t last) const { return wait::prepare(seg_ptr(), last); }

  /// Blocks until seq() > last; throws WaitTimeoutError when `timeout` passes.
  template <class Hook = NoHook>
  std::uint64_t wait(std::uint64_t last, Timeout timeout = std::nullopt,
                     std::chrono::nanoseconds spin = std::chrono::nanoseconds{0},
                     Hook&& between_slices = {}) const {
    const auto r = wait_for(last, timeout, spin, std::forward<Hook>(between_slices));
    if (!r)
      throw WaitTimeoutError("no publish after sequence " + std::to_string(last) + " within " +
                             format_duration(timeout.value_or(std::chrono::nanoseconds{0})));
    return *r;
  }

 private:
  explicit SharedMemoryManager(std::shared_ptr<detail::Segment> s) noexcept : seg_(std::move(s)) {}

  detail::Segment& seg() const {
    if (!seg_) throw ClosedError("the segment handle is closed");
    return *seg_;
  }
  const std::shared_ptr<detail::Segment>& seg_ptr() const {
    (void)seg();
    return seg_;
  }

  std::shared_ptr<detail::Segment> seg_;
};

/// Removes a segment name; see SharedMemoryManager::unlink.
inline void unlink(std::string_view name, bool force = false) { SharedMemoryManager::unlink(name, force); }

}  // namespace xshm
