// xshm.SharedMemoryManager as Python sees it: a handle on one segment that converts Python
// arguments (shapes, dtypes, arrays, seconds) for the core's SharedMemoryManager, releases the
// GIL around anything that can block or copy a lot, and ties the live values view to the
// mapping (a capsule holding the segment's shared_ptr is the view's base). The protocol lives
// in the core headers; this class only delegates.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <xshm/manager.hpp>
#include <xshm/window.hpp>

#include "aio.hpp"
#include "args.hpp"
#include "casting.hpp"
#include "snapshot.hpp"
#include "text.hpp"
#include "waits.hpp"

namespace xshm_py {

namespace py = pybind11;

inline constexpr std::size_t kReleaseGilBytes = 64 * 1024;  // copies smaller than this keep the GIL

/// How long a spinning wait() polls before it releases the GIL.
inline constexpr std::chrono::nanoseconds kGilSpin{10'000};

/// A C-contiguous numpy array over `data`, kept alive by `owner` (a shared_ptr moved into a
/// capsule, the array's base). Made with the numpy C API: py::array's constructor costs
/// several hundred ns more, paid by every write block.
template <class Owner>
inline py::array make_view(const py::dtype& dt, const std::vector<Py_intptr_t>& dims, void* data, Owner owner,
                           bool writable) {
  py::capsule base(new Owner(std::move(owner)), [](void* p) { delete static_cast<Owner*>(p); });
  auto& api = py::detail::npy_api::get();
  const int flags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                    (writable ? py::detail::npy_api::NPY_ARRAY_WRITEABLE_ : 0);
  Py_INCREF(dt.ptr());  // PyArray_NewFromDescr steals it
  PyObject* arr =
      api.PyArray_NewFromDescr_(api.PyArray_Type_, dt.ptr(), static_cast<int>(dims.size()),
                                const_cast<Py_intptr_t*>(dims.data()), nullptr, data, flags, nullptr);
  if (arr == nullptr) throw py::error_already_set();
  auto a = py::reinterpret_steal<py::array>(arr);
  if (api.PyArray_SetBaseObject_(arr, base.release().ptr()) != 0) throw py::error_already_set();
  return a;
}

class Manager {
 public:
  Manager(xshm::SharedMemoryManager m, DecodePolicy policy)
      : m_(std::move(m)),
        policy_(policy),
        cache_(py::dtype(xshm::dtype_info(m_.geometry().dtype).name),
               std::vector<Py_intptr_t>(m_.geometry().shape.begin(), m_.geometry().shape.end()),
               m_.geometry().values_size) {
    const xshm::Geometry& g = m_.geometry();
    dtype_ = py::dtype(xshm::dtype_info(g.dtype).name);
    dims_.assign(g.shape.begin(), g.shape.end());
    py::tuple shape(g.shape.size());
    for (std::size_t i = 0; i < g.shape.size(); ++i) shape[i] = py::int_(g.shape[i]);
    shape_ = shape;
    view_ = make_view(dtype_, dims_, const_cast<void*>(m_.live_values()), m_.keepalive(), false);
  }

  /// SharedMemoryManager.create; every argument already checked (manager.cpp) but the shape and
  /// the dtype, which are parsed here.
  static std::unique_ptr<Manager> create(std::string_view name, const py::object& shape,
                                         const py::object& dtype, std::uint64_t message_capacity,
                                         std::uint64_t mode, bool exist_ok, bool backup,
                                         DecodePolicy policy) {
    xshm::CreateOptions o;
    o.shape = parse_shape(shape);
    o.dtype = parse_dtype(dtype);
    o.message_capacity = message_capacity;
    // Checked before mode_t narrows it (2**32 + 0o600 would pass as 0o600); the core's words.
    if (mode > 0777)
      throw xshm::ArgumentError("mode must be a permission mask (at most 0o777), got " +
                                std::to_string(mode));
    o.mode = static_cast<mode_t>(mode);
    o.exist_ok = exist_ok;
    o.backup = backup;
    xshm::SharedMemoryManager m;
    {
      py::gil_scoped_release nogil;
      m = xshm::SharedMemoryManager::create(name, o);
    }
    return std::make_unique<Manager>(std::move(m), policy);
  }

  /// SharedMemoryManager.open. `stall_timeout`: nullopt for the default.
  static std::unique_ptr<Manager> open(std::string_view name, bool readonly, xshm::Timeout timeout,
                                       DecodePolicy policy, std::optional<xshm::Timeout> stall_timeout) {
    xshm::OpenOptions o;
    o.readonly = readonly;
    o.timeout = timeout;  // nullopt (None, inf): wait for the name forever
    // stall_timeout=inf: never call a live writer stalled (nullopt would mean "the default").
    if (stall_timeout) o.stall_timeout = stall_timeout->value_or(xshm::kForever);
    xshm::SharedMemoryManager m;
    {
      py::gil_scoped_release nogil;
      m = xshm::SharedMemoryManager::open(name, o);
    }
    return std::make_unique<Manager>(std::move(m), policy);
  }

  const xshm::SharedMemoryManager& m() const {
    if (!m_.is_open()) throw xshm::ClosedError("the segment handle is closed");
    return m_;
  }
  xshm::SharedMemoryManager& m() {
    if (!m_.is_open()) throw xshm::ClosedError("the segment handle is closed");
    return m_;
  }

  void close() {
    if (m_.is_open()) notify_closing(this);  // coroutines waiting on it look again: closed
    m_.close();
    view_ = py::none();
    window_.reset();  // views of it keep it mapped
    cache_.clear();   // the last snapshot's buffer goes with the handle, unless a user holds it
  }
  bool closed() const { return !m_.is_open(); }
  std::string name() const { return m().name(); }
  py::tuple shape() const { return (void)m(), shape_; }
  py::dtype dtype() const { return (void)m(), dtype_; }
  std::uint32_t message_capacity() const { return m().message_capacity(); }
  std::uint64_t seq() const { return m().seq(); }
  bool readonly() const { return m().readonly(); }
  bool backup() const { return m().backup(); }
  std::string errors() const { return policy_name(policy_); }
  std::size_t nbytes() const { return m().geometry().total_size; }
  std::uint32_t recoveries() const { return m().recoveries(); }
  std::uint32_t owner_pid() const { return m().owner_pid(); }
  /// The live values view (may show a write in progress); `values` is its old name.
  py::object live_values() const { return (void)m(), view_; }

  std::string repr() const {
    if (!m_.is_open()) return "<xshm.SharedMemoryManager (closed)>";
    std::string shape = py::str(shape_);
    return "<xshm.SharedMemoryManager name='" + m_.name() + "' shape=" + shape +
           " dtype=" + xshm::dtype_info(m_.dtype()).name +
           " message_capacity=" + std::to_string(m_.message_capacity()) + " seq=" + std::to_string(m_.seq()) +
           (m_.readonly() ? " readonly" : "") + ">";
  }

  void unlink() const {
    xshm::SharedMemoryManager local = m();
    local.unlink();
  }

  py::object read() const {
    const xshm::SharedMemoryManager& local = m();
    py::object snap = cache_.take();
    const auto info = read_raw_to(local, SnapshotCache::data(snap), [&](const char* msg, std::uint32_t len) {
      cache_.set_message(snap, msg, len, policy_);
    });
    cache_.set_info(snap, info);
    cache_.put(snap);
    return snap;
  }

  py::object read_into(const py::object& out) const {
    const xshm::SharedMemoryManager& local = m();
    auto& api = py::detail::npy_api::get();
    if (!api.PyArray_Check_(out.ptr())) throw py::type_error("read_into: out must be a numpy array");
    auto* a = py::detail::array_proxy(out.ptr());
    if (a->descr != dtype_.ptr() && !api.PyArray_EquivTypes_(a->descr, dtype_.ptr()))
      throw xshm::DtypeError("read_into: out has dtype " + std::string(py::str(out.attr("dtype"))) +
                             ", the segment holds " + std::string(py::str(dtype_)) +
                             ": pass an array of dtype " + std::string(py::str(dtype_)));
    constexpr int kNeed =
        py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    if ((a->flags & kNeed) != kNeed)
      throw xshm::ArgumentError((a->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)
                                    ? "read_into: out must be C-contiguous"
                                    : "read_into: out is not writeable");
    bool same = a->nd == static_cast<int>(dims_.size());
    for (std::size_t i = 0; same && i < dims_.size(); ++i) same = a->dimensions[i] == dims_[i];
    if (!same) check_shape(py::reinterpret_borrow<py::array>(out), local);  // throws with the shapes
    return read_to(local, a->data, out);
  }

  std::uint64_t publish(const py::object& values, std::optional<std::string_view> msg_view,
                        std::optional<std::uint64_t> c, bool truncate, Casting casting) {
    // Until as_values() no Python code runs and the GIL stays held, so no other thread can
    // close this handle: the fast path uses it in place (no shared_ptr copy, two atomics).
    xshm::SharedMemoryManager& held = m();
    if (values.is_none()) return publish_gil(held, nullptr, 0, msg_view, c, truncate);
    auto& api = py::detail::npy_api::get();
    if (api.PyArray_Check_(values.ptr())) {  // the common case: the segment's dtype and shape, C order
      auto* a = py::detail::array_proxy(values.ptr());
      bool exact = a->descr == dtype_.ptr() && (a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
                   a->nd == static_cast<int>(dims_.size());
      for (std::size_t i = 0; exact && i < dims_.size(); ++i) exact = a->dimensions[i] == dims_[i];
      if (exact && held.geometry().values_size < kReleaseGilBytes)
        return publish_gil(held, a->data, held.geometry().values_size, msg_view, c, truncate);
    }
    xshm::SharedMemoryManager local = held;  // as_values may run Python code, and the GIL may go
    py::array arr = as_values(values, local, casting);
    const void* data = arr.data();
    const auto bytes = static_cast<std::size_t>(arr.nbytes());
    if (bytes >= kReleaseGilBytes) return publish_nogil(local, data, bytes, msg_view, c, truncate);
    return publish_gil(local, data, bytes, msg_view, c, truncate);
  }

  /// A small publish with the GIL held, when the writer mutex is free; when another writer
  /// holds it (a long write() or lock() block in another process, say), the wait goes on with
  /// the GIL released and Ctrl-C honoured, as in write() and lock().
  static std::uint64_t publish_gil(xshm::SharedMemoryManager& h, const void* data, std::size_t bytes,
                                   std::optional<std::string_view> msg, std::optional<std::uint64_t> c,
                                   bool truncate) {
    if (auto seq = h.try_publish(data, bytes, msg, c, truncate)) return *seq;
    return publish_nogil(h, data, bytes, msg, c, truncate);
  }

  static std::uint64_t publish_nogil(const xshm::SharedMemoryManager& h, const void* data, std::size_t bytes,
                                     std::optional<std::string_view> msg, std::optional<std::uint64_t> c,
                                     bool truncate) {
    xshm::SharedMemoryManager local = h;  // the GIL goes: another thread may close `h`
    py::gil_scoped_release nogil;
    return local.publish(data, bytes, msg, c, truncate, std::nullopt, check_signals);
  }

  /// `timeout_ns`: args.hpp's one-integer Timeout (kWaitForever: None).
  std::uint64_t wait(std::uint64_t last, std::int64_t timeout_ns, std::chrono::nanoseconds spin_ns) const {
    const std::uint64_t now = m().seq();
    if (now > last) return now;  // already past: no GIL round trip
    const xshm::Timeout limit = timeout_of_ns(timeout_ns);
    // The first few microseconds of a spinning wait poll with the GIL held: releasing and
    // re-taking it costs more than a cross-process hop, and a Python thread of this process
    // is held up for at most kGilSpin.
    const xshm::wait::SpinSplit split = xshm::wait::split_spin(limit, spin_ns, kGilSpin);
    if (split.head.count() > 0)
      if (auto r = m().wait_for(last, split.head, split.head)) return *r;
    xshm::SharedMemoryManager local = m();
    std::optional<std::uint64_t> r;
    {
      py::gil_scoped_release nogil;
      r = local.wait_for(last, split.rest_timeout, split.rest_spin, check_signals);
    }
    if (!r)
      throw xshm::WaitTimeoutError("no publish after sequence " + std::to_string(last) + " within " +
                                   xshm::format_duration(limit.value_or(std::chrono::nanoseconds{0})));
    return *r;
  }

  std::shared_ptr<xshm::WriteTransaction> begin_write(xshm::Timeout limit, xshm::WriteMode mode) {
    // A free mutex is taken with the GIL held (releasing and re-taking it costs more); when it
    // is taken, the wait goes on with the GIL released and Ctrl-C honoured.
    if (auto tx = m().try_begin_write(mode)) return std::make_shared<xshm::WriteTransaction>(std::move(*tx));
    xshm::SharedMemoryManager local = m();
    py::gil_scoped_release nogil;
    return std::make_shared<xshm::WriteTransaction>(local.begin_write(mode, limit, check_signals));
  }

  /// The window that in-place write blocks hand their values through (window.hpp), mapped
  /// on first use and reused by every block until one has to detach it.
  const std::shared_ptr<xshm::ValuesWindow>& values_window() {
    if (!window_) window_ = xshm::ValuesWindow::map(m().segment());
    return window_;
  }
  /// Turns `w` private (views of it outlived their block); when it is the current window,
  /// the next block maps a fresh one. The views own the detached window through their base.
  void detach_window(const std::shared_ptr<xshm::ValuesWindow>& w) {
    if (window_ == w) window_.reset();  // first: a window whose detach failed is never reused
    w->detach();
  }

  std::shared_ptr<xshm::LockGuard> lock(xshm::Timeout limit) {
    xshm::SharedMemoryManager local = m();
    py::gil_scoped_release nogil;
    return std::make_shared<xshm::LockGuard>(local.lock(limit, check_signals));
  }

  const py::dtype& dtype_ref() const { return dtype_; }
  const std::vector<Py_intptr_t>& dims() const { return dims_; }

  /// The header's identity and control words, for tools (xshm inspect). Reads only.
  py::dict header() const {
    const auto* h = static_cast<const xshm::Header*>(m().base());
    static const char* hex = "0123456789abcdef";
    std::string id;
    for (unsigned char b : h->creation_id) {
      id.push_back(hex[b >> 4]);
      id.push_back(hex[b & 15]);
    }
    const xshm::Geometry& g = m().geometry();
    py::dict d;
    d["layout_version"] = h->layout_version;
    d["total_size"] = g.total_size;
    d["record_size"] = g.record_size;
    d["record_offsets"] = py::make_tuple(g.record_offset[0], g.record_offset[1]);
    d["values_offset"] = g.values_offset;
    d["message_offset"] = g.message_offset;
    d["values_size"] = g.values_size;
    d["creation_id"] = id;
    d["created_ns"] = h->created_ns;
    d["creator_pid"] = h->creator_pid;
    d["seq"] = h->seq.load(std::memory_order_acquire);
    d["epoch"] = h->epoch.load(std::memory_order_relaxed);
    d["waiters"] = h->waiters.load(std::memory_order_relaxed);
    d["owner_pid"] = h->owner_pid.load(std::memory_order_relaxed);
    d["recoveries"] = h->recoveries.load(std::memory_order_relaxed);
    d["mutex_abi"] = h->mutex_abi;
    return d;
  }

 private:
  /// An int or a sequence of ints (numpy's integers too), each >= 0; () is numpy's 0-d array.
  static std::vector<std::uint64_t> parse_shape(const py::object& shape) {
    std::vector<std::uint64_t> out;
    if (is_integer(shape.ptr()) && !PyBool_Check(shape.ptr())) {
      out.push_back(checked_extent(shape));
      return out;
    }
    if (!PySequence_Check(shape.ptr()) || PyUnicode_Check(shape.ptr()) || PyBytes_Check(shape.ptr()))
      throw py::type_error("shape must be an int or a sequence of ints, not " + type_name(shape.ptr()));
    py::object items = py::reinterpret_steal<py::object>(PySequence_Fast(shape.ptr(), "shape"));
    if (!items) throw py::type_error("shape must be an int or a sequence of ints: " + take_error_text());
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(items.ptr());
    if (n > static_cast<Py_ssize_t>(xshm::kMaxDims))  // before converting a million entries
      throw xshm::ArgumentError("shape has " + std::to_string(n) + " dimensions; at most " +
                                std::to_string(xshm::kMaxDims) + " are supported");
    for (Py_ssize_t i = 0; i < n; ++i)
      out.push_back(checked_extent(PySequence_Fast_GET_ITEM(items.ptr(), i)));
    return out;
  }

  static std::uint64_t checked_extent(py::handle h) {
    if (!is_integer(h.ptr()) || PyBool_Check(h.ptr()))
      throw py::type_error("shape entries must be ints, not " + type_name(h.ptr()));
    py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
    if (!i)
      throw py::type_error("shape entries must be ints, not " + type_name(h.ptr()) + " (" +
                           take_error_text() + ")");
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow > 0)
      throw xshm::ArgumentError(
          "shape is too large: the values array would exceed 2**40 bytes (an extent of " + repr_of(i.ptr()) +
          ")");
    if (overflow < 0 || v < 0)
      throw xshm::ArgumentError("shape entries must be >= 0, got " + repr_of(i.ptr()));
    return static_cast<std::uint64_t>(v);
  }

 public:
  /// A numpy dtype (anything np.dtype() takes) as the core's code; DtypeError in xshm's words for
  /// what numpy cannot read and what xshm cannot carry. Streams' frames use it too.
  static xshm::Dtype parse_dtype(const py::object& dtype) {
    PyObject* descr = nullptr;
    if (!py::detail::npy_api::get().PyArray_DescrConverter_(dtype.ptr(), &descr) || descr == nullptr)
      throw xshm::DtypeError("dtype " + repr_of(dtype.ptr()) + " is not a numpy dtype (" + take_error_text() +
                             ")");
    py::dtype dt = py::reinterpret_steal<py::dtype>(reinterpret_cast<PyObject*>(descr));
    const char kind = dt.kind();
    const char order = dt.byteorder();
    if (dt.has_fields() || kind == 'O' || kind == 'V' || kind == 'S' || kind == 'U' || kind == 'M' ||
        kind == 'm')
      throw xshm::DtypeError("unsupported dtype " + std::string(py::str(dt)) +
                             ": xshm carries bool, integers, floats and complex numbers");
    if (order == '>')
      throw xshm::DtypeError("big-endian dtype " + std::string(py::str(dt)) + " is not supported");
    return xshm::parse_dtype(std::string(py::str(dt.attr("name"))));
  }

 private:
  void check_shape(const py::array& a, const xshm::SharedMemoryManager& local) const {
    const auto& shape = local.shape();
    bool same = static_cast<std::size_t>(a.ndim()) == shape.size();
    for (std::size_t i = 0; same && i < shape.size(); ++i)
      same = static_cast<std::uint64_t>(a.shape(i)) == shape[i];
    if (!same)
      throw xshm::ArgumentError("values have shape " + std::string(py::str(a.attr("shape"))) +
                                ", the segment holds " + std::string(py::str(shape_)));
  }

  /// `values` as a C-contiguous array of the segment's dtype and shape, converted under the
  /// casting rule (casting.hpp) when their dtype is another; the shape must be the segment's.
  py::array as_values(const py::object& values, const xshm::SharedMemoryManager& local,
                      Casting casting) const {
    py::array arr = cast_values(values, dtype_, casting);
    check_shape(arr, local);
    if (!(arr.flags() & py::array::c_style)) arr = py::array::ensure(arr, py::array::c_style);
    return arr;
  }

  /// One consistent read into `data`; `message(bytes, len)` gets the message bytes.
  template <class Message>
  static xshm::RecordInfo read_raw_to(const xshm::SharedMemoryManager& local, void* data, Message&& message) {
    const std::uint32_t cap = local.message_capacity();
    char small[512];
    std::string big;
    char* buf = small;
    if (cap > sizeof small) {
      big.resize(cap);
      buf = big.data();
    }
    std::uint32_t len = 0;
    xshm::RecordInfo info;
    if (local.geometry().values_size >= kReleaseGilBytes) {
      xshm::SharedMemoryManager keep = local;  // another thread may close() while the GIL is out
      py::gil_scoped_release nogil;
      info = keep.read_raw(data, buf, &len);
    } else {
      info = local.read_raw(data, buf, &len);
    }
    message(buf, len);
    return info;
  }

  py::object read_to(const xshm::SharedMemoryManager& local, void* data, py::object values) const {
    py::str msg = py::reinterpret_steal<py::str>(py::handle());
    const auto info = read_raw_to(local, data, [&](const char* bytes, std::uint32_t len) {
      msg = cache_.message(bytes, len, policy_);
    });
    return make_snapshot(info, std::move(values), std::move(msg), cache_.counter(info.counter));
  }

  xshm::SharedMemoryManager m_;
  DecodePolicy policy_;
  mutable SnapshotCache cache_;
  std::vector<Py_intptr_t> dims_;
  py::dtype dtype_;
  py::tuple shape_;
  py::object view_;
  std::shared_ptr<xshm::ValuesWindow> window_;
};

/// Adds the methods and properties of SharedMemoryManager to its class, the hot ones as
/// METH_FASTCALL descriptors.
void register_manager(py::class_<Manager>& cls);

}  // namespace xshm_py
