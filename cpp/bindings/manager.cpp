// The definitions behind manager.hpp (what it binds and why is said there).
#include "manager.hpp"

#include "blocks.hpp"
#include "fastcall.hpp"

namespace xshm_py {

namespace {

// ---- fast entry points for the hot methods ----
// They replace the pybind11 attributes of the class (register_manager) and call the same
// Manager methods; errors go through the same translator (fastcall.hpp).

Manager* self_of(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<Manager*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<Manager&>();
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
    const bool truncate = as_bool(a[3]);
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
    {"read", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_read)),
     METH_FASTCALL | METH_KEYWORDS,
     "read($self, /)\n--\n\nA consistent snapshot (copy) of the record. Never waits for a writer.\n"
     "A snapshot you hold (or its values, or a view of them) never changes; once nothing holds\n"
     "the last one, the next read() refills it rather than allocating."},
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
    {"wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_wait)),
     METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, seq, timeout=None, spin=0.0)\n--\n\n"
     "Block (GIL released, Ctrl-C honoured) until the sequence moves past `seq`; return the new\n"
     "one. Raises WaitTimeoutError (a TimeoutError) after `timeout` seconds. `spin`: seconds to\n"
     "poll with the CPU's pause instruction before sleeping on the futex (lower latency); the\n"
     "first 10 microseconds of it poll with the GIL held, the rest with the GIL released."},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* fast_live_values(PyObject* self, void*) {
  return guarded([&] { return self_of(self)->live_values(); });
}

PyGetSetDef g_fast_getset[] = {
    {"seq", fast_seq, nullptr, "Completed publishes; only grows; never shows one in progress.", nullptr},
    {"live_values", fast_live_values, nullptr,
     "Zero-copy, read-only numpy view of the live values. It may show a publish in\n"
     "progress (use read() for a consistent copy) and stays valid after close().",
     nullptr},
    {"values", fast_live_values, nullptr,
     "The old name of live_values, kept as an alias: the live view, which may show a\n"
     "publish in progress (a snapshot's .values is the consistent copy).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

void register_manager(py::class_<Manager>& cls) {
  cls.def_static("create", &Manager::create, py::arg("name"), py::arg("shape") = py::make_tuple(100),
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
      .def_static("open", &Manager::open, py::arg("name"), py::arg("readonly") = false,
                  py::arg("timeout") = 0.0, py::arg("errors") = "replace",
                  py::arg("stall_timeout") = py::none(),
                  "Open an existing segment, validating every header field against the mapping.\n"
                  "timeout: seconds to wait for a producer that has not created it yet.\n"
                  "errors: 'replace' or 'strict', the decode policy for invalid UTF-8 messages.\n"
                  "stall_timeout: only for segments created with backup=False: seconds a read waits\n"
                  "for a writer stuck mid-write before TornRecordError (None: 2 s + 4 ns per byte).")
      .def("close", &Manager::close, "Unmap this handle (views of it stay valid). Never unlinks.")
      .def("unlink", &Manager::unlink, "Remove the segment's name, if it still names this segment.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](Manager& m, const py::object&, const py::object&, const py::object&) {
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
      .def_property_readonly("recoveries", &Manager::recoveries,
                             "Times a writer recovered after a writer died mid-write.")
      .def_property_readonly("owner_pid", &Manager::owner_pid, "Pid holding the writer mutex, 0 when none.")
      .def("header", &Manager::header,
           "The header's fields as a dict (layout, creation id and time, seq, epoch, waiters,\n"
           "owner_pid, recoveries), read without taking any lock. For tools such as xshm inspect.")
      .def(
          "write",
          [](Manager& m, std::optional<double> timeout, std::optional<bool> in_place) {
            const xshm::WriteMode mode = !in_place   ? xshm::WriteMode::automatic
                                         : *in_place ? xshm::WriteMode::in_place
                                                     : xshm::WriteMode::staged;
            return WriteBlock(m, timeout, mode);
          },
          py::arg("timeout") = py::none(), py::arg("in_place") = py::none(), py::keep_alive<0, 1>(),
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
          "left them, and writes through them stay private to this process.")
      .def(
          "lock", [](Manager& m, std::optional<double> timeout) { return LockBlock(m, timeout); },
          py::arg("timeout") = py::none(), py::keep_alive<0, 1>(),
          "`with m.lock():` holds the process-shared writer mutex for your own critical section.")
      .def("__repr__", &Manager::repr);

  // The hot methods: METH_FASTCALL descriptors on the same class (see fast_read & co).
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  for (PyMethodDef* def = g_fast_methods; def->ml_name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewMethod(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(descr);
  }
  for (PyGetSetDef* def = g_fast_getset; def->name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewGetSet(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->name) = py::reinterpret_steal<py::object>(descr);
  }
}

}  // namespace xshm_py
