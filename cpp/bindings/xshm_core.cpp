// xshm._core: the only file that includes pybind11. It converts types, releases the GIL for
// anything that can block or copy a lot, maps C++ errors to the Python exceptions of
// xshm.errors, and ties the lifetime of every numpy view to the mapping it shows (a capsule
// holding the segment's shared_ptr is the view's base). The protocol lives in the header.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <structmember.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <xshm/xshm.hpp>

namespace py = pybind11;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kReleaseGilBytes = 64 * 1024;  // copies smaller than this keep the GIL

py::object error_class(const char* name) {
  return py::module_::import("xshm.errors").attr(name);
}

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const xshm::LayoutError& e) {
    py::set_error(error_class("LayoutError"), e.what());
  } catch (const xshm::DtypeError& e) {
    py::set_error(error_class("DtypeError"), e.what());
  } catch (const xshm::MessageTooLongError& e) {
    py::set_error(error_class("MessageTooLongError"), e.what());
  } catch (const xshm::ReadOnlyError& e) {
    py::set_error(error_class("ReadOnlyError"), e.what());
  } catch (const xshm::ArgumentError& e) {
    py::set_error(error_class("ArgumentError"), e.what());
  } catch (const xshm::TornRecordError& e) {
    py::set_error(error_class("TornRecordError"), e.what());
  } catch (const xshm::WaitTimeoutError& e) {
    py::set_error(error_class("WaitTimeoutError"), e.what());
  } catch (const xshm::ClosedError& e) {
    py::set_error(error_class("ClosedError"), e.what());
  } catch (const xshm::Error& e) {
    py::set_error(error_class("XshmError"), e.what());
  } catch (const std::system_error& e) {
    // OSError(errno, text) becomes FileNotFoundError, PermissionError, ... by errno.
    py::object err = py::reinterpret_steal<py::object>(
        PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
    if (!err) throw py::error_already_set();
    PyErr_SetObject(PyExc_OSError, err.ptr());
  }
}

/// A numpy array over `data`, kept alive by `owner` (a shared_ptr moved into a capsule).
template <class Owner>
py::array make_view(const py::dtype& dt, const std::vector<std::uint64_t>& shape, void* data, Owner owner,
                    bool writable) {
  auto* held = new Owner(std::move(owner));
  py::capsule base(held, [](void* p) { delete static_cast<Owner*>(p); });
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  py::array arr(dt, dims, {}, data, base);
  if (!writable) {
    py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  }
  return arr;
}

/// How long a spinning wait() polls before it releases the GIL.
constexpr std::chrono::nanoseconds kGilSpin{10'000};

/// Between the slices of a wait with the GIL released: take the GIL and let Python raise
/// KeyboardInterrupt (or whatever a signal handler raises), which ends the wait.
void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

/// Seconds (None: forever) as the core's Timeout; negative counts as zero.
xshm::Timeout to_timeout(std::optional<double> seconds) {
  if (!seconds) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(std::max(*seconds, 0.0)));
}

enum class DecodePolicy { Replace, Strict };

DecodePolicy parse_policy(const std::string& errors) {
  if (errors == "replace") return DecodePolicy::Replace;
  if (errors == "strict") return DecodePolicy::Strict;
  throw xshm::ArgumentError("errors must be 'replace' or 'strict', not '" + errors + "'");
}

/// Decodes a message slot. Valid UTF-8 (the hot path) costs one strict decode; invalid bytes
/// left by a foreign writer become U+FFFD (replace) or MessageDecodeError with the offset of
/// the first invalid sequence, as found by xshm_text.validate (strict).
py::str decode_message(const char* data, std::size_t len, DecodePolicy policy = DecodePolicy::Replace) {
  PyObject* s = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), "strict");
  if (s != nullptr) return py::reinterpret_steal<py::str>(s);
  if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) throw py::error_already_set();
  PyErr_Clear();
  if (policy == DecodePolicy::Replace) {
    s = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), "replace");
    if (s == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(s);
  }
  py::bytes raw(data, len);
  py::object offset = py::module_::import("xshm_text").attr("validate")(raw);
  py::object err = error_class("MessageDecodeError")(
      "the message is not valid UTF-8 (first invalid byte at offset " + std::string(py::str(offset)) + ")",
      offset, raw);
  PyErr_SetObject(err.get_type().ptr(), err.ptr());
  throw py::error_already_set();
}

/// What read() and read_into() return: a small C type rather than a pybind11 class, because
/// read() is the hot path and a pybind11 instance costs ~200 ns to make, this one ~50 ns.
struct SnapshotObject {
  PyObject_HEAD
  unsigned long long seq;
  unsigned long long counter;
  long long timestamp_ns;
  unsigned long long writer_pid;
  PyObject* values;
  PyObject* message;
};

PyTypeObject* g_snapshot_type = nullptr;

void snapshot_dealloc(PyObject* self) {
  auto* s = reinterpret_cast<SnapshotObject*>(self);
  Py_XDECREF(s->values);
  Py_XDECREF(s->message);
  PyTypeObject* tp = Py_TYPE(self);
  tp->tp_free(self);
  Py_DECREF(tp);
}

PyObject* snapshot_repr(PyObject* self) {
  auto* s = reinterpret_cast<SnapshotObject*>(self);
  return PyUnicode_FromFormat("<xshm.Snapshot seq=%llu counter=%llu writer_pid=%llu message=%R>", s->seq,
                              s->counter, s->writer_pid, s->message);
}

PyObject* snapshot_timestamp(PyObject* self, void*) {
  return PyFloat_FromDouble(static_cast<double>(reinterpret_cast<SnapshotObject*>(self)->timestamp_ns) / 1e9);
}

PyMemberDef snapshot_members[] = {
    {"seq", T_ULONGLONG, offsetof(SnapshotObject, seq), READONLY, "The publish this record came from (1 for the first)."},
    {"counter", T_ULONGLONG, offsetof(SnapshotObject, counter), READONLY, "The writer's counter."},
    {"timestamp_ns", T_LONGLONG, offsetof(SnapshotObject, timestamp_ns), READONLY,
     "Wall-clock time of the publish, ns since the epoch."},
    {"writer_pid", T_ULONGLONG, offsetof(SnapshotObject, writer_pid), READONLY, "Pid of the process that published it."},
    {"values", T_OBJECT, offsetof(SnapshotObject, values), READONLY, "The values (a private copy, or the read_into target)."},
    {"message", T_OBJECT, offsetof(SnapshotObject, message), READONLY, "The message, decoded from UTF-8."},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef snapshot_getset[] = {
    {"timestamp", snapshot_timestamp, nullptr, "Wall-clock time of the publish, seconds since the epoch (like time.time()).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot snapshot_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(snapshot_dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(snapshot_repr)},
    {Py_tp_members, snapshot_members},
    {Py_tp_getset, snapshot_getset},
    {Py_tp_doc, const_cast<char*>("A consistent copy of a segment's record.")},
    {0, nullptr},
};

PyType_Spec snapshot_spec = {"xshm.Snapshot", sizeof(SnapshotObject), 0, Py_TPFLAGS_DEFAULT, snapshot_slots};

py::object make_snapshot(const xshm::RecordInfo& info, py::object values, py::str message) {
  auto* s = PyObject_New(SnapshotObject, g_snapshot_type);
  if (s == nullptr) throw py::error_already_set();
  s->seq = info.seq;
  s->counter = info.counter;
  s->timestamp_ns = info.timestamp_ns;
  s->writer_pid = info.writer_pid;
  s->values = values.release().ptr();
  s->message = message.release().ptr();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(s));
}

class Manager;

/// The record inside `with m.write() as rec:`.
class Record {
 public:
  Record(std::shared_ptr<xshm::WriteTransaction> tx, py::array values)
      : tx_(std::move(tx)), values_(std::move(values)) {}
  py::array values() const { return values_; }
  std::uint64_t counter() const { return tx_->counter; }
  void set_counter(std::uint64_t c) { tx_->counter = c; }
  py::str message() const { return decode_message(tx_->message().data(), tx_->message().size()); }
  void set_message(const std::string& m) { tx_->set_message(m); }
  void set_message_truncated(const std::string& m) { tx_->set_message(m, true); }
  xshm::WriteTransaction& tx() { return *tx_; }

 private:
  std::shared_ptr<xshm::WriteTransaction> tx_;
  py::array values_;
};

class Manager {
 public:
  Manager(xshm::SharedMemoryManager m, DecodePolicy policy) : m_(std::move(m)), policy_(policy) {
    const xshm::Geometry& g = m_.geometry();
    dtype_ = py::dtype(xshm::dtype_info(g.dtype).name);
    dims_.assign(g.shape.begin(), g.shape.end());
    py::tuple shape(g.shape.size());
    for (std::size_t i = 0; i < g.shape.size(); ++i) shape[i] = py::int_(g.shape[i]);
    shape_ = shape;
    view_ = make_view(dtype_, g.shape, const_cast<void*>(m_.live_values()), m_.keepalive(), false);
  }

  static std::unique_ptr<Manager> create(const std::string& name, const py::object& shape, const py::object& dtype,
                                         std::uint64_t message_capacity, unsigned mode, bool exist_ok, bool backup,
                                         const std::string& errors) {
    const DecodePolicy policy = parse_policy(errors);
    xshm::CreateOptions o;
    o.shape = parse_shape(shape);
    o.dtype = parse_dtype(dtype);
    o.message_capacity = message_capacity;
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

  static std::unique_ptr<Manager> open(const std::string& name, bool readonly, double timeout,
                                       const std::string& errors, std::optional<double> stall_timeout) {
    const DecodePolicy policy = parse_policy(errors);
    if (!(timeout >= 0)) throw xshm::ArgumentError("timeout must be >= 0");
    if (stall_timeout && !(*stall_timeout > 0)) throw xshm::ArgumentError("stall_timeout must be > 0 or None");
    xshm::OpenOptions o;
    o.readonly = readonly;
    if (stall_timeout)
      o.stall_timeout =
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(*stall_timeout));
    o.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(timeout));
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
    m_.close();
    view_ = py::none();
  }
  bool closed() const { return !m_.is_open(); }
  std::string name() const { return m().name(); }
  py::tuple shape() const { return (void)m(), shape_; }
  py::dtype dtype() const { return (void)m(), dtype_; }
  std::uint32_t message_capacity() const { return m().message_capacity(); }
  std::uint64_t seq() const { return m().seq(); }
  bool readonly() const { return m().readonly(); }
  bool backup() const { return m().backup(); }
  std::string errors() const { return policy_ == DecodePolicy::Strict ? "strict" : "replace"; }
  std::size_t nbytes() const { return m().geometry().total_size; }
  std::uint32_t recoveries() const { return m().recoveries(); }
  std::uint32_t owner_pid() const { return m().owner_pid(); }
  py::object values() const { return (void)m(), view_; }

  std::string repr() const {
    if (!m_.is_open()) return "<xshm.SharedMemoryManager (closed)>";
    std::string shape = py::str(shape_);
    return "<xshm.SharedMemoryManager name='" + m_.name() + "' shape=" + shape + " dtype=" +
           xshm::dtype_info(m_.dtype()).name + " message_capacity=" + std::to_string(m_.message_capacity()) +
           " seq=" + std::to_string(m_.seq()) + (m_.readonly() ? " readonly" : "") + ">";
  }

  void unlink() const {
    xshm::SharedMemoryManager local = m();
    local.unlink();
  }

  py::object read() const {
    const xshm::SharedMemoryManager& local = m();
    auto& api = py::detail::npy_api::get();
    Py_INCREF(dtype_.ptr());  // PyArray_NewFromDescr steals it
    PyObject* arr = api.PyArray_NewFromDescr_(api.PyArray_Type_, dtype_.ptr(), static_cast<int>(dims_.size()),
                                              const_cast<Py_intptr_t*>(dims_.data()), nullptr, nullptr, 0, nullptr);
    if (arr == nullptr) throw py::error_already_set();
    py::object values = py::reinterpret_steal<py::object>(arr);
    return read_to(local, py::detail::array_proxy(arr)->data, std::move(values));
  }

  py::object read_into(const py::object& out) const {
    const xshm::SharedMemoryManager& local = m();
    auto& api = py::detail::npy_api::get();
    if (!api.PyArray_Check_(out.ptr())) throw py::type_error("read_into: out must be a numpy array");
    auto* a = py::detail::array_proxy(out.ptr());
    if (a->descr != dtype_.ptr() && !api.PyArray_EquivTypes_(a->descr, dtype_.ptr()))
      throw py::type_error("read_into: out has dtype " + std::string(py::str(out.attr("dtype"))) +
                           ", the segment holds " + std::string(py::str(dtype_)));
    constexpr int kNeed = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
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
                        std::optional<std::uint64_t> c, bool truncate) {
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
    py::array arr = as_values(values, local);
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

  std::uint64_t wait(std::uint64_t last, std::optional<double> timeout, double spin) const {
    if (timeout && !(*timeout >= 0)) throw xshm::ArgumentError("timeout must be >= 0 or None");
    if (!(spin >= 0)) throw xshm::ArgumentError("spin must be >= 0");
    const std::uint64_t now = m().seq();
    if (now > last) return now;  // already past: no GIL round trip
    auto spin_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(spin));
    std::optional<double> left = timeout;
    if (spin_ns.count() > 0) {
      // The first few microseconds of a spinning wait poll with the GIL held: releasing and
      // re-taking it costs more than a cross-process hop, and a Python thread of this
      // process is held up for at most kGilSpin.
      auto held = std::min(spin_ns, kGilSpin);
      if (timeout) held = std::min(held, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::duration<double>(*timeout)));
      if (held.count() > 0)
        if (auto r = m().wait_for(last, held, held)) return *r;
      spin_ns -= held;
      if (left) left = *left - std::chrono::duration<double>(held).count();
    }
    xshm::SharedMemoryManager local = m();
    std::optional<std::uint64_t> r;
    {
      py::gil_scoped_release nogil;
      r = local.wait_for(last, to_timeout(left), spin_ns, check_signals);
    }
    if (!r) throw xshm::WaitTimeoutError("no publish after sequence " + std::to_string(last) + " within " +
                                         std::to_string(*timeout) + " s");
    return *r;
  }

  std::shared_ptr<xshm::WriteTransaction> begin_write(std::optional<double> timeout) {
    xshm::SharedMemoryManager local = m();
    py::gil_scoped_release nogil;
    return std::make_shared<xshm::WriteTransaction>(local.begin_write(to_timeout(timeout), check_signals));
  }

  std::shared_ptr<xshm::LockGuard> lock(std::optional<double> timeout) {
    xshm::SharedMemoryManager local = m();
    py::gil_scoped_release nogil;
    return std::make_shared<xshm::LockGuard>(local.lock(to_timeout(timeout), check_signals));
  }

  const py::dtype& dtype_ref() const { return dtype_; }

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
  static std::vector<std::uint64_t> parse_shape(const py::object& shape) {
    std::vector<std::uint64_t> out;
    if (py::isinstance<py::int_>(shape)) {
      out.push_back(checked_extent(shape));
      return out;
    }
    if (!py::isinstance<py::sequence>(shape) || py::isinstance<py::str>(shape))
      throw py::type_error("shape must be an int or a sequence of ints");
    for (py::handle h : shape.cast<py::sequence>()) out.push_back(checked_extent(h));
    return out;
  }

  static std::uint64_t checked_extent(py::handle h) {
    if (!py::isinstance<py::int_>(h) || py::isinstance<py::bool_>(h)) throw py::type_error("shape entries must be ints");
    const auto v = h.cast<long long>();
    if (v < 0) throw xshm::ArgumentError("shape entries must be >= 0, got " + std::to_string(v));
    return static_cast<std::uint64_t>(v);
  }

  static xshm::Dtype parse_dtype(const py::object& dtype) {
    py::dtype dt = py::dtype::from_args(dtype);
    const char kind = dt.kind();
    const char order = dt.byteorder();
    if (dt.has_fields() || kind == 'O' || kind == 'V' || kind == 'S' || kind == 'U' || kind == 'M' || kind == 'm')
      throw xshm::DtypeError("unsupported dtype " + std::string(py::str(dt)) +
                             ": xshm carries bool, integers, floats and complex numbers");
    if (order == '>') throw xshm::DtypeError("big-endian dtype " + std::string(py::str(dt)) + " is not supported");
    return xshm::parse_dtype(std::string(py::str(dt.attr("name"))));
  }

  void check_shape(const py::array& a, const xshm::SharedMemoryManager& local) const {
    const auto& shape = local.shape();
    bool same = static_cast<std::size_t>(a.ndim()) == shape.size();
    for (std::size_t i = 0; same && i < shape.size(); ++i) same = static_cast<std::uint64_t>(a.shape(i)) == shape[i];
    if (!same)
      throw xshm::ArgumentError("values have shape " + std::string(py::str(a.attr("shape"))) + ", the segment holds " +
                                std::string(py::str(shape_)));
  }

  py::array as_values(const py::object& values, const xshm::SharedMemoryManager& local) const {
    py::array arr;
    if (py::isinstance<py::array>(values)) {
      arr = values.cast<py::array>();
      if (!arr.dtype().equal(dtype_)) {
        py::object can = py::module_::import("numpy").attr("can_cast")(arr.dtype(), dtype_, "same_kind");
        if (!can.cast<bool>())
          throw py::type_error("values of dtype " + std::string(py::str(arr.dtype())) + " cannot be stored as " +
                               std::string(py::str(dtype_)) + " without changing their kind");
        arr = py::array::ensure(arr.attr("astype")(dtype_), py::array::c_style);
      } else if (!(arr.flags() & py::array::c_style)) {
        arr = py::array::ensure(arr, py::array::c_style);
      }
    } else {
      arr = py::module_::import("numpy").attr("ascontiguousarray")(values, dtype_);
    }
    check_shape(arr, local);
    return arr;
  }

  py::object read_to(const xshm::SharedMemoryManager& local, void* data, py::object values) const {
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
    return make_snapshot(info, std::move(values), decode_message(buf, len, policy_));
  }

  xshm::SharedMemoryManager m_;
  DecodePolicy policy_;
  std::vector<Py_intptr_t> dims_;
  py::dtype dtype_;
  py::tuple shape_;
  py::object view_;
};

/// `with m.write() as rec:`; publishes on a clean exit, publishes nothing when the block raises.
class WriteBlock {
 public:
  WriteBlock(Manager& m, std::optional<double> timeout) : m_(m), timeout_(timeout) {}
  Record enter() {
    if (rec_) throw xshm::ArgumentError("this write block is already active");
    auto tx = m_.begin_write(timeout_);
    const auto& shape = m_.m().shape();
    py::array values = make_view(m_.dtype_ref(), shape, tx->values(), tx, true);
    rec_.emplace(tx, values);
    return *rec_;
  }
  bool exit(const py::object& exc_type, const py::object&, const py::object&) {
    if (!rec_) return false;
    Record rec = std::move(*rec_);
    rec_.reset();
    if (exc_type.is_none()) {
      seq_ = rec.tx().commit();
    } else {
      rec.tx().abort();
    }
    return false;
  }
  std::optional<std::uint64_t> seq() const { return seq_; }

 private:
  Manager& m_;
  std::optional<double> timeout_;
  std::optional<Record> rec_;
  std::optional<std::uint64_t> seq_;
};

/// `with m.lock():` the writer mutex for the caller's own critical section.
class LockBlock {
 public:
  LockBlock(Manager& m, std::optional<double> timeout) : m_(m), timeout_(timeout) {}
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
  std::optional<double> timeout_;
  std::shared_ptr<xshm::LockGuard> guard_;
};

// ---- fast entry points for the hot methods ----
// read, read_into, publish, wait and seq are called in tight loops; pybind11's dispatcher and
// keyword machinery cost 0.2 to 1.5 us per call there. These METH_FASTCALL functions parse
// their few arguments directly and call the same Manager methods; they replace the pybind11
// attributes of the class (see PYBIND11_MODULE). Errors go through the same translator.

Manager* self_of(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<Manager*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<Manager&>();
}

template <class F>
PyObject* guarded(F&& f) noexcept {
  try {
    return f().release().ptr();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (py::builtin_exception& e) {
    e.set_error();
  } catch (...) {
    try {
      translate(std::current_exception());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  }
  return nullptr;
}

/// The parameter names of one fast method, interned once: keyword names arrive interned, so
/// matching them is a pointer comparison (a string comparison only for unusual callers).
template <std::size_t N>
struct ArgSpec {
  const char* fname;
  std::array<const char*, N> names;
  std::size_t required;
  std::array<PyObject*, N> interned{};  // immortal for the life of the module

  ArgSpec(const char* f, std::array<const char*, N> n, std::size_t req) : fname(f), names(n), required(req) {
    for (std::size_t i = 0; i < N; ++i) {
      interned[i] = PyUnicode_InternFromString(names[i]);
      if (interned[i] == nullptr) throw py::error_already_set();
    }
  }

  Py_ssize_t index_of(PyObject* key) const {
    for (std::size_t i = 0; i < N; ++i)
      if (key == interned[i]) return static_cast<Py_ssize_t>(i);
    for (std::size_t i = 0; i < N; ++i)
      if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
        return static_cast<Py_ssize_t>(i);
    return -1;
  }

  /// Positional then keyword arguments into `out` (borrowed; nullptr when not given).
  void parse(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** out) const {
    constexpr auto n = static_cast<Py_ssize_t>(N);
    if (nargs > n) throw py::type_error(std::string(fname) + "() takes at most " + std::to_string(n) + " arguments");
    for (Py_ssize_t i = 0; i < n; ++i) out[i] = i < nargs ? args[i] : nullptr;
    const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; ++k) {
      PyObject* key = PyTuple_GET_ITEM(kwnames, k);
      const Py_ssize_t idx = index_of(key);
      if (idx < 0)
        throw py::type_error(std::string(fname) + "() got an unexpected keyword argument '" +
                             std::string(py::str(key)) + "'");
      if (out[idx] != nullptr)
        throw py::type_error(std::string(fname) + "() got multiple values for argument '" + names[idx] + "'");
      out[idx] = args[nargs + k];
    }
    for (std::size_t i = 0; i < required; ++i)
      if (out[i] == nullptr)
        throw py::type_error(std::string(fname) + "() missing required argument '" + names[i] + "'");
  }
};

std::uint64_t as_u64(PyObject* o, const char* what) {
  if (!PyLong_Check(o)) throw py::type_error(std::string(what) + " must be an int");
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

std::optional<double> as_opt_seconds(PyObject* o, const char* what) {
  if (o == nullptr || o == Py_None) return std::nullopt;
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(what) + " must be a number of seconds or None");
  }
  return v;
}

PyObject* fast_read(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<0> spec("read", {}, 0);
    spec.parse(args, nargs, kwnames, nullptr);
    return self_of(self)->read();
  });
}

PyObject* fast_read_into(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<1> spec("read_into", {"out"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    return self_of(self)->read_into(py::reinterpret_borrow<py::object>(a[0]));
  });
}

PyObject* fast_publish(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<4> spec("publish", {"values", "message", "counter", "truncate"}, 0);
    PyObject* a[4];
    spec.parse(args, nargs, kwnames, a);
    std::optional<std::string_view> msg;
    if (a[1] != nullptr && a[1] != Py_None) {
      if (!PyUnicode_Check(a[1])) throw py::type_error("message must be a str or None");
      Py_ssize_t len = 0;
      const char* utf8 = PyUnicode_AsUTF8AndSize(a[1], &len);  // cached in the str object
      if (utf8 == nullptr) throw py::error_already_set();
      msg = std::string_view(utf8, static_cast<std::size_t>(len));
    }
    std::optional<std::uint64_t> counter;
    if (a[2] != nullptr && a[2] != Py_None) counter = as_u64(a[2], "counter");
    bool truncate = false;
    if (a[3] != nullptr) {
      const int t = PyObject_IsTrue(a[3]);
      if (t < 0) throw py::error_already_set();
      truncate = t != 0;
    }
    py::object values = a[0] == nullptr ? py::none() : py::reinterpret_borrow<py::object>(a[0]);
    return py::int_(self_of(self)->publish(values, msg, counter, truncate));
  });
}

PyObject* fast_wait(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<3> spec("wait", {"seq", "timeout", "spin"}, 1);
    PyObject* a[3];
    spec.parse(args, nargs, kwnames, a);
    const std::uint64_t last = as_u64(a[0], "seq");
    const std::optional<double> timeout = as_opt_seconds(a[1], "timeout");
    const double spin = as_opt_seconds(a[2], "spin").value_or(0.0);
    return py::int_(self_of(self)->wait(last, timeout, spin));
  });
}

PyObject* fast_seq(PyObject* self, void*) {
  return guarded([&] { return py::int_(self_of(self)->seq()); });
}

PyMethodDef g_fast_methods[] = {
    {"read", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_read)), METH_FASTCALL | METH_KEYWORDS,
     "read($self, /)\n--\n\nA consistent snapshot (copy) of the record. Never waits for a writer."},
    {"read_into", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_read_into)),
     METH_FASTCALL | METH_KEYWORDS,
     "read_into($self, /, out)\n--\n\nCopy a consistent record's values into `out` (same dtype and shape,\n"
     "C-contiguous, writeable) without allocating; returns the Snapshot with values=out."},
    {"publish", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_publish)),
     METH_FASTCALL | METH_KEYWORDS,
     "publish($self, /, values=None, message=None, counter=None, truncate=False)\n--\n\n"
     "Write and publish in one call; a field given as None keeps its value. Returns the new\n"
     "sequence. A message longer than the slot raises MessageTooLongError unless truncate=True,\n"
     "which cuts it on a code-point boundary. While another writer holds the lock, it waits\n"
     "with the GIL released and Ctrl-C honoured."},
    {"wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_wait)), METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, seq, timeout=None, spin=0.0)\n--\n\n"
     "Block (GIL released, Ctrl-C honoured) until the sequence moves past `seq`; return the new\n"
     "one. Raises WaitTimeoutError (a TimeoutError) after `timeout` seconds. `spin`: seconds to\n"
     "poll with the CPU's pause instruction before sleeping on the futex (lower latency); the\n"
     "first 10 microseconds of it poll with the GIL held, the rest with the GIL released."},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* fast_values(PyObject* self, void*) {
  return guarded([&] { return self_of(self)->values(); });
}

PyGetSetDef g_fast_getset[] = {
    {"seq", fast_seq, nullptr, "Completed publishes; only grows; never shows one in progress.", nullptr},
    {"values", fast_values, nullptr,
     "Zero-copy, read-only numpy view of the live values. It may show a publish in\n"
     "progress (use read() for a consistent copy) and stays valid after close().",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

PYBIND11_MODULE(_core, mod, py::mod_gil_not_used()) {
  mod.doc() = "xshm's compiled core: a thin pybind11 binding over the C++ header (cpp/include/xshm).";
  py::register_exception_translator(&translate);

  mod.attr("LAYOUT_VERSION") = xshm::kLayoutVersion;
  mod.attr("MAX_NAME_BYTES") = xshm::kMaxNameBytes;

  g_snapshot_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&snapshot_spec));
  if (g_snapshot_type == nullptr) throw py::error_already_set();
  mod.attr("Snapshot") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(g_snapshot_type));
  mod.attr("Snapshot").attr("__module__") = "xshm";
  py::class_<Manager> manager_cls(mod, "SharedMemoryManager", "A handle on one xshm shared-memory segment.");
  py::class_<Record>(mod, "Record", "The record being written inside `with m.write() as rec:`.")
      .def_property_readonly("values", &Record::values, "Writable private copy of the values; published on exit.")
      .def_property("counter", &Record::counter, &Record::set_counter, "The counter to publish.")
      .def_property("message", &Record::message, &Record::set_message,
                    "The message to publish; longer than the slot raises MessageTooLongError.")
      .def("set_message", &Record::set_message_truncated, py::arg("message"),
           "Sets the message, cutting it on a code-point boundary to fit the slot.");

  py::class_<WriteBlock>(mod, "WriteBlock", "Context manager returned by SharedMemoryManager.write().")
      .def("__enter__", &WriteBlock::enter)
      .def("__exit__", &WriteBlock::exit)
      .def_property_readonly("seq", &WriteBlock::seq, "The sequence the block published, None before or on error.");

  py::class_<LockBlock>(mod, "LockBlock", "Context manager returned by SharedMemoryManager.lock().")
      .def("__enter__", &LockBlock::enter)
      .def("__exit__", &LockBlock::exit);

  manager_cls
      .def_static("create", &Manager::create, py::arg("name"), py::arg("shape") = py::make_tuple(100),
                  py::arg("dtype") = "float64", py::arg("message_capacity") = 256, py::arg("mode") = 0600,
                  py::arg("exist_ok") = false, py::arg("backup") = true, py::arg("errors") = "replace",
                  "Create a segment (exclusive; owner-only 0600 unless `mode` says otherwise; pages\n"
                  "reserved up front, so a full /dev/shm fails here with OSError(ENOSPC)).\n\n"
                  "shape/dtype: the values array (little-endian bool, ints, floats, complex).\n"
                  "exist_ok: attach to an existing segment of the same layout (LayoutError if it differs).\n"
                  "backup: keep a second copy of the record so a writer killed mid-write loses nothing\n"
                  "(False halves the copying for very large arrays; see docs/LAYOUT.md).\n"
                  "errors: how read() decodes a message that is not valid UTF-8: 'replace' (U+FFFD)\n"
                  "or 'strict' (MessageDecodeError with the offset of the first invalid byte).")
      .def_static("open", &Manager::open, py::arg("name"), py::arg("readonly") = false, py::arg("timeout") = 0.0,
                  py::arg("errors") = "replace", py::arg("stall_timeout") = py::none(),
                  "Open an existing segment, validating every header field against the mapping.\n"
                  "timeout: seconds to wait for a producer that has not created it yet.\n"
                  "errors: 'replace' or 'strict', the decode policy for invalid UTF-8 messages.\n"
                  "stall_timeout: only for segments created with backup=False: seconds a read waits\n"
                  "for a writer stuck mid-write before TornRecordError (None: 2 s + 4 ns per byte).")
      .def("close", &Manager::close, "Unmap this handle (views of it stay valid). Never unlinks.")
      .def("unlink", &Manager::unlink, "Remove the segment's name, if it still names this segment.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Manager& m, const py::object&, const py::object&, const py::object&) {
        m.close();
        return false;
      })
      .def_property_readonly("closed", &Manager::closed, "True after close().")
      .def_property_readonly("name", &Manager::name, "The canonical name, with its leading '/'.")
      .def_property_readonly("shape", &Manager::shape, "Shape of the values array.")
      .def_property_readonly("dtype", &Manager::dtype, "numpy dtype of the values array.")
      .def_property_readonly("message_capacity", &Manager::message_capacity, "Bytes of the message slot.")
      .def_property_readonly("readonly", &Manager::readonly, "True when opened with readonly=True.")
      .def_property_readonly("backup", &Manager::backup, "True when the segment keeps a backup record.")
      .def_property_readonly("errors", &Manager::errors, "The message decode policy: 'replace' or 'strict'.")
      .def_property_readonly("nbytes", &Manager::nbytes, "Size of the segment in bytes.")
      .def_property_readonly("recoveries", &Manager::recoveries, "Times a writer recovered after a writer died mid-write.")
      .def_property_readonly("owner_pid", &Manager::owner_pid, "Pid holding the writer mutex, 0 when none.")
      .def("header", &Manager::header,
           "The header's fields as a dict (layout, creation id and time, seq, epoch, waiters,\n"
           "owner_pid, recoveries), read without taking any lock. For tools such as xshm inspect.")
      .def(
          "write", [](Manager& m, std::optional<double> timeout) { return WriteBlock(m, timeout); },
          py::arg("timeout") = py::none(), py::keep_alive<0, 1>(),
          "`with m.write() as rec:` takes the writer mutex and gives a private copy of the record\n"
          "(rec.values, rec.counter, rec.message); leaving the block publishes it. If the block\n"
          "raises, nothing is published and the mutex is released.")
      .def(
          "lock", [](Manager& m, std::optional<double> timeout) { return LockBlock(m, timeout); },
          py::arg("timeout") = py::none(), py::keep_alive<0, 1>(),
          "`with m.lock():` holds the process-shared writer mutex for your own critical section.")
      .def("__repr__", &Manager::repr);

  // The hot methods: METH_FASTCALL descriptors on the same class (see fast_read & co).
  auto* manager_type = reinterpret_cast<PyTypeObject*>(manager_cls.ptr());
  for (PyMethodDef* def = g_fast_methods; def->ml_name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewMethod(manager_type, def);
    if (descr == nullptr) throw py::error_already_set();
    manager_cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(descr);
  }
  for (PyGetSetDef* def = g_fast_getset; def->name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewGetSet(manager_type, def);
    if (descr == nullptr) throw py::error_already_set();
    manager_cls.attr(def->name) = py::reinterpret_steal<py::object>(descr);
  }

  mod.def(
      "unlink", [](const std::string& name, bool force) { xshm::unlink(name, force); }, py::arg("name"),
      py::arg("force") = false, "Remove a segment name; refuses a non-xshm segment unless force=True.");
  mod.def("normalize_name", &xshm::normalize_name, py::arg("name"),
          "The canonical form of a segment name (one leading '/'); raises ArgumentError for bad names.");
}
