// The blocks of xshm.SharedMemoryManager: `with m.write() as rec:` (WriteBlock, and the Record
// it yields: the record being written, in place or staged, published on a clean exit, dropped
// when the block raises) and `with m.lock():` (LockBlock). Each holds the core's
// WriteTransaction or LockGuard, which own the writer mutex and keep the segment mapped; the
// record's values view is tied to the values window (in place) or the transaction (staged).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <xshm/writer.hpp>

#include "casting.hpp"
#include "manager.hpp"
#include "text.hpp"

namespace xshm_py {

namespace py = pybind11;

/// What a block and the Record it yields share: the transaction, and the values array the
/// block handed out (None once the block has ended).
struct BlockState {
  std::shared_ptr<xshm::WriteTransaction> tx;
  py::object values;
  std::shared_ptr<xshm::ValuesWindow> window;  // in place: the window `values` looks through
};

/// The record inside `with m.write() as rec:`.
class Record {
 public:
  explicit Record(std::shared_ptr<BlockState> st) : st_(std::move(st)) {}
  py::object values() const {
    if (st_->values.is_none())
      throw xshm::ArgumentError("the write block has ended: its values are published (read() them)");
    return st_->values;
  }
  /// The counter the block publishes (after the block: the one it published, or meant to).
  std::uint64_t counter() const { return st_->tx->counter; }
  void set_counter(std::uint64_t c) { active().counter = c; }
  py::str message() const {
    const std::string& m = active().message();  // may read the live slot: only under the mutex
    return decode_message(m.data(), m.size());
  }
  /// Longer than the slot: MessageTooLongError, unless `truncate` (cut on a code point).
  void set_message(std::string_view m, bool truncate = false) { active().set_message(m, truncate); }

  /// Copies `x` into the values as numpy assignment does (the block's shape, or one that
  /// broadcasts to it), under the casting rule (casting.hpp). An array of the record's dtype
  /// and shape is one copy.
  void set_values(py::handle x, Casting casting) {
    active();
    py::object dst_obj = values();
    auto* dst = py::detail::array_proxy(dst_obj.ptr());
    auto& api = py::detail::npy_api::get();
    if (api.PyArray_Check_(x.ptr())) {
      const auto* a = py::detail::array_proxy(x.ptr());
      bool same = a->descr == dst->descr && (a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
                  a->nd == dst->nd;
      for (int i = 0; same && i < a->nd; ++i) same = a->dimensions[i] == dst->dimensions[i];
      if (same) {  // memmove: `x` may be a view of the record's own values
        if (st_->tx->values_bytes() != 0) std::memmove(dst->data, a->data, st_->tx->values_bytes());
        return;
      }
    }
    py::array src = cast_values(x, py::reinterpret_borrow<py::dtype>(dst->descr), casting);
    bool fits = src.ndim() <= dst->nd;  // numpy's broadcasting, from the last dimension back
    for (py::ssize_t i = 1; fits && i <= src.ndim(); ++i) {
      const py::ssize_t e = src.shape(src.ndim() - i);
      fits = e == 1 || e == dst->dimensions[dst->nd - i];
    }
    if (!fits)
      throw xshm::ArgumentError("values have shape " + std::string(py::str(src.attr("shape"))) +
                                ", the record holds " + std::string(py::str(dst_obj.attr("shape"))) +
                                ": give that shape, or one that broadcasts to it");
    if (api.PyArray_CopyInto_(dst_obj.ptr(), src.ptr()) < 0) throw py::error_already_set();
  }

 private:
  /// The transaction, while the block runs; after it, a change would be silently lost (and a
  /// read of the message would look at the live slot without the mutex): ArgumentError.
  xshm::WriteTransaction& active() const {
    if (!st_->tx->active())
      throw xshm::ArgumentError("the write block has ended: set the record in a new block, or read() it");
    return *st_->tx;
  }

 private:
  std::shared_ptr<BlockState> st_;
};

/// `with m.write() as rec:`; publishes on a clean exit, publishes nothing when the block raises
/// (in place: the record restored from the backup).
///
/// The values array is a view of the live slot (in place, through the manager's values window)
/// or of the transaction's private copy (staged). When the block ends the array becomes
/// read-only. Views derived from it inside the block (slices, reshapes, memoryviews) cannot be
/// revoked: if anything but the block still holds the array or its window (their reference
/// counts tell), the window is detached before the commit (window.hpp), so those views keep
/// the values as the block left them, and a late write through one lands in private memory.
class WriteBlock {
 public:
  WriteBlock(Manager& m, xshm::Timeout timeout, xshm::WriteMode mode)
      : m_(m), timeout_(timeout), mode_(mode) {}
  WriteBlock(const WriteBlock&) = delete;
  WriteBlock& operator=(const WriteBlock&) = delete;
  WriteBlock(WriteBlock&& o) noexcept
      : m_(o.m_), timeout_(o.timeout_), mode_(o.mode_), st_(std::move(o.st_)), seq_(o.seq_) {}
  WriteBlock& operator=(WriteBlock&&) = delete;
  /// A block entered and never exited (its __exit__ not called): aborted.
  ~WriteBlock() {
    if (!st_) return;
    try {
      end_values(*st_);
    } catch (...) {  // a detach that failed: the abort below still restores the record
    }
    st_->tx->abort();
  }

  Record enter() {
    if (st_) throw xshm::ArgumentError("this write block is already active");
    auto tx = m_.begin_write(timeout_, mode_);
    auto st = std::make_shared<BlockState>();
    st->tx = tx;
    if (tx->in_place()) {
      st->window = m_.values_window();
      st->values = make_view(m_.dtype_ref(), m_.dims(), st->window->values(), st->window, true);
    } else {
      st->values = make_view(m_.dtype_ref(), m_.dims(), tx->values(), tx, true);
    }
    st_ = st;
    return Record(st);
  }
  bool exit(const py::object& exc_type, const py::object&, const py::object&) {
    if (!st_) return false;
    std::shared_ptr<BlockState> st = std::move(st_);
    st_.reset();
    try {
      end_values(*st);
    } catch (...) {
      st->tx->abort();
      throw;
    }
    if (exc_type.is_none()) {
      seq_ = st->tx->commit();
    } else {
      st->tx->abort();
    }
    return false;
  }
  std::optional<std::uint64_t> seq() const { return seq_; }

 private:
  /// The block lets go of its array: read-only from now on; detached when it outlives the
  /// block (see the class comment). Runs while the writer mutex is still held.
  void end_values(BlockState& st) {
    PyObject* arr = st.values.ptr();
    auto* a = py::detail::array_proxy(arr);
    a->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    // numpy points every derived view at the first base that is not an array: our capsule.
    const bool escaped = Py_REFCNT(arr) > 1 || (a->base != nullptr && Py_REFCNT(a->base) > 1);
    if (escaped && st.window) m_.detach_window(st.window);
    st.values = py::none();
    st.window.reset();
  }

  Manager& m_;
  xshm::Timeout timeout_;
  xshm::WriteMode mode_;
  std::shared_ptr<BlockState> st_;
  std::optional<std::uint64_t> seq_;
};

/// `with m.lock():` the writer mutex for the caller's own critical section.
class LockBlock {
 public:
  LockBlock(Manager& m, xshm::Timeout timeout) : m_(m), timeout_(timeout) {}
  void enter() {
    if (guard_) throw xshm::ArgumentError("this lock block is already active");
    guard_ = m_.lock(timeout_);
  }
  bool exit(const py::object&, const py::object&, const py::object&) {
    if (guard_) guard_->unlock();
    guard_.reset();
    return false;
  }

 private:
  Manager& m_;
  xshm::Timeout timeout_;
  std::shared_ptr<xshm::LockGuard> guard_;
};

/// Adds Record, WriteBlock and LockBlock to the module.
void register_blocks(py::module_& mod);

}  // namespace xshm_py
