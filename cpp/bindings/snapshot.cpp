// The definitions behind snapshot.hpp (what it binds and why is said there).
#include "snapshot.hpp"

#include <cstddef>

#include "arrow.hpp"
#include "fastcall.hpp"

namespace xshm_py {

PyTypeObject* g_snapshot_type = nullptr;

namespace {

void snapshot_dealloc(PyObject* self) {
  auto* s = reinterpret_cast<SnapshotObject*>(self);
  Py_XDECREF(s->values);
  Py_XDECREF(s->message);
  Py_XDECREF(s->counter_int);
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

PyObject* snapshot_seq(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(reinterpret_cast<SnapshotObject*>(self)->seq);
}

PyObject* snapshot_counter(PyObject* self, void*) {
  PyObject* c = reinterpret_cast<SnapshotObject*>(self)->counter_int;
  Py_INCREF(c);
  return c;
}

PyObject* snapshot_timestamp_ns(PyObject* self, void*) {
  return PyLong_FromLongLong(reinterpret_cast<SnapshotObject*>(self)->timestamp_ns);
}

PyObject* snapshot_writer_pid(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(reinterpret_cast<SnapshotObject*>(self)->writer_pid);
}

PyObject* snapshot_values(PyObject* self, void*) {
  PyObject* v = reinterpret_cast<SnapshotObject*>(self)->values;
  Py_INCREF(v);
  return v;
}

PyObject* snapshot_message(PyObject* self, void*) {
  PyObject* m = reinterpret_cast<SnapshotObject*>(self)->message;
  Py_INCREF(m);
  return m;
}

/// Only read() and read_into() make snapshots (the type's object fields are never null).
PyObject* snapshot_new(PyTypeObject*, PyObject*, PyObject*) {
  PyErr_SetString(PyExc_TypeError,
                  "Snapshot objects cannot be made directly: they are made by m.read() and m.read_into(out)");
  return nullptr;
}

/// A snapshot never changes: every attribute refuses to be set or deleted, saying so (CPython's member
/// descriptors would say only "readonly attribute").
int snapshot_refuse_set(PyObject*, PyObject*, void* closure) {
  PyErr_Format(PyExc_AttributeError,
               "Snapshot.%s cannot be changed: a snapshot is a consistent copy of one record and never "
               "changes (copy its values to change them, or publish a new record)",
               static_cast<const char*>(closure));
  return -1;
}

#define XSHM_SNAP_ATTR(attr, doc) \
  { #attr, snapshot_##attr, snapshot_refuse_set, doc, const_cast < char*>(#attr) }

PyGetSetDef snapshot_getset[] = {
    XSHM_SNAP_ATTR(seq, "The publish this record came from (1 for the first)."),
    XSHM_SNAP_ATTR(counter, "The writer's counter."),
    XSHM_SNAP_ATTR(timestamp_ns, "Wall-clock time of the publish, ns since the epoch."),
    XSHM_SNAP_ATTR(timestamp, "Wall-clock time of the publish, seconds since the epoch (like time.time())."),
    XSHM_SNAP_ATTR(writer_pid, "Pid of the process that published it."),
    XSHM_SNAP_ATTR(values, "The values (a private copy, or the read_into target)."),
    XSHM_SNAP_ATTR(message, "The message, decoded from UTF-8."),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
#undef XSHM_SNAP_ATTR

PyObject* snapshot_dlpack(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return dlpack_export(reinterpret_cast<SnapshotObject*>(self)->values, args, nargs, kwnames,
                       "Snapshot.__dlpack__");
}

PyObject* snapshot_dlpack_device(PyObject*, PyObject*) { return dlpack_device(); }

/// The buffer protocol: the values' buffer itself (memoryview(snap), np.asarray(snap)).
int snapshot_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  return PyObject_GetBuffer(reinterpret_cast<SnapshotObject*>(self)->values, view, flags);
}

PyObject* snapshot_arrow_c_schema(PyObject* self, PyObject*) {
  return guarded([&] { return snapshot_arrow_schema(self); });
}

PyObject* snapshot_arrow_c_array(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<1> spec("__arrow_c_array__", {"requested_schema"}, 0);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    return snapshot_arrow_array(self);
  });
}

PyMethodDef snapshot_methods[] = {
    {"__arrow_c_schema__", snapshot_arrow_c_schema, METH_NOARGS,
     "__arrow_c_schema__($self, /)\n--\n\n"
     "The Arrow schema (a PyCapsule): a struct of seq, counter, timestamp, writer_pid, message and\n"
     "values (nested fixed-size lists, one per dimension)."},
    {"__arrow_c_array__", fastcall_fn(snapshot_arrow_c_array), METH_FASTCALL | METH_KEYWORDS,
     "__arrow_c_array__($self, /, requested_schema=None)\n--\n\n"
     "The snapshot as a one-row Arrow struct array: (schema, array) PyCapsules; the values are\n"
     "the snapshot's own buffer, no copy (bool values are packed into bits: a copy)."},
    {"__dlpack__", fastcall_fn(snapshot_dlpack), METH_FASTCALL | METH_KEYWORDS,
     "__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "The values as a DLPack capsule (versioned when max_version >= (1, 0), else legacy), no copy:\n"
     "np.from_dlpack(snap), jax.dlpack.from_dlpack(snap), torch.from_dlpack(snap) share the\n"
     "snapshot's own 64-byte aligned buffer, kept alive while they hold it."},
    {"__dlpack_device__", snapshot_dlpack_device, METH_NOARGS,
     "__dlpack_device__($self, /)\n--\n\n(1, 0): the CPU (kDLCPU, device 0)."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot snapshot_slots[] = {
    {Py_tp_methods, snapshot_methods},
    {Py_bf_getbuffer, reinterpret_cast<void*>(snapshot_getbuffer)},
    {Py_tp_dealloc, reinterpret_cast<void*>(snapshot_dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(snapshot_repr)},
    {Py_tp_getset, snapshot_getset},
    {Py_tp_new, reinterpret_cast<void*>(snapshot_new)},
    {Py_tp_doc, const_cast<char*>("A consistent copy of a segment's record.")},
    {0, nullptr},
};

PyType_Spec snapshot_spec = {"xshm.Snapshot", sizeof(SnapshotObject), 0, Py_TPFLAGS_DEFAULT, snapshot_slots};

}  // namespace

void register_snapshot(py::module_& mod) {
  g_snapshot_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&snapshot_spec));
  if (g_snapshot_type == nullptr) throw py::error_already_set();
  mod.attr("Snapshot") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(g_snapshot_type));
  mod.attr("Snapshot").attr("__module__") = "xshm";
}

}  // namespace xshm_py
