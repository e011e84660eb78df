// The definitions behind stream.hpp (what it binds and why is said there).
#include "stream.hpp"

#include "aio.hpp"
#include "arrow.hpp"
#include "dlpack.hpp"

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
#include <xshm/stream/layout.hpp>

#include "args.hpp"
#include "errors.hpp"
#include "fastcall.hpp"
#include "manager.hpp"
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

MessageObject* msg(PyObject* self) { return reinterpret_cast<MessageObject*>(self); }
PyObject* message_data(PyObject* self, void*) {
  Py_INCREF(msg(self)->data);
  return msg(self)->data;
}
PyObject* message_seq(PyObject* self, void*) { return PyLong_FromUnsignedLongLong(msg(self)->seq); }
PyObject* message_timestamp_ns(PyObject* self, void*) { return PyLong_FromLongLong(msg(self)->timestamp_ns); }
PyObject* message_timestamp(PyObject* self, void*) {
  return PyFloat_FromDouble(static_cast<double>(msg(self)->timestamp_ns) / 1e9);
}
PyObject* message_writer_pid(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(msg(self)->writer_pid);
}

PyObject* message_new(PyTypeObject*, PyObject*, PyObject*) {
  PyErr_SetString(PyExc_TypeError,
                  "Message objects cannot be made directly: a StreamReader's recv(), try_recv(), recv_many() "
                  "and iteration give them");
  return nullptr;
}

int message_refuse_set(PyObject*, PyObject*, void* closure) {
  PyErr_Format(PyExc_AttributeError,
               "Message.%s cannot be changed: a received message is a copy of what was sent (send a new one)",
               static_cast<const char*>(closure));
  return -1;
}

#define XSHM_MSG_ATTR(attr, doc) \
  { #attr, message_##attr, message_refuse_set, doc, const_cast < char*>(#attr) }
PyGetSetDef message_getset[] = {
    XSHM_MSG_ATTR(data, "The payload: bytes, or a numpy array (a private copy) for a frame stream."),
    XSHM_MSG_ATTR(seq, "Its sequence number: one total order per stream, from 0."),
    XSHM_MSG_ATTR(timestamp_ns, "Wall-clock time it was sent, ns since the epoch."),
    XSHM_MSG_ATTR(timestamp, "Wall-clock time it was sent, seconds since the epoch (like time.time())."),
    XSHM_MSG_ATTR(writer_pid, "Pid of the process that sent it."),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
#undef XSHM_MSG_ATTR

PyObject* message_dlpack(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* data = msg(self)->data;
  if (PyBytes_Check(data)) {
    PyErr_SetString(PyExc_BufferError,
                    "Message.__dlpack__: a byte stream's message is bytes, and DLPack carries arrays "
                    "(np.frombuffer(msg.data, np.uint8), or a stream created with a dtype and shape)");
    return nullptr;
  }
  return dlpack_export(data, args, nargs, kwnames, "Message.__dlpack__");
}

PyObject* message_dlpack_device(PyObject*, PyObject*) { return dlpack_device(); }

/// The buffer protocol: the payload's buffer itself (bytes, or the frame's array).
int message_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  return PyObject_GetBuffer(msg(self)->data, view, flags);
}

PyMethodDef message_methods[] = {
    {"__dlpack__", fastcall_fn(message_dlpack), METH_FASTCALL | METH_KEYWORDS,
     "__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "A frame's array as a DLPack capsule (versioned or legacy), no copy: np.from_dlpack(msg),\n"
     "jax.dlpack.from_dlpack(msg), torch.from_dlpack(msg) share the message's own buffer.\n"
     "BufferError for a byte stream's message."},
    {"__dlpack_device__", message_dlpack_device, METH_NOARGS,
     "__dlpack_device__($self, /)\n--\n\n(1, 0): the CPU (kDLCPU, device 0)."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot message_slots[] = {
    {Py_tp_methods, message_methods},
    {Py_bf_getbuffer, reinterpret_cast<void*>(message_getbuffer)},
    {Py_tp_dealloc, reinterpret_cast<void*>(message_dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(message_repr)},
    {Py_tp_getset, message_getset},
    {Py_tp_new, reinterpret_cast<void*>(message_new)},
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

// ---- arguments in xshm's words (args.hpp) ----

py::object borrow(PyObject* o) { return py::reinterpret_borrow<py::object>(o); }

/// A count (capacity, max_bytes, max_readers, max_n): an integer >= 0.
std::uint64_t count_arg(PyObject* o, const char* name) {
  if (!is_integer(o) || PyBool_Check(o))
    throw py::type_error(std::string(name) + " must be an integer, not " + type_name(o));
  return arg_u64(o, name);
}

xshm::Backpressure backpressure_arg(PyObject* o) {
  const std::string v(arg_str(o, "backpressure", " ('block' or 'drop_oldest')"));
  if (v == "block") return xshm::Backpressure::block;
  if (v == "drop_oldest") return xshm::Backpressure::drop_oldest;
  throw xshm::ArgumentError("backpressure must be 'block' or 'drop_oldest', got " + repr_of(o));
}

const char* backpressure_name(xshm::Backpressure b) {
  return b == xshm::Backpressure::block ? "block" : "drop_oldest";
}

/// A frame's dtype as the core's code: the same rules and words as a record's values.
xshm::Dtype frame_dtype(const py::object& dtype) { return Manager::parse_dtype(dtype); }

std::vector<std::uint64_t> frame_shape(const py::object& shape) {
  std::vector<std::uint64_t> out;
  if (shape.is_none()) return out;
  if (is_integer(shape.ptr()) && !PyBool_Check(shape.ptr())) {
    out.push_back(count_arg(shape.ptr(), "shape"));
    return out;
  }
  if (!py::isinstance<py::sequence>(shape) || py::isinstance<py::str>(shape))
    throw py::type_error("shape must be an int or a sequence of ints, not " + type_name(shape.ptr()));
  for (py::handle h : shape.cast<py::sequence>()) out.push_back(count_arg(h.ptr(), "shape entries"));
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

/// The bytes of `data` (the parameter `what`: "data", "items[3]") for this stream.
void payload_of(PyStream& ps, PyObject* data, Payload& p, const std::string& what) {
  const Frame& f = ps.frame();
  if (f.is_frame()) {
    auto& api = py::detail::npy_api::get();
    if (!api.PyArray_Check_(data))  // (messages built on the error paths only: str(dtype) costs µs)
      throw py::type_error(what + " must be a numpy array of dtype " + std::string(py::str(f.dtype)) +
                           " and shape " + std::string(py::str(shape_tuple(f))) +
                           " (this is a frame stream), not " + type_name(data));
    auto* a = py::detail::array_proxy(data);
    if (a->descr != f.dtype.ptr() && !api.PyArray_EquivTypes_(a->descr, f.dtype.ptr()))
      throw xshm::DtypeError(what + " has dtype " + std::string(py::str(py::handle(data).attr("dtype"))) +
                             "; the stream carries frames of " + std::string(py::str(f.dtype)));
    bool same = a->nd == static_cast<int>(f.dims.size());
    for (std::size_t i = 0; same && i < f.dims.size(); ++i) same = a->dimensions[i] == f.dims[i];
    if (!same)
      throw xshm::ArgumentError(what + " has shape " + std::string(py::str(py::handle(data).attr("shape"))) +
                                "; the stream carries frames of shape " +
                                std::string(py::str(shape_tuple(f))));
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
    throw py::type_error(what + " must be bytes-like, not str: encode it first (text.encode())");
  if (PyObject_GetBuffer(data, &p.view, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    throw py::type_error(
        what + " must be bytes-like (bytes, bytearray, memoryview, a C-contiguous numpy array), not " +
        type_name(data));
  }
  p.has_view = true;
  p.ptr = p.view.buf;
  p.len = static_cast<std::size_t>(p.view.len);
}

/// One or more payloads: tried once with the GIL held (small copies, nothing to wait for),
/// then with it released, waiting up to `timeout`. Returns the sequence of the last.
std::uint64_t send_payloads(PyStream& ps, const std::pair<const void*, std::size_t>* items, std::size_t n,
                            std::size_t total, xshm::Timeout limit) {
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
    if (!data) {
      const py::dtype dt = py::dtype::from_args(frame.dtype);
      std::size_t bytes = static_cast<std::size_t>(dt.itemsize());
      for (Py_intptr_t d : frame.dims) bytes *= static_cast<std::size_t>(d);
      data = aligned_array(dt, frame.dims, bytes);  // its own 64-byte aligned buffer (DLPack, Arrow)
    }
    auto* a = py::detail::array_proxy(data.ptr());
    const std::size_t cap = static_cast<std::size_t>(py::reinterpret_borrow<py::array>(data).nbytes());
    // A frame stream's messages are frames; a foreign writer's short one is zero-filled.
    xshm::seqlock::load_bytes(a->data, src, std::min(n, cap));
    if (n < cap) std::memset(a->data + n, 0, cap - n);
  }
};

/// One receive of `pr`, from its first look to its return: see PyReader. Made with the GIL held.
class Receiving {
 public:
  explicit Receiving(PyReader& pr) : pr_(pr) {
    if (pr.busy.load(std::memory_order_relaxed))
      throw py::value_error("this StreamReader is receiving in another thread; use one reader per thread");
    if (pr.ticket != nullptr)
      throw py::value_error(
          "this StreamReader is receiving in a coroutine (recv_async); use one reader per task");
    pr.busy.store(true, std::memory_order_relaxed);
    pr.receiver = PyThread_get_thread_ident();
  }
  ~Receiving() {
    if (pr_.closers == 0) {  // nobody waits (closers only changes with the GIL held, as here)
      pr_.busy.store(false, std::memory_order_relaxed);
      return;
    }
    {
      std::lock_guard<std::mutex> g(pr_.m);
      pr_.busy.store(false, std::memory_order_relaxed);
    }
    pr_.cv.notify_all();
  }
  Receiving(const Receiving&) = delete;
  Receiving& operator=(const Receiving&) = delete;

 private:
  PyReader& pr_;
};

/// The next message taken with the GIL held, or a null object when none is there.
py::object take(PyReader& pr, xshm::StreamReader& r) {
  PySink sink{pr.frame(), py::object(), {}};
  if (!r.try_visit(sink)) return py::object();
  return make_message(std::move(sink.data), sink.info);
}

/// One message, or None when `timeout` passed (recv raises instead). The wait runs without
/// the GIL and leaves the message in its slot; the take copies it with the GIL held, into the
/// Python object itself. Under "drop_oldest" a writer may lap it between the two: the take
/// counts the lap as lost and takes the oldest message left, or finds none (wait again).
py::object receive(PyReader& pr, xshm::Timeout limit, std::chrono::nanoseconds spin_ns, const Receiving&) {
  xshm::StreamReader& r = pr.r();
  if (py::object m = take(pr, r)) return m;
  if (limit && limit->count() == 0) return py::none();
  // Kept alive by this receive whatever another thread does meanwhile (close() waits for
  // `busy` to clear, but the copy makes the reader's lifetime not depend on it).
  const std::shared_ptr<xshm::StreamReader> keep = pr.shared();
  const xshm::Deadline deadline(limit);
  for (xshm::Timeout left = limit;;) {
    bool ready = false;
    {
      py::gil_scoped_release nogil;
      ready = keep->wait(left, spin_ns, check_signals);
    }
    if (!ready) return py::none();
    if (py::object m = take(pr, *keep)) return m;
    if (limit) left = deadline.left();
  }
}

py::object receive(PyReader& pr, xshm::Timeout limit, std::chrono::nanoseconds spin_ns) {
  Receiving busy(pr);
  return receive(pr, limit, spin_ns, busy);
}

/// A view of the next message (recv_view), or None when `timeout` passed: waits as receive()
/// does, without the GIL, and takes the view with it held.
py::object receive_view(PyReader& pr, xshm::Timeout limit, std::chrono::nanoseconds spin_ns) {
  Receiving busy(pr);
  const std::shared_ptr<xshm::StreamReader> keep = pr.shared();
  pr.r();  // closed: ClosedError
  if (std::optional<xshm::MessageView> v = keep->try_recv_view())
    return make_view(keep, std::move(*v), pr.frame());
  if (limit && limit->count() == 0) return py::none();
  const xshm::Deadline deadline(limit);
  for (xshm::Timeout left = limit;;) {
    bool ready = false;
    {
      py::gil_scoped_release nogil;
      ready = keep->wait(left, spin_ns, check_signals);
    }
    if (!ready) return py::none();
    if (std::optional<xshm::MessageView> v = keep->try_recv_view())
      return make_view(keep, std::move(*v), pr.frame());
    if (limit) left = deadline.left();
  }
}

/// close() and __exit__: a receive waiting in another thread is interrupted (it raises
/// ClosedError, or ends an iteration) and the reader closes once it has left, the GIL released
/// meanwhile.
void close_reader(PyReader& pr) {
  while (pr.busy.load(std::memory_order_relaxed)) {
    if (pr.receiver == PyThread_get_thread_ident())  // a finalizer run during its own receive
      throw py::value_error(
          "this StreamReader is receiving in this very thread (close() from a finalizer or signal "
          "handler?); close it after the receive returns");
    pr.shared()->interrupt();  // a new receive begun meanwhile is interrupted at once too
    ++pr.closers;
    {
      py::gil_scoped_release nogil;
      std::unique_lock<std::mutex> lk(pr.m);
      pr.cv.wait(lk, [&] { return !pr.busy.load(std::memory_order_relaxed); });
    }
    --pr.closers;
  }
  if (pr.ticket != nullptr) {  // a coroutine's receive sleeps: it looks again, finds it closed
    notify_closing(&pr);
    pr.ticket->release();
  }
  if (!pr.closed()) pr.r().close();
}

[[noreturn]] void raise_no_message(const PyReader& pr, xshm::Timeout limit) {
  throw xshm::WaitTimeoutError("no message on stream " + pr.name() + " within " +
                               (limit ? xshm::format_duration(*limit) : std::string("the timeout")));
}

// ---- what tools read ----

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
    std::uint64_t cursor = r->cursor.load(std::memory_order_acquire);
    const std::uint32_t group = r->group.load(std::memory_order_relaxed);
    d["group"] = py::none();
    if (group != 0 && group <= seg->geo.max_groups) {  // a member: its group's cursor
      const xshm::GroupEntry* g = seg->group(group - 1);
      cursor = g->cursor.load(std::memory_order_acquire);
      d["group"] = xshm::stream_impl::group_name(g);
    }
    d["index"] = i;
    d["pid"] = r->pid.load(std::memory_order_relaxed);
    d["start"] = r->start.load(std::memory_order_relaxed);
    d["cursor"] = cursor;
    d["lag"] = head > cursor ? head - cursor : 0;
    d["lost"] = r->lost.load(std::memory_order_relaxed);
    d["received"] = r->received.load(std::memory_order_relaxed);
    d["skipped"] = r->skipped.load(std::memory_order_relaxed);
    d["attached_ns"] = r->attached_ns.load(std::memory_order_relaxed);
    d["alive"] = xshm::stream_impl::reader_alive(*seg, i);
    out.append(d);
  }
  return out;
}

py::list groups_info(PyStream& ps) {
  xshm::Stream& s = ps.s();
  const std::uint64_t head = s.head();
  py::list out;
  for (const xshm::GroupInfo& g : s.groups()) {
    py::dict d;
    d["name"] = g.name;
    d["start"] = g.start;
    d["cursor"] = g.cursor;
    d["lag"] = head > g.cursor ? head - g.cursor : 0;
    d["received"] = g.received;
    d["lost"] = g.lost;
    d["skipped"] = g.skipped;
    d["members"] = g.members;
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
  d["max_groups"] = h->max_groups;
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

// ---- the methods: METH_FASTCALL, every argument checked in xshm's words (args.hpp) ----

template <class T>
T* self_as(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<T*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<T&>();
}

PyStream& stream_of(PyObject* self) { return *self_as<PyStream>(self); }
PyReader& reader_of(PyObject* self) { return *self_as<PyReader>(self); }

PyObject* fast_create(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<10> spec("create",
                                  {"name", "capacity", "max_bytes", "dtype", "shape", "backpressure",
                                   "max_readers", "mode", "exist_ok", "max_groups"},
                                  2);
    PyObject* a[10];
    spec.parse(args, nargs, kwnames, a);
    const std::string name(arg_str(a[0], "name"));
    xshm::StreamOptions o;
    o.capacity = count_arg(a[1], "capacity");
    if (a[5] != nullptr) o.backpressure = backpressure_arg(a[5]);
    if (a[6] != nullptr) {
      const std::uint64_t n = count_arg(a[6], "max_readers");
      if (n == 0 || n > xshm::kMaxStreamReaders)
        throw xshm::ArgumentError("max_readers must be 1 to " + std::to_string(xshm::kMaxStreamReaders) +
                                  ", got " + std::to_string(n));
      o.max_readers = static_cast<std::uint32_t>(n);
    }
    if (a[7] != nullptr) {
      if (!is_integer(a[7]) || PyBool_Check(a[7]))
        throw py::type_error("mode must be an int, a permission mask such as 0o600, not " + type_name(a[7]));
      std::uint64_t m = 01000;
      try {
        m = arg_u64(a[7], "mode");
      } catch (const xshm::ArgumentError&) {
      }
      if (m > 0777)
        throw xshm::ArgumentError("mode must be a permission mask (at most 0o777), got " + repr_of(a[7]));
      o.mode = static_cast<mode_t>(m);
    }
    o.exist_ok = a[8] != nullptr && arg_bool(a[8], "exist_ok");
    if (a[9] != nullptr) {
      const std::uint64_t n = count_arg(a[9], "max_groups");
      if (n > xshm::kMaxStreamGroups)
        throw xshm::ArgumentError("max_groups must be 0 to " + std::to_string(xshm::kMaxStreamGroups) +
                                  ", got " + std::to_string(n));
      o.max_groups = static_cast<std::uint32_t>(n);
    }
    const bool has_dtype = a[3] != nullptr && a[3] != Py_None;
    const bool has_shape = a[4] != nullptr && a[4] != Py_None;
    const bool has_max = a[2] != nullptr && a[2] != Py_None;
    if (has_dtype) {
      o.dtype = frame_dtype(borrow(a[3]));
      o.shape = frame_shape(has_shape ? borrow(a[4]) : py::object(py::tuple()));
      std::uint64_t bytes = xshm::dtype_info(*o.dtype).itemsize;
      for (std::uint64_t e : o.shape)
        bytes = e == 0 ? 0 : (bytes > xshm::kMaxMessageBytes / e ? UINT64_MAX : bytes * e);
      if (has_max && count_arg(a[2], "max_bytes") != bytes)
        throw xshm::ArgumentError("max_bytes " + repr_of(a[2]) + " does not match the frame (" +
                                  std::to_string(bytes) + " bytes of its dtype and shape); leave it None");
      o.max_bytes = bytes;
    } else {
      if (has_shape)
        throw xshm::ArgumentError("shape needs a dtype: Stream.create(name, capacity, dtype=..., shape=...)");
      if (has_max) o.max_bytes = count_arg(a[2], "max_bytes");
    }
    xshm::Stream s;
    {
      py::gil_scoped_release nogil;
      s = xshm::Stream::create(name, o);
    }
    Frame f = frame_of(s.geometry());
    return py::cast(std::make_unique<PyStream>(std::move(s), std::move(f)));
  });
}

PyObject* fast_open(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<3> spec("open", {"name", "readonly", "timeout"}, 1);
    PyObject* a[3];
    spec.parse(args, nargs, kwnames, a);
    const std::string name(arg_str(a[0], "name"));
    xshm::StreamOpenOptions o;
    o.readonly = a[1] != nullptr && arg_bool(a[1], "readonly");
    o.timeout = a[2] == nullptr ? xshm::Timeout{std::chrono::nanoseconds{0}} : arg_timeout(a[2]);
    xshm::Stream s;
    {
      py::gil_scoped_release nogil;
      s = xshm::Stream::open(name, o, check_signals);
    }
    Frame f = frame_of(s.geometry());
    return py::cast(std::make_unique<PyStream>(std::move(s), std::move(f)));
  });
}

PyObject* fast_send(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("send", {"data", "timeout"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_of(self);
    const xshm::Timeout limit = arg_timeout(a[1]);
    Payload p;
    payload_of(ps, a[0], p, "data");
    const std::pair<const void*, std::size_t> one{p.ptr, p.len};
    return py::int_(send_payloads(ps, &one, 1, p.len, limit));
  });
}

PyObject* fast_try_send(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("try_send", {"data"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_of(self);
    Payload p;
    payload_of(ps, a[0], p, "data");
    return py::bool_(ps.s().try_send(p.ptr, p.len).has_value());
  });
}

PyObject* fast_send_many(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("send_many", {"items", "timeout"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_of(self);
    const xshm::Timeout limit = arg_timeout(a[1]);
    if (PyUnicode_Check(a[0]) || PyBytes_Check(a[0]) || PyByteArray_Check(a[0]))
      throw py::type_error("items must be an iterable of messages (a list of bytes), not one " +
                           type_name(a[0]));
    py::object it = py::reinterpret_steal<py::object>(PyObject_GetIter(a[0]));
    if (!it) {
      PyErr_Clear();
      throw py::type_error("items must be an iterable of messages (a list of bytes), not " + type_name(a[0]));
    }
    std::deque<Payload> keep;
    std::vector<std::pair<const void*, std::size_t>> parts;
    std::size_t total = 0;
    while (PyObject* item = PyIter_Next(it.ptr())) {
      py::object hold = py::reinterpret_steal<py::object>(item);
      Payload& p = keep.emplace_back();
      p.keep = hold;
      payload_of(ps, item, p, "items[" + std::to_string(parts.size()) + "]");
      parts.emplace_back(p.ptr, p.len);
      total += p.len;
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    if (parts.empty()) throw xshm::ArgumentError("send_many: no messages");
    return py::int_(send_payloads(ps, parts.data(), parts.size(), total, limit));
  });
}

PyObject* fast_reader(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("reader", {"start", "group"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_of(self);
    xshm::Start start = xshm::Start::oldest;
    if (a[0] != nullptr) {
      const std::string v(arg_str(a[0], "start", " ('oldest' or 'latest')"));
      if (v == "latest")
        start = xshm::Start::latest;
      else if (v != "oldest")
        throw xshm::ArgumentError("start must be 'oldest' or 'latest', got " + repr_of(a[0]));
    }
    std::optional<std::string> group;
    if (a[1] != nullptr && a[1] != Py_None) group = arg_str(a[1], "group", " (a group name, or None)");
    xshm::Stream& s = ps.s();
    xshm::Stream local = s;
    xshm::StreamReader r;
    {
      py::gil_scoped_release nogil;
      r = group ? local.reader(start, *group, check_signals) : local.reader(start, check_signals);
    }
    return py::cast(std::make_unique<PyReader>(std::move(r), ps.frame(), local.name()));
  });
}

template <class F>
PyObject* no_args(const char* fname, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, F&& f) {
  return guarded([&]() -> py::object {
    const ArgSpec<0> spec(fname, {}, 0);
    spec.parse(args, nargs, kwnames, nullptr);
    return f();
  });
}

PyObject* fast_stream_close(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("close", args, nargs, kwnames, [&] {
    stream_of(self).close();
    return py::none();
  });
}

PyObject* fast_unlink(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("unlink", args, nargs, kwnames, [&] {
    stream_of(self).s().unlink();
    return py::none();
  });
}

PyObject* fast_readers(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("readers", args, nargs, kwnames,
                 [&]() -> py::object { return readers_info(stream_of(self)); });
}

PyObject* fast_groups(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("groups", args, nargs, kwnames,
                 [&]() -> py::object { return groups_info(stream_of(self)); });
}

PyObject* fast_header(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("header", args, nargs, kwnames,
                 [&]() -> py::object { return header_info(stream_of(self)); });
}

PyObject* fast_enter(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__enter__", args, nargs, kwnames, [&] { return py::reinterpret_borrow<py::object>(self); });
}

PyObject* fast_stream_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject*) {
  return guarded([&] {
    if (nargs != 3) throw py::type_error("__exit__() takes 3 arguments (exc_type, exc_value, traceback)");
    (void)args;
    stream_of(self).close();
    return py::bool_(false);
  });
}

PyObject* fast_stream_repr(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__repr__", args, nargs, kwnames,
                 [&]() -> py::object { return py::str(stream_repr(stream_of(self))); });
}

PyObject* fast_recv(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("recv", {"timeout", "spin"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyReader& pr = reader_of(self);
    const xshm::Timeout limit = arg_timeout(a[0]);
    py::object m = receive(pr, limit, arg_duration(a[1], "spin"));
    if (m.is_none()) raise_no_message(pr, limit);
    return m;
  });
}

PyObject* fast_recv_view(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("recv_view", {"timeout", "spin"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyReader& pr = reader_of(self);
    const xshm::Timeout limit = arg_timeout(a[0]);
    py::object v = receive_view(pr, limit, arg_duration(a[1], "spin"));
    if (v.is_none()) raise_no_message(pr, limit);
    return v;
  });
}

/// For the reader's Arrow stream (arrow.hpp): up to `max_n` messages there now, taken.
std::vector<xshm::Message> take_batch(PyObject* self, std::size_t max_n) {
  PyReader& pr = reader_of(self);
  Receiving busy(pr);
  xshm::StreamReader& r = pr.r();
  std::vector<xshm::Message> out;
  while (out.size() < max_n) {
    std::optional<xshm::Message> m = r.try_recv();
    if (!m) break;
    out.push_back(std::move(*m));
  }
  return out;
}

PyObject* fast_arrow_stream(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("__arrow_c_stream__", {"requested_schema"}, 0);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    PyReader& pr = reader_of(self);
    (void)pr.r();  // a closed reader raises here
    return reader_arrow_stream(self, pr.frame().dtype, pr.frame().dims, take_batch);
  });
}

PyObject* fast_try_recv(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("try_recv", args, nargs, kwnames, [&]() -> py::object {
    PyReader& pr = reader_of(self);
    Receiving busy(pr);
    py::object m = take(pr, pr.r());
    return m ? m : py::none();
  });
}

PyObject* fast_recv_many(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("recv_many", {"max_n", "timeout"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyReader& pr = reader_of(self);
    const std::uint64_t n = count_arg(a[0], "max_n");
    const xshm::Timeout limit = arg_timeout(a[1]);
    py::list out;
    if (n == 0) return std::move(out);
    Receiving busy(pr);
    py::object first = receive(pr, limit, std::chrono::nanoseconds{0}, busy);
    if (first.is_none()) return std::move(out);
    out.append(first);
    try {
      while (out.size() < n) {
        py::object m = take(pr, pr.r());
        if (!m) break;
        out.append(m);
      }
    } catch (const xshm::ClosedError&) {  // closed from another thread: keep what was taken
    }
    return std::move(out);
  });
}

PyObject* fast_prepare_wait(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("_prepare_wait", args, nargs, kwnames, [&]() -> py::object {
    PyReader& pr = reader_of(self);
    { Receiving busy(pr); }  // refuses while another thread or coroutine receives
    xshm::SleepTicket t = pr.r().prepare_wait();
    if (!t) return py::none();
    return make_ticket(std::move(t), &pr, &pr, py::reinterpret_borrow<py::object>(self));
  });
}

PyObject* fast_recv_async(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("recv_async", {"timeout"}, 0);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    if (a[0] != nullptr) (void)arg_timeout(a[0]);  // a bad argument raises here, not at the await
    (void)reader_of(self).r();                     // and a closed reader
    static py::handle fn = aio_function("recv").release();
    return fn(py::reinterpret_borrow<py::object>(self),
              a[0] == nullptr ? py::none() : py::reinterpret_borrow<py::object>(a[0]));
  });
}

PyObject* fast_aiter(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__aiter__", args, nargs, kwnames, [&] { return py::reinterpret_borrow<py::object>(self); });
}

PyObject* fast_anext(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__anext__", args, nargs, kwnames, [&]() -> py::object {
    static py::handle fn = aio_function("anext").release();
    return fn(py::reinterpret_borrow<py::object>(self));
  });
}

PyObject* fast_reader_close(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("close", args, nargs, kwnames, [&] {
    close_reader(reader_of(self));
    return py::none();
  });
}

PyObject* fast_reader_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject*) {
  return guarded([&] {
    if (nargs != 3) throw py::type_error("__exit__() takes 3 arguments (exc_type, exc_value, traceback)");
    (void)args;
    close_reader(reader_of(self));
    return py::bool_(false);
  });
}

PyObject* fast_iter(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__iter__", args, nargs, kwnames, [&] { return py::reinterpret_borrow<py::object>(self); });
}

PyObject* reader_next(PyObject* self) {
  return guarded([&]() -> py::object {
    PyReader& pr = reader_of(self);
    if (pr.closed()) throw py::stop_iteration();
    try {
      return receive(pr, std::nullopt, std::chrono::nanoseconds{0});
    } catch (const xshm::ClosedError&) {  // closed from another thread: the messages end
      throw py::stop_iteration();
    }
  });
}

PyObject* fast_next(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* r = no_args("__next__", args, nargs, kwnames, [&] { return py::none(); });
  if (r == nullptr) return nullptr;
  Py_DECREF(r);
  return reader_next(self);
}

PyObject* fast_reader_repr(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args("__repr__", args, nargs, kwnames, [&]() -> py::object {
    PyReader& pr = reader_of(self);
    if (pr.closed()) return py::str("<xshm.StreamReader (closed)>");
    return py::str("<xshm.StreamReader " + pr.name() + " cursor=" + std::to_string(pr.r().cursor()) +
                   " lag=" + std::to_string(pr.r().lag()) + " lost=" + std::to_string(pr.r().lost()) + ">");
  });
}

constexpr int kFast = METH_FASTCALL | METH_KEYWORDS;

PyMethodDef g_stream_statics[] = {
    {"create", fastcall_fn(fast_create), kFast,
     "create(name, capacity, max_bytes=None, dtype=None, shape=None, backpressure='block', max_readers=16, "
     "mode=384, exist_ok=False, max_groups=16)\n--\n\n"
     "Create a stream of `capacity` messages (exclusive; owner-only 0o600 unless `mode` says\n"
     "otherwise; pages reserved up front). A segment of that name that exists already is\n"
     "FileExistsError, unless exist_ok=True (LayoutError naming what differs if its layout does).\n\n"
     "max_bytes: the largest message in bytes (default 1024). dtype/shape: a frame stream, whose\n"
     "messages are numpy arrays of that dtype and shape (max_bytes follows; shape () is one value).\n"
     "backpressure: 'block' (writers wait while the slowest reader is a full ring behind; with no\n"
     "reader attached nothing waits: the last `capacity` messages are kept and what is overwritten\n"
     "counts in `dropped`) or 'drop_oldest' (writers never wait; a lapped reader counts what it lost).\n"
     "max_groups: named reader groups (work queues, s.reader(group=...)) the stream can hold (0-1024)."},
    {"open", fastcall_fn(fast_open), kFast,
     "open(name, readonly=False, timeout=0)\n--\n\n"
     "Open an existing stream, validating every header field against the mapping.\n"
     "readonly: may receive, may not send. timeout: seconds to wait for it to appear (None:\n"
     "forever; the GIL released, Ctrl-C honoured)."},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef g_stream_methods[] = {
    {"send", fastcall_fn(fast_send), kFast,
     "send($self, /, data, timeout=None)\n--\n\n"
     "Send one message (bytes-like, or for a frame stream a numpy array of its dtype and shape);\n"
     "return its sequence number. Under 'block', waits (GIL released, Ctrl-C honoured) while the\n"
     "slowest reader is a full ring behind, up to `timeout` seconds (None: forever), then raises\n"
     "StreamFullError (a TimeoutError). A message longer than max_bytes raises MessageTooLongError."},
    {"try_send", fastcall_fn(fast_try_send), kFast,
     "try_send($self, /, data)\n--\n\nSend if there is room now; False (nothing sent) when a 'block' stream "
     "is full."},
    {"send_many", fastcall_fn(fast_send_many), kFast,
     "send_many($self, /, items, timeout=None)\n--\n\n"
     "Send every item in order, claiming as many slots at once as there is room for; return the\n"
     "sequence number of the last. On timeout, StreamFullError says how many were sent."},
    {"reader", fastcall_fn(fast_reader), kFast,
     "reader($self, /, start='oldest', group=None)\n--\n\n"
     "Attach a new reader with its own cursor: at the oldest message the ring still holds, or at\n"
     "the next one sent ('latest'). Under 'block' it gates writers until closed. Attaching takes\n"
     "the stream's mutex: it waits for it up to 10 s (GIL released, Ctrl-C honoured), then raises\n"
     "WaitTimeoutError.\n\n"
     "group: join the named group (a work queue): its members share one cursor and each message\n"
     "goes to exactly one of them. The first member creates it at `start`; the group's cursor\n"
     "outlives its members, so members that come back resume where it stopped. A group with a\n"
     "member attached gates 'block' writers like one reader; with none it gates nothing, and\n"
     "counts what it missed as lost when a member returns."},
    {"close", fastcall_fn(fast_stream_close), kFast,
     "close($self, /)\n--\n\nUnmap this handle (its readers keep the mapping). Never unlinks."},
    {"unlink", fastcall_fn(fast_unlink), kFast,
     "unlink($self, /)\n--\n\nRemove the stream's name, if it still names this stream."},
    {"readers", fastcall_fn(fast_readers), kFast,
     "readers($self, /)\n--\n\n"
     "The attached readers as dicts (index, pid, group, start, cursor, lag, lost, received, skipped,\n"
     "attached_ns, alive), read without taking any lock: `start` is the cursor it attached at, and\n"
     "received + lost + skipped = cursor - start; a group member's cursor and lag are its group's,\n"
     "its counts its own share (the group's: groups()). For tools such as xshm inspect."},
    {"groups", fastcall_fn(fast_groups), kFast,
     "groups($self, /)\n--\n\n"
     "The stream's reader groups as dicts (name, start, cursor, lag, received, lost, skipped,\n"
     "members: attached members whose process lives). received + lost + skipped = cursor - start."},
    {"header", fastcall_fn(fast_header), kFast,
     "header($self, /)\n--\n\nThe header's fields as a dict, read without taking any lock."},
    {"__enter__", fastcall_fn(fast_enter), kFast, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall_fn(fast_stream_exit), kFast,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nClose the handle."},
    {"__repr__", fastcall_fn(fast_stream_repr), kFast, "__repr__($self, /)\n--\n\n"},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef g_reader_methods[] = {
    {"recv", fastcall_fn(fast_recv), kFast,
     "recv($self, /, timeout=None, spin=0.0)\n--\n\n"
     "The next message (a Message: data, seq, timestamp_ns, writer_pid). Waits on a futex with the\n"
     "GIL released (Ctrl-C honoured) up to `timeout` seconds (None: forever), then raises\n"
     "WaitTimeoutError. `spin`: seconds to poll before sleeping (a few microseconds always are).\n"
     "close() from another thread ends the wait: it raises ClosedError."},
    {"recv_view", fastcall_fn(fast_recv_view), kFast,
     "recv_view($self, /, timeout=None, spin=0.0)\n--\n\n"
     "The next message read in place, as a MessageView: `with r.recv_view() as v:` gives v.data, a\n"
     "read-only numpy array over the slot itself (no copy); the reader moves past the message\n"
     "when the block ends. Until then the slot is not reused under 'block' (the view gates\n"
     "writers like an unread message), every other receive of this reader raises, and under\n"
     "'drop_oldest' a lapping writer may overwrite it (v.overwritten; leaving the block then\n"
     "raises OverwrittenError, never over an exception of the block's own). Waits as recv()\n"
     "does (WaitTimeoutError). Not for a group member (ValueError)."},
    {"recv_async", fastcall_fn(fast_recv_async), kFast,
     "recv_async($self, /, timeout=None)\n--\n\n"
     "`await r.recv_async()`: the next message, awaited in an asyncio loop (WaitTimeoutError after\n"
     "`timeout` seconds; None: forever). No thread per wait: the process's notifier sleeps on the\n"
     "stream's futex for every waiting coroutine and wakes their loops. One receive at a time per\n"
     "reader (ValueError while another thread or task receives on it). close() ends the wait:\n"
     "it raises ClosedError."},
    {"_prepare_wait", fastcall_fn(fast_prepare_wait), kFast,
     "_prepare_wait($self, /)\n--\n\nFor xshm._aio: None when a message can be taken now, else a _Ticket."},
    {"__aiter__", fastcall_fn(fast_aiter), kFast, "__aiter__($self, /)\n--\n\n`async for msg in r:`."},
    {"__anext__", fastcall_fn(fast_anext), kFast,
     "__anext__($self, /)\n--\n\nThe next message, awaited; iteration stops when the reader is closed."},
    {"__arrow_c_stream__", fastcall_fn(fast_arrow_stream), kFast,
     "__arrow_c_stream__($self, /, requested_schema=None)\n--\n\n"
     "The messages there now, received, as an Arrow stream of record batches (a PyCapsule):\n"
     "seq, timestamp, writer_pid and data (binary, or the frame as nested fixed-size lists).\n"
     "It ends when nothing is left (it never waits). pl.DataFrame(r), pa.table(r), duckdb."},
    {"try_recv", fastcall_fn(fast_try_recv), kFast,
     "try_recv($self, /)\n--\n\nThe next message if one is there, else None."},
    {"recv_many", fastcall_fn(fast_recv_many), kFast,
     "recv_many($self, /, max_n, timeout=None)\n--\n\n"
     "Wait up to `timeout` for one message, then take every message already there, up to `max_n`;\n"
     "a list (empty when the timeout passed). close() from another thread ends the wait: it\n"
     "raises ClosedError."},
    {"close", fastcall_fn(fast_reader_close), kFast,
     "close($self, /)\n--\n\n"
     "Detach: a 'block' writer stops waiting for this reader. Idempotent. Any thread may call it:\n"
     "a receive waiting in another thread is ended first (its recv() or recv_many() raises\n"
     "ClosedError, its `for msg in reader:` loop ends), and close() waits, GIL released, for it\n"
     "to leave."},
    {"__enter__", fastcall_fn(fast_enter), kFast, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall_fn(fast_reader_exit), kFast,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nClose the reader (as close())."},
    {"__iter__", fastcall_fn(fast_iter), kFast, "__iter__($self, /)\n--\n\n"},
    {"__next__", fastcall_fn(fast_next), kFast,
     "__next__($self, /)\n--\n\n"
     "The next message, waiting as long as it takes (recv()); StopIteration once the reader is\n"
     "closed, from this thread or another."},
    {"__repr__", fastcall_fn(fast_reader_repr), kFast, "__repr__($self, /)\n--\n\n"},
    {nullptr, nullptr, 0, nullptr},
};

// ---- attributes: read-only, each refusing a set with its reason ----

template <class Fn>
PyObject* stream_get(PyObject* self, Fn fn) {
  return guarded([&]() -> py::object { return fn(stream_of(self)); });
}
template <class Fn>
PyObject* reader_get(PyObject* self, Fn fn) {
  return guarded([&]() -> py::object { return fn(reader_of(self)); });
}

#define XSHM_SGET(attr, expr)                                                 \
  PyObject* sget_##attr(PyObject* self, void*) {                              \
    return stream_get(self, [](PyStream& ps) -> py::object { return expr; }); \
  }
XSHM_SGET(closed, py::bool_(ps.closed()))
XSHM_SGET(name, py::str(ps.s().name()))
XSHM_SGET(capacity, py::int_(ps.s().capacity()))
XSHM_SGET(max_bytes, py::int_(ps.s().max_bytes()))
XSHM_SGET(dtype, (ps.s(), ps.frame().dtype))
XSHM_SGET(shape, (ps.s(), shape_tuple(ps.frame())))
XSHM_SGET(backpressure, py::str(backpressure_name(ps.s().backpressure())))
XSHM_SGET(max_readers, py::int_(ps.s().max_readers()))
XSHM_SGET(readonly, py::bool_(ps.s().readonly()))
XSHM_SGET(head, py::int_(ps.s().head()))
XSHM_SGET(dropped, py::int_(ps.s().dropped()))
XSHM_SGET(abandoned, py::int_(ps.s().abandoned()))
XSHM_SGET(nbytes, py::int_(ps.s().geometry().total_size))
#undef XSHM_SGET

#define XSHM_RGET(attr, expr)                                                 \
  PyObject* rget_##attr(PyObject* self, void*) {                              \
    return reader_get(self, [](PyReader& pr) -> py::object { return expr; }); \
  }
XSHM_RGET(closed, py::bool_(pr.closed()))
XSHM_RGET(lost, py::int_(pr.r().lost()))
XSHM_RGET(lag, py::int_(pr.r().lag()))
XSHM_RGET(received, py::int_(pr.r().received()))
XSHM_RGET(skipped, py::int_(pr.r().skipped()))
XSHM_RGET(cursor, py::int_(pr.r().cursor()))
XSHM_RGET(group, ([&]() -> py::object {
            std::string g = pr.r().group();
            if (g.empty()) return py::none();
            return py::str(g);
          }()))
#undef XSHM_RGET

#define XSHM_SRO(attr, doc, why) \
  { #attr, sget_##attr, refuse_set, doc, const_cast < char*>("Stream." #attr " cannot be changed" why) }
#define XSHM_RRO(attr, doc, why) \
  { #attr, rget_##attr, refuse_set, doc, const_cast < char*>("StreamReader." #attr " cannot be changed" why) }

PyGetSetDef g_stream_getset[] = {
    XSHM_SRO(closed, "True after close().", ": call close()"),
    XSHM_SRO(name, "The canonical name, with its leading '/'.",
             ": a stream's name is fixed when it is created"),
    XSHM_SRO(capacity, "Messages the ring holds.", ": a stream's layout is fixed when it is created"),
    XSHM_SRO(max_bytes, "The largest message, in bytes.", ": a stream's layout is fixed when it is created"),
    XSHM_SRO(dtype, "A frame stream's numpy dtype; None for a byte stream.",
             ": a stream's layout is fixed when it is created"),
    XSHM_SRO(shape, "A frame stream's shape; None for a byte stream.",
             ": a stream's layout is fixed when it is created"),
    XSHM_SRO(backpressure, "'block' or 'drop_oldest'.", ": a stream's layout is fixed when it is created"),
    XSHM_SRO(max_readers, "Readers that can be attached at once.",
             ": a stream's layout is fixed when it is created"),
    XSHM_SRO(readonly, "True when opened with readonly=True.", ": it is chosen when the handle is opened"),
    XSHM_SRO(head, "The sequence number the next message will get.", ": sending moves it"),
    XSHM_SRO(dropped, "Messages overwritten while no reader was attached.", ": the writers count it"),
    XSHM_SRO(abandoned, "Messages lost with a writer that died between its claim and its commit.",
             ": the stream counts it"),
    XSHM_SRO(nbytes, "Size of the segment in bytes.", ": a stream's layout is fixed when it is created"),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyGetSetDef g_reader_getset[] = {
    XSHM_RRO(closed, "True after close().", ": call close()"),
    XSHM_RRO(lost,
             "Messages this reader missed: overwritten before it got to them ('drop_oldest'),\n"
             "or abandoned by a writer that died between its claim and its commit.",
             ": the reader counts it"),
    XSHM_RRO(lag, "Messages sent (or being sent) that this reader has not taken yet.",
             ": receiving moves it"),
    XSHM_RRO(received, "Messages this reader has taken.", ": the reader counts it"),
    XSHM_RRO(skipped,
             "Sequence numbers this reader stepped over because their claim was dropped (nothing\n"
             "was sent under them): received + lost + skipped = what was numbered since it attached.",
             ": the reader counts it"),
    XSHM_RRO(cursor, "The sequence number of the next message it takes (a group member: its group's).",
             ": receiving moves it"),
    XSHM_RRO(group,
             "The name of the group it is a member of, or None. A member's received, lost and\n"
             "skipped are its own share of the group's (Stream.groups() has the group's).",
             ": it is chosen when the reader attaches"),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
#undef XSHM_SRO
#undef XSHM_RRO

PyObject* fast_segment_kind(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("segment_kind", {"name"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    const std::string canon = xshm::normalize_name(arg_str(a[0], "name"));
    xshm::Fd fd = xshm::detail::shm_open_checked(canon, O_RDONLY, 0);
    {
      // A creator holds LOCK_EX until its header is READY (lifecycle.hpp): wait for it as an
      // opener does, so that the peek sees the finished header, not the zeros of one being
      // written. Held to the end (the Fd's close lets go); a creator that keeps it past the
      // wait leaves the header unknown, and the opener that follows says why.
      bool finished = false;
      {
        py::gil_scoped_release nogil;
        finished = xshm::detail::flock_until(fd.get(), LOCK_SH,
                                             std::chrono::steady_clock::now() + xshm::detail::kReadyWait);
      }
      if (!finished) return py::str("unknown");
    }
    const std::uint64_t size = xshm::detail::file_size(fd.get());
    if (size < xshm::kHeaderSize) return py::str("unknown");
    xshm::Mapping m = xshm::Mapping::map(fd.get(), xshm::kHeaderSize, false);
    switch (xshm::peek_kind(m.data(), xshm::kHeaderSize)) {
      case xshm::SegmentKind::record:
        return py::str("record");
      case xshm::SegmentKind::stream:
        return py::str("stream");
      default:
        return py::str("unknown");
    }
  });
}

PyMethodDef g_kind_def = {
    "segment_kind", fastcall_fn(fast_segment_kind), kFast,
    "segment_kind(name)\n--\n\n"
    "'record', 'stream' or 'unknown', from the segment's first page (no validation), once its\n"
    "creator has finished it (waiting up to 2 s, as an opener does)."};

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
  install(reader_cls, g_reader_methods, nullptr, g_reader_getset);
  reinterpret_cast<PyTypeObject*>(reader_cls.ptr())->tp_iternext = reader_next;

  py::class_<PyStream> cls(mod, "Stream",
                           "A stream: every message, in order, through a ring in shared memory. Any number\n"
                           "of writers and readers (each reader has its own cursor).");
  install(cls, g_stream_methods, g_stream_statics, g_stream_getset);
  register_stream_claim(mod, cls);

  py::object module_name = mod.attr("__name__");
  py::object fn =
      py::reinterpret_steal<py::object>(PyCFunction_NewEx(&g_kind_def, nullptr, module_name.ptr()));
  if (!fn) throw py::error_already_set();
  mod.attr("segment_kind") = fn;
}

}  // namespace xshm_py
