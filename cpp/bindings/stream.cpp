// The definitions behind stream.hpp (what it binds and why is said there).
#include "stream.hpp"

#include <structmember.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include <xshm/seqlock.hpp>
#include <xshm/stream_layout.hpp>

#include "errors.hpp"
#include "fastcall.hpp"
#include "waits.hpp"

namespace xshm_py {

PyTypeObject* g_message_type = nullptr;

namespace {

/// Sends of fewer bytes than this are tried with the GIL held; larger ones copy without it.
constexpr std::size_t kGilBytes = 64 * 1024;

// ---- xshm.Message ----

void message_dealloc(PyObject* self) {
  Py_XDECREF(reinterpret_cast<MessageObject*>(self)->data);
  PyTypeObject* tp = Py_TYPE(self);
  tp->tp_free(self);
  Py_DECREF(tp);
}

PyObject* message_repr(PyObject* self) {
  auto* m = reinterpret_cast<MessageObject*>(self);
  return PyUnicode_FromFormat("<xshm.Message seq=%llu writer_pid=%llu data=%R>", m->seq, m->writer_pid,
                              m->data);
}

PyObject* message_timestamp(PyObject* self, void*) {
  return PyFloat_FromDouble(static_cast<double>(reinterpret_cast<MessageObject*>(self)->timestamp_ns) / 1e9);
}

PyMemberDef message_members[] = {
    {"data", T_OBJECT_EX, offsetof(MessageObject, data), READONLY,
     "The payload: bytes, or a numpy array (a private copy) for a frame stream."},
    {"seq", T_ULONGLONG, offsetof(MessageObject, seq), READONLY,
     "Its sequence number: one total order per stream, from 0."},
    {"timestamp_ns", T_LONGLONG, offsetof(MessageObject, timestamp_ns), READONLY,
     "Wall-clock time it was sent, ns since the epoch."},
    {"writer_pid", T_ULONGLONG, offsetof(MessageObject, writer_pid), READONLY,
     "Pid of the process that sent it."},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef message_getset[] = {
    {"timestamp", message_timestamp, nullptr, "Wall-clock time it was sent, seconds since the epoch.",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot message_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(message_dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(message_repr)},
    {Py_tp_members, message_members},
    {Py_tp_getset, message_getset},
    {Py_tp_doc, const_cast<char*>("One message received from a stream (a copy).")},
    {0, nullptr},
};

PyType_Spec message_spec = {"xshm.Message", sizeof(MessageObject), 0, Py_TPFLAGS_DEFAULT, message_slots};

py::object make_message(py::object data, const xshm::MessageInfo& info) {
  PyObject* o = g_message_type->tp_alloc(g_message_type, 0);
  if (o == nullptr) throw py::error_already_set();
  auto* m = reinterpret_cast<MessageObject*>(o);
  m->data = data.release().ptr();
  m->seq = info.seq;
  m->timestamp_ns = info.timestamp_ns;
  m->writer_pid = info.writer_pid;
  return py::reinterpret_steal<py::object>(o);
}

// ---- arguments in xshm's words ----

std::uint64_t count_arg(const py::handle& o, const char* what) {
  if (!PyLong_Check(o.ptr()) || PyBool_Check(o.ptr()))
    throw py::type_error(std::string(what) + " must be an int, got " + Py_TYPE(o.ptr())->tp_name);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  if (overflow != 0 || v < 0)
    throw xshm::ArgumentError(std::string(what) + " must be an int from 0 to 2**63-1, got " +
                              std::string(py::str(o)));
  return static_cast<std::uint64_t>(v);
}

std::optional<double> seconds_arg(PyObject* o, const char* what) {
  if (o == nullptr || o == Py_None) return std::nullopt;
  if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o)))
    throw py::type_error(std::string(what) + " must be a number of seconds or None, got " +
                         Py_TYPE(o)->tp_name);
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

xshm::Backpressure backpressure_arg(const py::handle& o) {
  if (!py::isinstance<py::str>(o)) throw py::type_error("backpressure must be 'block' or 'drop_oldest'");
  const std::string v = py::str(o);
  if (v == "block") return xshm::Backpressure::block;
  if (v == "drop_oldest") return xshm::Backpressure::drop_oldest;
  throw xshm::ArgumentError("backpressure must be 'block' or 'drop_oldest', got '" + v + "'");
}

const char* backpressure_name(xshm::Backpressure b) {
  return b == xshm::Backpressure::block ? "block" : "drop_oldest";
}

/// A frame's dtype as the core's code; the same rules as a record's values.
xshm::Dtype frame_dtype(const py::object& dtype) {
  py::dtype dt = py::dtype::from_args(dtype);
  const char kind = dt.kind();
  if (dt.has_fields() || (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f' && kind != 'c'))
    throw xshm::DtypeError("unsupported dtype " + std::string(py::str(dt)) +
                           ": a frame holds bool, integers, floats or complex numbers");
  if (dt.byteorder() == '>')
    throw xshm::DtypeError("big-endian dtype " + std::string(py::str(dt)) + " is not supported");
  return xshm::parse_dtype(std::string(py::str(dt.attr("name"))));
}

std::vector<std::uint64_t> frame_shape(const py::object& shape) {
  std::vector<std::uint64_t> out;
  if (shape.is_none()) return out;
  if (PyLong_Check(shape.ptr())) {
    out.push_back(count_arg(shape, "shape"));
    return out;
  }
  if (!py::isinstance<py::sequence>(shape) || py::isinstance<py::str>(shape))
    throw py::type_error("shape must be an int or a sequence of ints");
  for (py::handle h : shape.cast<py::sequence>()) out.push_back(count_arg(h, "shape entries"));
  return out;
}

Frame frame_of(const xshm::StreamGeometry& g) {
  Frame f;
  f.dtype = py::none();
  if (g.dtype != 0) {
    f.dtype = py::dtype(xshm::dtype_info(static_cast<xshm::Dtype>(g.dtype)).name);
    f.dims.assign(g.shape.begin(), g.shape.end());
  }
  return f;
}

py::object shape_tuple(const Frame& f) {
  if (!f.is_frame()) return py::none();
  py::tuple t(f.dims.size());
  for (std::size_t i = 0; i < f.dims.size(); ++i) t[i] = py::int_(f.dims[i]);
  return std::move(t);
}

// ---- sending ----

/// The bytes of one message to send, and what keeps them alive.
struct Payload {
  const void* ptr = nullptr;
  std::size_t len = 0;
  Py_buffer view{};
  bool has_view = false;
  py::object keep;
  Payload() = default;
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;
  ~Payload() {
    if (has_view) PyBuffer_Release(&view);
  }
};

void payload_of(PyStream& ps, PyObject* data, Payload& p) {
  const Frame& f = ps.frame();
  if (f.is_frame()) {
    auto& api = py::detail::npy_api::get();
    if (!api.PyArray_Check_(data))
      throw py::type_error(std::string("a frame stream sends numpy arrays of dtype ") +
                           std::string(py::str(f.dtype)) + " and shape " +
                           std::string(py::str(shape_tuple(f))) + ", got " + Py_TYPE(data)->tp_name);
    auto* a = py::detail::array_proxy(data);
    if (a->descr != f.dtype.ptr() && !api.PyArray_EquivTypes_(a->descr, f.dtype.ptr()))
      throw xshm::DtypeError("the frame has dtype " + std::string(py::str(py::handle(data).attr("dtype"))) +
                             ", the stream carries " + std::string(py::str(f.dtype)));
    bool same = a->nd == static_cast<int>(f.dims.size());
    for (std::size_t i = 0; same && i < f.dims.size(); ++i) same = a->dimensions[i] == f.dims[i];
    if (!same)
      throw xshm::ArgumentError("the frame has shape " +
                                std::string(py::str(py::handle(data).attr("shape"))) +
                                ", the stream carries " + std::string(py::str(shape_tuple(f))));
    py::array arr = py::reinterpret_borrow<py::array>(data);
    if (!(a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
      arr = py::module_::import("numpy").attr("ascontiguousarray")(arr);
    p.keep = arr;
    p.ptr = arr.data();
    p.len = static_cast<std::size_t>(arr.nbytes());
    return;
  }
  if (PyBytes_Check(data)) {
    p.ptr = PyBytes_AS_STRING(data);
    p.len = static_cast<std::size_t>(PyBytes_GET_SIZE(data));
    return;
  }
  if (PyUnicode_Check(data))
    throw py::type_error("send takes bytes-like data, not str: encode it first (text.encode())");
  if (PyObject_GetBuffer(data, &p.view, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    throw py::type_error(
        std::string("send takes bytes-like data (bytes, bytearray, memoryview, a C-contiguous "
                    "numpy array), got ") +
        Py_TYPE(data)->tp_name);
  }
  p.has_view = true;
  p.ptr = p.view.buf;
  p.len = static_cast<std::size_t>(p.view.len);
}

/// One or more payloads: tried once with the GIL held (small copies, nothing to wait for),
/// then with it released, waiting up to `timeout`. Returns the sequence of the last.
std::uint64_t send_payloads(PyStream& ps, const std::pair<const void*, std::size_t>* items, std::size_t n,
                            std::size_t total, std::optional<double> timeout) {
  const xshm::Timeout limit = timeout_arg(timeout);
  xshm::Stream& st = ps.s();
  std::size_t done = 0;
  std::uint64_t last = 0;
  xshm::Stream::Sent r = xshm::Stream::Sent::full;
  if (total < kGilBytes) {
    r = st.send_some(items, n, std::chrono::nanoseconds{0}, xshm::NoHook{}, done, last);
    if (r == xshm::Stream::Sent::all) return last;
    if (limit && limit->count() == 0) xshm::Stream::throw_full(*st.segment(), done, r);
  }
  xshm::Stream local = st;  // the GIL goes: another thread may close `st`
  std::size_t more = 0;
  {
    py::gil_scoped_release nogil;
    r = local.send_some(items + done, n - done, limit, check_signals, more, last);
  }
  if (r != xshm::Stream::Sent::all) xshm::Stream::throw_full(*local.segment(), done + more, r);
  return last;
}

// ---- receiving ----

/// Builds the Python payload straight from the slot (GIL held). Runs again if the slot was
/// overwritten meanwhile; only the last run counts.
struct PySink {
  const Frame& frame;
  py::object data;
  xshm::MessageInfo info;
  void operator()(const unsigned char* src, const xshm::MessageInfo& i) {
    info = i;
    const auto n = static_cast<std::size_t>(i.size);
    if (!frame.is_frame()) {
      if (!data || static_cast<std::size_t>(PyBytes_GET_SIZE(data.ptr())) != n) {
        PyObject* b = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
        if (b == nullptr) throw py::error_already_set();
        data = py::reinterpret_steal<py::object>(b);
      }
      if (n != 0) xshm::seqlock::load_bytes(PyBytes_AS_STRING(data.ptr()), src, n);
      return;
    }
    if (!data) data = py::array(py::dtype::from_args(frame.dtype), frame.dims);
    auto* a = py::detail::array_proxy(data.ptr());
    const std::size_t cap = static_cast<std::size_t>(py::reinterpret_borrow<py::array>(data).nbytes());
    // A frame stream's messages are frames; a foreign writer's short one is zero-filled.
    xshm::seqlock::load_bytes(a->data, src, std::min(n, cap));
    if (n < cap) std::memset(a->data + n, 0, cap - n);
  }
};

py::object payload_from_buffer(const Frame& f, const std::vector<unsigned char>& buf, std::size_t n) {
  if (!f.is_frame()) return py::bytes(reinterpret_cast<const char*>(buf.data()), n);
  py::array a(py::dtype::from_args(f.dtype), f.dims);
  const auto cap = static_cast<std::size_t>(a.nbytes());
  std::memcpy(a.mutable_data(), buf.data(), std::min(n, cap));
  if (n < cap) std::memset(static_cast<char*>(a.mutable_data()) + n, 0, cap - n);
  return std::move(a);
}

/// One message, or None when `timeout` passed (recv raises instead).
py::object receive(PyReader& pr, std::optional<double> timeout, double spin) {
  if (pr.busy)
    throw py::value_error("this StreamReader is receiving in another thread; use one reader per thread");
  xshm::StreamReader& r = pr.r();
  PySink sink{pr.frame(), py::object(), {}};
  if (r.try_visit(sink)) return make_message(std::move(sink.data), sink.info);
  const xshm::Timeout limit = timeout_arg(timeout);
  if (!(spin >= 0)) throw xshm::ArgumentError("spin must be >= 0");
  if (limit && limit->count() == 0) return py::none();
  const auto spin_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(spin));
  std::vector<unsigned char>& buf = pr.buf();
  xshm::MessageInfo info;
  bool got = false;
  pr.busy = true;
  try {
    py::gil_scoped_release nogil;
    got = r.visit(
        [&](const unsigned char* src, const xshm::MessageInfo& i) {
          info = i;
          xshm::seqlock::load_bytes(buf.data(), src, static_cast<std::size_t>(i.size));
        },
        limit, spin_ns, check_signals);
  } catch (...) {
    pr.busy = false;
    throw;
  }
  pr.busy = false;
  if (!got) return py::none();
  return make_message(payload_from_buffer(pr.frame(), buf, static_cast<std::size_t>(info.size)), info);
}

[[noreturn]] void raise_no_message(const PyReader& pr, std::optional<double> timeout) {
  throw xshm::WaitTimeoutError("no message on stream " + pr.name() + " within " +
                               (timeout ? std::to_string(*timeout) + " s" : std::string("the timeout")));
}

// ---- fast entry points ----

template <class T>
T* self_as(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<T*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<T&>();
}

PyObject* fast_send(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("send", {"data", "timeout"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = *self_as<PyStream>(self);
    Payload p;
    payload_of(ps, a[0], p);
    const std::pair<const void*, std::size_t> one{p.ptr, p.len};
    return py::int_(send_payloads(ps, &one, 1, p.len, seconds_arg(a[1], "timeout")));
  });
}

PyObject* fast_try_send(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("try_send", {"data"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = *self_as<PyStream>(self);
    Payload p;
    payload_of(ps, a[0], p);
    return py::bool_(ps.s().try_send(p.ptr, p.len).has_value());
  });
}

PyObject* fast_recv(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("recv", {"timeout", "spin"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyReader& pr = *self_as<PyReader>(self);
    const std::optional<double> timeout = seconds_arg(a[0], "timeout");
    py::object m = receive(pr, timeout, seconds_arg(a[1], "spin").value_or(0.0));
    if (m.is_none()) raise_no_message(pr, timeout);
    return m;
  });
}

PyObject* fast_try_recv(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<0> spec("try_recv", {}, 0);
    spec.parse(args, nargs, kwnames, nullptr);
    PyReader& pr = *self_as<PyReader>(self);
    PySink sink{pr.frame(), py::object(), {}};
    if (pr.busy)
      throw py::value_error("this StreamReader is receiving in another thread; use one reader per thread");
    if (!pr.r().try_visit(sink)) return py::none();
    return make_message(std::move(sink.data), sink.info);
  });
}

PyObject* reader_next(PyObject* self) {
  return guarded([&]() -> py::object {
    PyReader& pr = *self_as<PyReader>(self);
    if (pr.closed()) throw py::stop_iteration();
    return receive(pr, std::nullopt, 0.0);
  });
}

PyObject* reader_next_method(PyObject* self, PyObject*) { return reader_next(self); }

PyMethodDef g_stream_fast[] = {
    {"send", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_send)),
     METH_FASTCALL | METH_KEYWORDS,
     "send($self, /, data, timeout=None)\n--\n\n"
     "Send one message (bytes-like, or for a frame stream a numpy array of its dtype and shape);\n"
     "return its sequence number. Under 'block', waits (GIL released, Ctrl-C honoured) while the\n"
     "slowest reader is a full ring behind, up to `timeout` seconds (None: forever), then raises\n"
     "StreamFullError (a TimeoutError). A message longer than max_bytes raises MessageTooLongError."},
    {"try_send", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_try_send)),
     METH_FASTCALL | METH_KEYWORDS,
     "try_send($self, /, data)\n--\n\nSend if there is room now; False (nothing sent) when a 'block' stream "
     "is full."},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef g_reader_fast[] = {
    {"recv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_recv)),
     METH_FASTCALL | METH_KEYWORDS,
     "recv($self, /, timeout=None, spin=0.0)\n--\n\n"
     "The next message (a Message: data, seq, timestamp_ns, writer_pid). Waits on a futex with the\n"
     "GIL released (Ctrl-C honoured) up to `timeout` seconds (None: forever), then raises\n"
     "WaitTimeoutError. `spin`: seconds to poll before sleeping (a few microseconds always are)."},
    {"try_recv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_try_recv)),
     METH_FASTCALL | METH_KEYWORDS, "try_recv($self, /)\n--\n\nThe next message if one is there, else None."},
    {"__next__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(reader_next_method)),
     METH_NOARGS, "__next__($self, /)\n--\n\nThe next message, waiting as long as it takes (recv())."},
    {nullptr, nullptr, 0, nullptr},
};

template <class T>
void install_fast(py::class_<T>& cls, PyMethodDef* defs) {
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  for (PyMethodDef* def = defs; def->ml_name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewMethod(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(descr);
  }
}

// ---- the classes' other methods ----

std::unique_ptr<PyStream> create_stream(const std::string& name, const py::object& capacity,
                                        const py::object& max_bytes, const py::object& dtype,
                                        const py::object& shape, const py::object& backpressure,
                                        const py::object& max_readers, const py::object& mode,
                                        bool exist_ok) {
  xshm::StreamOptions o;
  o.capacity = count_arg(capacity, "capacity");
  o.backpressure = backpressure_arg(backpressure);
  o.max_readers =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(count_arg(max_readers, "max_readers"), UINT32_MAX));
  const std::uint64_t m = count_arg(mode, "mode");
  if (m > 0777) throw xshm::ArgumentError("mode must be a permission mask (at most 0o777)");
  o.mode = static_cast<mode_t>(m);
  o.exist_ok = exist_ok;
  if (!dtype.is_none()) {
    o.dtype = frame_dtype(dtype);
    o.shape = frame_shape(shape);
    std::uint64_t bytes = xshm::dtype_info(*o.dtype).itemsize;
    for (std::uint64_t e : o.shape)
      bytes = e == 0 ? 0 : (bytes > xshm::kMaxMessageBytes / e ? UINT64_MAX : bytes * e);
    if (!max_bytes.is_none() && count_arg(max_bytes, "max_bytes") != bytes)
      throw xshm::ArgumentError("max_bytes " + std::string(py::str(max_bytes)) +
                                " does not match the frame (" + std::to_string(bytes) +
                                " bytes of dtype and shape); leave it None");
    o.max_bytes = bytes;
  } else {
    if (!shape.is_none())
      throw xshm::ArgumentError("shape needs a dtype: Stream.create(..., dtype=..., shape=...)");
    if (!max_bytes.is_none()) o.max_bytes = count_arg(max_bytes, "max_bytes");
  }
  xshm::Stream s;
  {
    py::gil_scoped_release nogil;
    s = xshm::Stream::create(name, o);
  }
  Frame f = frame_of(s.geometry());
  return std::make_unique<PyStream>(std::move(s), std::move(f));
}

std::unique_ptr<PyStream> open_stream(const std::string& name, bool readonly, const py::object& timeout) {
  xshm::StreamOpenOptions o;
  o.readonly = readonly;
  const std::optional<double> t = seconds_arg(timeout.ptr(), "timeout");
  if (t && !(*t >= 0)) throw xshm::ArgumentError("timeout must be >= 0 or None");
  o.timeout = t ? xshm::from_seconds(*t) : xshm::Timeout{};
  xshm::Stream s;
  {
    py::gil_scoped_release nogil;
    s = xshm::Stream::open(name, o);
  }
  Frame f = frame_of(s.geometry());
  return std::make_unique<PyStream>(std::move(s), std::move(f));
}

std::string stream_repr(PyStream& ps) {
  if (ps.closed()) return "<xshm.Stream (closed)>";
  xshm::Stream& s = ps.s();
  std::string what = ps.frame().is_frame() ? "frames " + std::string(py::str(ps.frame().dtype)) +
                                                 std::string(py::str(shape_tuple(ps.frame())))
                                           : "max_bytes=" + std::to_string(s.max_bytes());
  return "<xshm.Stream " + s.name() + " capacity=" + std::to_string(s.capacity()) + " " + what + " " +
         backpressure_name(s.backpressure()) + " head=" + std::to_string(s.head()) + ">";
}

py::list readers_info(PyStream& ps) {
  xshm::Stream& s = ps.s();
  const auto seg = s.segment();
  py::list out;
  const std::uint64_t head = s.head();
  for (std::uint32_t i = 0; i < s.max_readers(); ++i) {
    const xshm::ReaderEntry* r = seg->reader(i);
    const std::uint64_t st = r->state.load(std::memory_order_acquire);
    if (st == 0) continue;
    py::dict d;
    const std::uint64_t cursor = r->cursor.load(std::memory_order_acquire);
    d["index"] = i;
    d["pid"] = r->pid.load(std::memory_order_relaxed);
    d["cursor"] = cursor;
    d["lag"] = head > cursor ? head - cursor : 0;
    d["lost"] = r->lost.load(std::memory_order_relaxed);
    d["received"] = r->received.load(std::memory_order_relaxed);
    d["attached_ns"] = r->attached_ns.load(std::memory_order_relaxed);
    d["alive"] = xshm::stream_impl::reader_alive(*seg, i);
    out.append(d);
  }
  return out;
}

py::dict header_info(PyStream& ps) {
  xshm::Stream& s = ps.s();
  const xshm::StreamHeader* h = s.header();
  py::dict d;
  d["layout_version"] = h->layout_version;
  d["kind"] = "stream";
  d["total_size"] = h->total_size;
  d["capacity"] = h->capacity;
  d["max_bytes"] = h->max_bytes;
  d["slot_size"] = h->slot_size;
  d["max_readers"] = h->max_readers;
  d["max_writers"] = h->max_writers;
  d["backpressure"] = backpressure_name(s.backpressure());
  d["created_ns"] = h->created_ns;
  d["creator_pid"] = h->creator_pid;
  d["head"] = h->head.load(std::memory_order_acquire);
  d["dropped"] = h->dropped.load(std::memory_order_relaxed);
  d["abandoned"] = h->abandoned.load(std::memory_order_relaxed);
  d["reaped"] = h->reaped.load(std::memory_order_relaxed);
  d["recoveries"] = h->recoveries.load(std::memory_order_relaxed);
  d["owner_pid"] = h->owner_pid.load(std::memory_order_relaxed);
  d["data_waiters"] = h->data_waiters.load(std::memory_order_relaxed);
  d["space_waiters"] = h->space_waiters.load(std::memory_order_relaxed);
  return d;
}

}  // namespace

void register_stream(py::module_& mod) {
  g_message_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&message_spec));
  if (g_message_type == nullptr) throw py::error_already_set();
  mod.attr("Message") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(g_message_type));
  mod.attr("Message").attr("__module__") = "xshm";

  py::class_<PyReader> reader_cls(
      mod, "StreamReader",
      "One reader of a stream: its own cursor, every message in order from where it "
      "started. Made by Stream.reader().");
  reader_cls
      .def(
          "recv_many",
          [](PyReader& pr, const py::object& max_n, const py::object& timeout) {
            const std::uint64_t n = count_arg(max_n, "max_n");
            py::list out;
            if (n == 0) return out;
            const std::optional<double> t = seconds_arg(timeout.ptr(), "timeout");
            py::object first = receive(pr, t, 0.0);
            if (first.is_none()) return out;
            out.append(first);
            while (out.size() < n) {
              PySink sink{pr.frame(), py::object(), {}};
              if (!pr.r().try_visit(sink)) break;
              out.append(make_message(std::move(sink.data), sink.info));
            }
            return out;
          },
          py::arg("max_n"), py::arg("timeout") = py::none(),
          "Wait up to `timeout` for one message, then take every message already there, up to\n"
          "`max_n`; a list (empty when the timeout passed).")
      .def(
          "close",
          [](PyReader& pr) {
            if (!pr.closed()) pr.r().close();
          },
          "Detach: a 'block' writer stops waiting for this reader. Idempotent.")
      .def_property_readonly("closed", &PyReader::closed, "True after close().")
      .def_property_readonly(
          "lost", [](PyReader& pr) { return pr.r().lost(); },
          "Messages this reader skipped: overwritten before it got to them ('drop_oldest'),\n"
          "or abandoned by a writer that died between its claim and its commit.")
      .def_property_readonly(
          "lag", [](PyReader& pr) { return pr.r().lag(); },
          "Messages sent (or being sent) that this reader has not taken yet.")
      .def_property_readonly(
          "received", [](PyReader& pr) { return pr.r().received(); }, "Messages this reader has taken.")
      .def_property_readonly(
          "cursor", [](PyReader& pr) { return pr.r().cursor(); },
          "The sequence number of the next message it takes.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyReader& pr, const py::object&, const py::object&, const py::object&) {
             if (!pr.closed()) pr.r().close();
             return false;
           })
      .def("__iter__", [](py::object self) { return self; })
      .def("__repr__", [](PyReader& pr) {
        if (pr.closed()) return std::string("<xshm.StreamReader (closed)>");
        return "<xshm.StreamReader " + pr.name() + " cursor=" + std::to_string(pr.r().cursor()) +
               " lag=" + std::to_string(pr.r().lag()) + " lost=" + std::to_string(pr.r().lost()) + ">";
      });
  install_fast(reader_cls, g_reader_fast);
  reinterpret_cast<PyTypeObject*>(reader_cls.ptr())->tp_iternext = reader_next;

  py::class_<PyStream> cls(mod, "Stream",
                           "A stream: every message, in order, through a ring in shared memory. Any number\n"
                           "of writers and readers (each reader has its own cursor).");
  cls.def_static("create", &create_stream, py::arg("name"), py::arg("capacity"),
                 py::arg("max_bytes") = py::none(), py::arg("dtype") = py::none(),
                 py::arg("shape") = py::none(), py::arg("backpressure") = "block",
                 py::arg("max_readers") = 16, py::arg("mode") = 0600, py::arg("exist_ok") = false,
                 "Create a stream of `capacity` messages (exclusive; owner-only 0600 unless `mode`\n"
                 "says otherwise; pages reserved up front).\n\n"
                 "max_bytes: the largest message in bytes (default 1024). dtype/shape: a frame stream,\n"
                 "whose messages are numpy arrays of that dtype and shape (max_bytes follows).\n"
                 "backpressure: 'block' (writers wait while the slowest reader is a full ring behind;\n"
                 "with no reader attached nothing waits: the last `capacity` messages are kept and what\n"
                 "is overwritten counts in `dropped`) or 'drop_oldest' (writers never wait; a lapped\n"
                 "reader counts what it lost).\n"
                 "exist_ok: attach to an existing stream of the same layout (LayoutError if it differs).")
      .def_static("open", &open_stream, py::arg("name"), py::arg("readonly") = false, py::arg("timeout") = 0,
                  "Open an existing stream, validating every header field against the mapping.\n"
                  "readonly: may receive, may not send. timeout: seconds to wait for it to appear.")
      .def(
          "reader",
          [](PyStream& ps, const py::object& start) {
            if (!py::isinstance<py::str>(start)) throw py::type_error("start must be 'oldest' or 'latest'");
            const std::string v = py::str(start);
            if (v != "oldest" && v != "latest")
              throw xshm::ArgumentError("start must be 'oldest' or 'latest', got '" + v + "'");
            xshm::Stream& s = ps.s();
            xshm::StreamReader r;
            {
              py::gil_scoped_release nogil;
              r = s.reader(v == "oldest" ? xshm::Start::oldest : xshm::Start::latest);
            }
            return PyReader(std::move(r), ps.frame(), s.name(), s.max_bytes());
          },
          py::arg("start") = "oldest",
          "Attach a new reader with its own cursor: at the oldest message the ring still holds,\n"
          "or at the next one sent ('latest'). Under 'block' it gates writers until closed.")
      .def(
          "send_many",
          [](PyStream& ps, const py::iterable& items, const py::object& timeout) {
            std::deque<Payload> keep;
            std::vector<std::pair<const void*, std::size_t>> parts;
            std::size_t total = 0;
            for (py::handle h : items) {
              Payload& p = keep.emplace_back();
              payload_of(ps, h.ptr(), p);
              parts.emplace_back(p.ptr, p.len);
              total += p.len;
            }
            if (parts.empty()) throw xshm::ArgumentError("send_many: no messages");
            return send_payloads(ps, parts.data(), parts.size(), total,
                                 seconds_arg(timeout.ptr(), "timeout"));
          },
          py::arg("items"), py::arg("timeout") = py::none(),
          "Send every item in order, claiming as many slots at once as there is room for; returns\n"
          "the sequence number of the last. On timeout, StreamFullError says how many were sent.")
      .def("close", &PyStream::close, "Unmap this handle (its readers keep the mapping). Never unlinks.")
      .def(
          "unlink", [](PyStream& ps) { ps.s().unlink(); },
          "Remove the stream's name, if it still names this stream.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyStream& ps, const py::object&, const py::object&, const py::object&) {
             ps.close();
             return false;
           })
      .def_property_readonly("closed", &PyStream::closed, "True after close().")
      .def_property_readonly(
          "name", [](PyStream& ps) { return ps.s().name(); }, "The canonical name, with its '/'.")
      .def_property_readonly(
          "capacity", [](PyStream& ps) { return ps.s().capacity(); }, "Messages the ring holds.")
      .def_property_readonly(
          "max_bytes", [](PyStream& ps) { return ps.s().max_bytes(); }, "The largest message, in bytes.")
      .def_property_readonly(
          "dtype", [](PyStream& ps) { return ps.s(), ps.frame().dtype; },
          "A frame stream's numpy dtype; None for a byte stream.")
      .def_property_readonly(
          "shape", [](PyStream& ps) { return ps.s(), shape_tuple(ps.frame()); },
          "A frame stream's shape; None for a byte stream.")
      .def_property_readonly(
          "backpressure", [](PyStream& ps) { return backpressure_name(ps.s().backpressure()); },
          "'block' or 'drop_oldest'.")
      .def_property_readonly(
          "max_readers", [](PyStream& ps) { return ps.s().max_readers(); },
          "Readers that can be attached at once.")
      .def_property_readonly(
          "readonly", [](PyStream& ps) { return ps.s().readonly(); }, "True when opened with readonly=True.")
      .def_property_readonly(
          "head", [](PyStream& ps) { return ps.s().head(); },
          "The sequence number the next message will get.")
      .def_property_readonly(
          "dropped", [](PyStream& ps) { return ps.s().dropped(); },
          "Messages overwritten while no reader was attached.")
      .def_property_readonly(
          "abandoned", [](PyStream& ps) { return ps.s().abandoned(); },
          "Messages lost with a writer that died between its claim and its commit.")
      .def_property_readonly(
          "nbytes", [](PyStream& ps) { return ps.s().geometry().total_size; },
          "Size of the segment in bytes.")
      .def("readers", &readers_info,
           "The attached readers as dicts (index, pid, cursor, lag, lost, received, attached_ns,\n"
           "alive), read without taking any lock. For tools such as xshm inspect.")
      .def("header", &header_info, "The header's fields as a dict, read without taking any lock.")
      .def("__repr__", &stream_repr);
  install_fast(cls, g_stream_fast);

  mod.def(
      "segment_kind",
      [](const std::string& name) {
        const std::string canon = xshm::normalize_name(name);
        xshm::Fd fd = xshm::detail::shm_open_checked(canon, O_RDONLY, 0);
        const std::uint64_t size = xshm::detail::file_size(fd.get());
        if (size < xshm::kHeaderSize) return std::string("unknown");
        xshm::Mapping m = xshm::Mapping::map(fd.get(), xshm::kHeaderSize, false);
        switch (xshm::peek_kind(m.data(), xshm::kHeaderSize)) {
          case xshm::SegmentKind::record:
            return std::string("record");
          case xshm::SegmentKind::stream:
            return std::string("stream");
          default:
            return std::string("unknown");
        }
      },
      py::arg("name"), "'record', 'stream' or 'unknown', from the segment's first page (no validation).");
}

}  // namespace xshm_py
