// xshm.Snapshot, what read() and read_into() return: a small C type rather than a pybind11
// class, because read() is the hot path and a pybind11 instance costs ~200 ns to make, this
// one ~50 ns. Read-only attributes; it owns its values array and message str. And read()'s
// recycling (SnapshotCache): the snapshot it returned last, with its array, is filled again
// when nothing but the cache holds them, so a read is a copy into an existing buffer.
#pragma once

#include <pybind11/pybind11.h>

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <xshm/reader.hpp>

#include "dlpack.hpp"
#include "text.hpp"

namespace xshm_py {

namespace py = pybind11;

/// The instance layout of xshm.Snapshot.
struct SnapshotObject {
  PyObject_HEAD
  unsigned long long seq;
  unsigned long long counter;
  long long timestamp_ns;
  unsigned long long writer_pid;
  PyObject* values;
  PyObject* message;
  PyObject* counter_int;  // `counter` as Python sees it: the same int while the counter stays
};

/// The type, made by register_snapshot().
extern PyTypeObject* g_snapshot_type;

/// Creates xshm.Snapshot and adds it to the module.
void register_snapshot(py::module_& mod);

/// Sets the record fields of `s` from `info`.
inline void set_info(SnapshotObject* s, const xshm::RecordInfo& info) noexcept {
  s->seq = info.seq;
  s->counter = info.counter;
  s->timestamp_ns = info.timestamp_ns;
  s->writer_pid = info.writer_pid;
}

/// read()'s buffers. A snapshot a user still holds never changes: the cached snapshot is
/// reused only when the cache holds its one reference, and its values array only when the
/// snapshot holds the array's one reference and the array the one reference to its buffer
/// (numpy points views, slices and reshapes at that buffer's owner, memoryviews and
/// frombuffer at the array). The message str is immutable: the last one is shared while the
/// bytes stay the same. Values buffers are 64-byte aligned. Not thread-safe: the GIL guards it
/// (take() empties the cache, so a read that releases the GIL does not share it).
class SnapshotCache {
 public:
  SnapshotCache(py::dtype dtype, std::vector<Py_intptr_t> dims, std::size_t nbytes)
      : dtype_(std::move(dtype)), dims_(std::move(dims)), nbytes_(nbytes) {}

  /// A snapshot whose values array only it holds, ready to fill: the cached one when free,
  /// else a new one. The cache is empty until put().
  py::object take() {
    py::object snap = std::move(snap_);
    snap_ = py::object();
    if (snap && Py_REFCNT(snap.ptr()) == 1) {
      auto* s = reinterpret_cast<SnapshotObject*>(snap.ptr());
      if (!array_free(s->values)) {
        PyObject* fresh = new_array().release().ptr();
        Py_SETREF(s->values, fresh);
      }
      return snap;
    }
    auto* s = PyObject_New(SnapshotObject, g_snapshot_type);
    if (s == nullptr) throw py::error_already_set();
    s->values = nullptr;
    s->message = nullptr;
    s->counter_int = nullptr;
    snap = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(s));
    s->values = new_array().release().ptr();
    Py_INCREF(Py_None);
    s->message = Py_None;
    return snap;
  }
  /// Drops the cached snapshot (and, unless a user holds them, its buffers).
  void clear() { snap_ = py::object(); }

  /// Back into the cache, once filled.
  void put(py::object snap) { snap_ = std::move(snap); }

  /// Where the values of a snapshot from take() go.
  static void* data(const py::object& snap) {
    return py::detail::array_proxy(reinterpret_cast<SnapshotObject*>(snap.ptr())->values)->data;
  }

  /// The message as a str: the last one when the bytes are the same, else a decode.
  const py::str& message(const char* data, std::size_t len, DecodePolicy policy) {
    if (!last_str_ || len != last_bytes_.size() || std::memcmp(data, last_bytes_.data(), len) != 0) {
      py::str decoded = decode_message(data, len, policy);
      last_bytes_.assign(data, len);
      last_str_ = std::move(decoded);
    }
    return last_str_;
  }

  /// The counter as an int: the last one while the value stays the same.
  const py::object& counter(std::uint64_t c) {
    if (!last_counter_int_ || c != last_counter_) {
      PyObject* o = PyLong_FromUnsignedLongLong(c);
      if (o == nullptr) throw py::error_already_set();
      last_counter_int_ = py::reinterpret_steal<py::object>(o);
      last_counter_ = c;
    }
    return last_counter_int_;
  }

  /// Sets the record fields of `snap` (from take()) from `info`.
  void set_info(const py::object& snap, const xshm::RecordInfo& info) {
    auto* s = reinterpret_cast<SnapshotObject*>(snap.ptr());
    const py::object& c = counter(info.counter);
    if (s->counter_int != c.ptr()) Py_XSETREF(s->counter_int, c.inc_ref().ptr());
    xshm_py::set_info(s, info);
  }

  /// Sets the message of `snap` (from take()) to message(data, len, policy).
  void set_message(const py::object& snap, const char* data, std::size_t len, DecodePolicy policy) {
    const py::str& str = message(data, len, policy);
    auto* s = reinterpret_cast<SnapshotObject*>(snap.ptr());
    if (s->message != str.ptr()) Py_SETREF(s->message, str.inc_ref().ptr());
  }

 private:
  /// True when nobody but the snapshot holds `arr` and its buffer, and the array is still as
  /// new_array() made it: a user who held it may have set its shape, dtype or flags in place
  /// (`v.shape = ...`, `v.dtype = ...`, `v.flags.writeable = False`), and the next read()
  /// must not hand such an array out.
  bool array_free(PyObject* arr) const noexcept {
    if (Py_REFCNT(arr) != 1) return false;
    const auto* a = py::detail::array_proxy(arr);
    if (a->base != nullptr && Py_REFCNT(a->base) != 1) return false;
    if (a->descr != dtype_.ptr() || a->nd != static_cast<int>(dims_.size())) return false;
    constexpr int kAsMade = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                            py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                            py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    if ((a->flags & kAsMade) != kAsMade) return false;
    Py_intptr_t stride = static_cast<Py_intptr_t>(dtype_.itemsize());
    for (int i = a->nd - 1; i >= 0; --i) {
      if (a->dimensions[i] != dims_[static_cast<std::size_t>(i)]) return false;
      if (dims_[static_cast<std::size_t>(i)] > 1 && a->strides[i] != stride) return false;
      stride *= dims_[static_cast<std::size_t>(i)];
    }
    return true;
  }

  /// A C-contiguous values array over a 64-byte aligned buffer of its own (dlpack.hpp).
  py::object new_array() const { return aligned_array(dtype_, dims_, nbytes_); }

  py::dtype dtype_;
  std::vector<Py_intptr_t> dims_;
  std::size_t nbytes_;
  py::object snap_;
  std::string last_bytes_;
  py::str last_str_{py::reinterpret_steal<py::str>(py::handle())};
  std::uint64_t last_counter_ = 0;
  py::object last_counter_int_;
};

/// A Snapshot of `info`, taking over `values`, `message` and `counter` (info.counter as an int).
inline py::object make_snapshot(const xshm::RecordInfo& info, py::object values, py::str message,
                                py::object counter) {
  auto* s = PyObject_New(SnapshotObject, g_snapshot_type);
  if (s == nullptr) throw py::error_already_set();
  set_info(s, info);
  s->values = values.release().ptr();
  s->message = message.release().ptr();
  s->counter_int = counter.release().ptr();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(s));
}

}  // namespace xshm_py
