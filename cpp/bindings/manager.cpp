// The definitions behind manager.hpp (what it binds and why is said there), and the
// SharedMemoryManager class as Python sees it: every method a METH_FASTCALL function and every
// attribute a getset descriptor (fastcall.hpp), each argument checked in xshm's words (args.hpp).
#include "manager.hpp"

#include "args.hpp"
#include "blocks.hpp"
#include "casting.hpp"
#include "fastcall.hpp"

#include <type_traits>

namespace xshm_py {

namespace {

Manager* self_of(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<Manager*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<Manager&>();
}

py::object borrow(PyObject* o) { return py::reinterpret_borrow<py::object>(o); }

/// An `errors=` parameter: the decode policy, 'replace' when not given.
DecodePolicy arg_policy(PyObject* o) {
  return o == nullptr ? DecodePolicy::Replace : parse_policy(std::string(arg_str(o, "errors")));
}

// ---- static methods ----

PyObject* fast_create(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<8> spec(
        "create", {"name", "shape", "dtype", "message_capacity", "mode", "exist_ok", "backup", "errors"}, 1);
    PyObject* a[8];
    spec.parse(args, nargs, kwnames, a);
    const std::string_view name = arg_str(a[0], "name");
    const py::object shape = a[1] != nullptr ? borrow(a[1]) : py::make_tuple(100);
    const py::object dtype = a[2] != nullptr ? borrow(a[2]) : py::str("float64");
    const std::uint64_t capacity = a[3] != nullptr ? arg_u64(a[3], "message_capacity") : 256;
    std::uint64_t mode = 0600;
    if (a[4] != nullptr) {
      if (!is_integer(a[4]))
        throw py::type_error("mode must be an int, a permission mask such as 0o600, not " + type_name(a[4]));
      try {
        mode = arg_u64(a[4], "mode");
      } catch (const xshm::ArgumentError&) {  // negative, or beyond 64 bits
        throw xshm::ArgumentError("mode must be a permission mask (at most 0o777), got " + repr_of(a[4]));
      }
    }
    const bool exist_ok = a[5] != nullptr && arg_bool(a[5], "exist_ok");
    const bool backup = a[6] == nullptr || arg_bool(a[6], "backup");
    const DecodePolicy policy = arg_policy(a[7]);
    return py::cast(Manager::create(name, shape, dtype, capacity, mode, exist_ok, backup, policy));
  });
}

PyObject* fast_open(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<5> spec("open", {"name", "readonly", "timeout", "errors", "stall_timeout"}, 1);
    PyObject* a[5];
    spec.parse(args, nargs, kwnames, a);
    const std::string_view name = arg_str(a[0], "name");
    const bool readonly = a[1] != nullptr && arg_bool(a[1], "readonly");
    const xshm::Timeout timeout =
        a[2] != nullptr ? arg_timeout(a[2]) : xshm::Timeout(std::chrono::nanoseconds{0});
    const DecodePolicy policy = arg_policy(a[3]);
    std::optional<xshm::Timeout> stall;
    if (const std::optional<double> s = arg_seconds(a[4], "stall_timeout")) {
      if (!(*s > 0))
        throw xshm::ArgumentError("stall_timeout must be > 0 seconds, or None for the default; got " +
                                  seconds_text(*s));
      stall = xshm::from_seconds(*s);
    }
    return py::cast(Manager::open(name, readonly, timeout, policy, stall));
  });
}

// ---- methods ----

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
    return self_of(self)->read_into(borrow(a[0]));
  });
}

PyObject* fast_publish(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<5> spec("publish", {"values", "message", "counter", "truncate", "casting"}, 0);
    PyObject* a[5];
    spec.parse(args, nargs, kwnames, a);
    std::optional<std::string_view> msg;
    if (a[1] != nullptr && a[1] != Py_None) msg = arg_str(a[1], "message", " or None");
    std::optional<std::uint64_t> counter;
    if (a[2] != nullptr && a[2] != Py_None) counter = arg_u64(a[2], "counter");
    const bool truncate = a[3] != nullptr && arg_bool(a[3], "truncate");
    const Casting casting = arg_casting(a[4]);
    py::object values = a[0] == nullptr ? py::none() : borrow(a[0]);
    return py::int_(self_of(self)->publish(values, msg, counter, truncate, casting));
  });
}

PyObject* fast_wait(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<3> spec("wait", {"seq", "timeout", "spin"}, 1);
    PyObject* a[3];
    spec.parse(args, nargs, kwnames, a);
    const std::uint64_t last = arg_u64(a[0], "seq");
    const std::int64_t timeout_ns = arg_timeout_ns(a[1]);
    const std::chrono::nanoseconds spin = arg_duration(a[2], "spin");
    return py::int_(self_of(self)->wait(last, timeout_ns, spin));
  });
}

PyObject* fast_prepare_wait(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("_prepare_wait", {"seq"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    const std::uint64_t last = arg_u64(a[0], "seq");
    Manager* m = self_of(self);
    xshm::SleepTicket t = m->m().prepare_wait(last);
    if (!t) return py::int_(m->m().seq());
    return make_ticket(std::move(t), m);
  });
}

PyObject* fast_wait_async(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("wait_async", {"seq", "timeout"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    (void)arg_u64(a[0], "seq");  // a bad argument raises here, not at the first await
    if (a[1] != nullptr) (void)arg_timeout(a[1]);
    (void)self_of(self)->m();  // and a closed handle
    static py::handle fn = aio_function("wait").release();
    return fn(borrow(self), borrow(a[0]), a[1] == nullptr ? py::none() : borrow(a[1]));
  });
}

PyObject* fast_write(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<2> spec("write", {"timeout", "in_place"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    const xshm::Timeout timeout = arg_timeout(a[0]);
    (void)self_of(self)->m();  // a closed handle fails here, not at the block's entry
    xshm::WriteMode mode = xshm::WriteMode::automatic;
    if (a[1] != nullptr && a[1] != Py_None)
      mode = arg_bool(a[1], "in_place", "True, False or None") ? xshm::WriteMode::in_place
                                                               : xshm::WriteMode::staged;
    py::object block = py::cast(WriteBlock(*self_of(self), timeout, mode));
    py::detail::keep_alive_impl(block, self);  // the block refers to the handle
    return block;
  });
}

PyObject* fast_lock(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<1> spec("lock", {"timeout"}, 0);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    const xshm::Timeout timeout = arg_timeout(a[0]);
    (void)self_of(self)->m();  // a closed handle fails here, not at the block's entry
    py::object block = py::cast(LockBlock(*self_of(self), timeout));
    py::detail::keep_alive_impl(block, self);
    return block;
  });
}

/// A method of no arguments: `fn(manager)` gives its result.
template <const char* Name, class Fn>
PyObject* no_args(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, Fn fn) {
  return guarded([&]() -> py::object {
    static const ArgSpec<0> spec(Name, {}, 0);
    spec.parse(args, nargs, kwnames, nullptr);
    return fn(*self_of(self));
  });
}

constexpr char kClose[] = "close";
constexpr char kUnlink[] = "unlink";
constexpr char kHeader[] = "header";
constexpr char kEnter[] = "__enter__";
constexpr char kRepr[] = "__repr__";

PyObject* fast_close(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args<kClose>(self, args, nargs, kwnames, [](Manager& m) {
    m.close();
    return py::none();
  });
}

PyObject* fast_unlink(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args<kUnlink>(self, args, nargs, kwnames, [](Manager& m) {
    m.unlink();
    return py::none();
  });
}

PyObject* fast_header(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args<kHeader>(self, args, nargs, kwnames, [](Manager& m) -> py::object { return m.header(); });
}

PyObject* fast_enter(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args<kEnter>(self, args, nargs, kwnames, [self](Manager&) { return borrow(self); });
}

PyObject* fast_repr(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return no_args<kRepr>(self, args, nargs, kwnames,
                        [](Manager& m) -> py::object { return py::str(m.repr()); });
}

PyObject* fast_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<3> spec("__exit__", {"exc_type", "exc_value", "traceback"}, 3);
    PyObject* a[3];
    spec.parse(args, nargs, kwnames, a);
    self_of(self)->close();
    return py::bool_(false);
  });
}

PyMethodDef g_statics[] = {
    {"create", fastcall_fn(fast_create), METH_FASTCALL | METH_KEYWORDS,
     "create(name, shape=(100,), dtype='float64', message_capacity=256, mode=384, exist_ok=False, "
     "backup=True, errors='replace')\n--\n\n"
     "Create a segment (exclusive; owner-only 0o600 unless `mode` says otherwise; pages\n"
     "reserved up front, so a full /dev/shm fails here with OSError(ENOSPC)). A segment of that\n"
     "name that exists already is FileExistsError, unless exist_ok=True.\n\n"
     "shape/dtype: the values array (little-endian bool, ints, floats, complex). shape=() holds\n"
     "one value (numpy's 0-d array); a shape with a 0 extent holds none (counter and message only).\n"
     "exist_ok: attach to an existing segment of the same layout (LayoutError naming every field\n"
     "that differs otherwise).\n"
     "backup: keep a second copy of the record so a writer killed mid-write loses nothing\n"
     "(False halves the copying for very large arrays; see docs/LAYOUT.md).\n"
     "errors: how read() decodes a message that is not valid UTF-8: 'replace' (U+FFFD)\n"
     "or 'strict' (MessageDecodeError with the offset of the first invalid byte)."},
    {"open", fastcall_fn(fast_open), METH_FASTCALL | METH_KEYWORDS,
     "open(name, readonly=False, timeout=0.0, errors='replace', stall_timeout=None)\n--\n\n"
     "Open an existing segment, validating every header field against the mapping.\n"
     "timeout: seconds to wait for a producer that has not created it yet (None: forever).\n"
     "errors: 'replace' or 'strict', the decode policy for invalid UTF-8 messages.\n"
     "stall_timeout: only for segments created with backup=False: seconds a read waits\n"
     "for a writer stuck mid-write before TornRecordError (None: 2 s + 4 ns per byte)."},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef g_methods[] = {
    {"read", fastcall_fn(fast_read), METH_FASTCALL | METH_KEYWORDS,
     "read($self, /)\n--\n\nA consistent snapshot (copy) of the record. Never waits for a writer.\n"
     "A snapshot you hold (or its values, or a view of them) never changes; once nothing holds\n"
     "the last one, the next read() refills it rather than allocating."},
    {"read_into", fastcall_fn(fast_read_into), METH_FASTCALL | METH_KEYWORDS,
     "read_into($self, /, out)\n--\n\nCopy a consistent record's values into `out` (same dtype and shape,\n"
     "C-contiguous, writeable) without allocating; returns the Snapshot with values=out."},
    {"publish", fastcall_fn(fast_publish), METH_FASTCALL | METH_KEYWORDS,
     "publish($self, /, values=None, message=None, counter=None, truncate=False, casting='equiv')\n--\n\n"
     "Write and publish in one call; a field given as None keeps its value. Returns the new\n"
     "sequence. `values` must have the segment's shape. `casting` (numpy's vocabulary: 'no',\n"
     "'equiv', 'safe', 'same_kind', 'unsafe') says which dtypes are converted: by default only\n"
     "the segment's own (byte-swapped too); a list or a number is np.asarray'ed first. A message\n"
     "longer than the slot raises MessageTooLongError unless truncate=True, which cuts it on a\n"
     "code-point boundary. While another writer holds the lock, it waits with the GIL released\n"
     "and Ctrl-C honoured."},
    {"wait", fastcall_fn(fast_wait), METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, seq, timeout=None, spin=0.0)\n--\n\n"
     "Block (GIL released, Ctrl-C honoured) until the sequence moves past `seq`; return the new\n"
     "one. Raises WaitTimeoutError (a TimeoutError) after `timeout` seconds. `spin`: seconds to\n"
     "poll with the CPU's pause instruction before sleeping on the futex (lower latency); the\n"
     "first 10 microseconds of it poll with the GIL held, the rest with the GIL released."},
    {"wait_async", fastcall_fn(fast_wait_async), METH_FASTCALL | METH_KEYWORDS,
     "wait_async($self, /, seq, timeout=None)\n--\n\n"
     "`await m.wait_async(seq)`: wait's asyncio twin, awaited in an event loop; returns the new\n"
     "sequence, WaitTimeoutError after `timeout` seconds (None: forever). No thread per wait: the\n"
     "process's notifier sleeps on the futexes of every waiting coroutine (futex_waitv) and wakes\n"
     "their loops. Cancelling the await withdraws it (writers stop waking for it). close() ends it:\n"
     "it raises ClosedError."},
    {"_prepare_wait", fastcall_fn(fast_prepare_wait), METH_FASTCALL | METH_KEYWORDS,
     "_prepare_wait($self, /, seq)\n--\n\nFor xshm._aio: the sequence when it is past `seq`, else a "
     "_Ticket."},
    {"write", fastcall_fn(fast_write), METH_FASTCALL | METH_KEYWORDS,
     "write($self, /, timeout=None, in_place=None)\n--\n\n"
     "`with m.write() as rec:` takes the writer mutex and gives the record to write\n"
     "(rec.values, rec.counter, rec.message); leaving the block publishes it. If the block\n"
     "raises, nothing is published, the record is as it was, and the mutex is released.\n\n"
     "in_place: None (default) writes rec.values straight into the shared record when the\n"
     "segment has a backup (readers get the previous record meanwhile; no copy) and into a\n"
     "private copy without one. True forces in place: without a backup, readers then stall\n"
     "(TornRecordError after their stall_timeout) while the block runs, and a block that\n"
     "raises or a writer killed inside leaves the record torn until the next publish of\n"
     "every field. False forces the private copy.\n\n"
     "rec.values and every array taken from it become read-only when the block ends; views\n"
     "derived from it (slices, reshapes) that outlive the block keep the values as the block\n"
     "left them, and writes through them stay private to this process."},
    {"lock", fastcall_fn(fast_lock), METH_FASTCALL | METH_KEYWORDS,
     "lock($self, /, timeout=None)\n--\n\n"
     "`with m.lock():` holds the process-shared writer mutex for your own critical section."},
    {"close", fastcall_fn(fast_close), METH_FASTCALL | METH_KEYWORDS,
     "close($self, /)\n--\n\nUnmap this handle (views of it stay valid). Never unlinks."},
    {"unlink", fastcall_fn(fast_unlink), METH_FASTCALL | METH_KEYWORDS,
     "unlink($self, /)\n--\n\nRemove the segment's name, if it still names this segment."},
    {"header", fastcall_fn(fast_header), METH_FASTCALL | METH_KEYWORDS,
     "header($self, /)\n--\n\n"
     "The header's fields as a dict (layout, creation id and time, seq, epoch, waiters,\n"
     "owner_pid, recoveries), read without taking any lock. For tools such as xshm inspect."},
    {"__enter__", fastcall_fn(fast_enter), METH_FASTCALL | METH_KEYWORDS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall_fn(fast_exit), METH_FASTCALL | METH_KEYWORDS,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nClose the handle."},
    {"__repr__", fastcall_fn(fast_repr), METH_FASTCALL | METH_KEYWORDS, "__repr__($self, /)\n--\n\n"},
    {nullptr, nullptr, 0, nullptr},
};

// ---- attributes: read-only, each refusing a set with its reason ----

/// A getter's value as a Python object (a C++ value cast, a Python one as it is).
template <class T>
py::object to_object(T&& v) {
  if constexpr (std::is_base_of_v<py::handle, std::decay_t<T>>)
    return py::reinterpret_borrow<py::object>(v);
  else
    return py::cast(std::forward<T>(v));
}

template <class Fn>
PyObject* get(PyObject* self, Fn fn) {
  return guarded([&]() -> py::object { return fn(*self_of(self)); });
}

#define XSHM_GETTER(attr, expr)                                                 \
  PyObject* get_##attr(PyObject* self, void*) {                                 \
    return get(self, [](Manager& m) -> py::object { return to_object(expr); }); \
  }

XSHM_GETTER(closed, m.closed())
XSHM_GETTER(name, m.name())
XSHM_GETTER(shape, m.shape())
XSHM_GETTER(dtype, m.dtype())
XSHM_GETTER(message_capacity, m.message_capacity())
XSHM_GETTER(readonly, m.readonly())
XSHM_GETTER(backup, m.backup())
XSHM_GETTER(errors, m.errors())
XSHM_GETTER(nbytes, m.nbytes())
XSHM_GETTER(recoveries, m.recoveries())
XSHM_GETTER(owner_pid, m.owner_pid())
#undef XSHM_GETTER

PyObject* get_seq(PyObject* self, void*) {
  return guarded([&] { return py::int_(self_of(self)->seq()); });
}

PyObject* get_live_values(PyObject* self, void*) {
  return guarded([&] { return self_of(self)->live_values(); });
}

#define XSHM_RO(attr, getter, doc, why) \
  { attr, getter, refuse_set, doc, const_cast<char*>("SharedMemoryManager." attr " cannot be changed" why) }

PyGetSetDef g_getset[] = {
    XSHM_RO("closed", get_closed, "True after close().", ": call close()"),
    XSHM_RO("name", get_name, "The canonical name, with its leading '/'.",
            ": a segment's name is fixed when it is created"),
    XSHM_RO("shape", get_shape, "Shape of the values array.",
            ": a segment's layout is fixed when it is created"),
    XSHM_RO("dtype", get_dtype, "numpy dtype of the values array.",
            ": a segment's layout is fixed when it is created"),
    XSHM_RO("message_capacity", get_message_capacity, "Bytes of the message slot.",
            ": a segment's layout is fixed when it is created"),
    XSHM_RO("readonly", get_readonly, "True when opened with readonly=True.",
            ": it is chosen when the handle is opened"),
    XSHM_RO("backup", get_backup, "True when the segment keeps a backup record.",
            ": a segment's layout is fixed when it is created"),
    XSHM_RO("errors", get_errors, "The message decode policy: 'replace' or 'strict'.",
            ": it is chosen when the handle is opened"),
    XSHM_RO("nbytes", get_nbytes, "Size of the segment in bytes.",
            ": a segment's layout is fixed when it is created"),
    XSHM_RO("recoveries", get_recoveries, "Times a writer recovered after a writer died mid-write.",
            ": the writers count it"),
    XSHM_RO("owner_pid", get_owner_pid, "Pid holding the writer mutex, 0 when none.", ": the writers set it"),
    XSHM_RO("seq", get_seq, "Completed publishes; only grows; never shows one in progress.",
            ": it counts publishes (publish() moves it)"),
    XSHM_RO("live_values", get_live_values,
            "Zero-copy, read-only numpy view of the live values. It may show a publish in\n"
            "progress (use read() for a consistent copy) and stays valid after close().",
            ": publish(values=...) or a `with m.write() as rec:` block writes the values"),
    XSHM_RO("values", get_live_values,
            "The old name of live_values, kept as an alias: the live view, which may show a\n"
            "publish in progress (a snapshot's .values is the consistent copy).",
            ": publish(values=...) or a `with m.write() as rec:` block writes the values"),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
#undef XSHM_RO

}  // namespace

void register_manager(py::class_<Manager>& cls) { install(cls, g_methods, g_statics, g_getset); }

}  // namespace xshm_py
