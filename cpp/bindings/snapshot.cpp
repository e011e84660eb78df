// The definitions behind snapshot.hpp (what it binds and why is said there).
#include "snapshot.hpp"

#include <structmember.h>

#include <cstddef>

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

PyMemberDef snapshot_members[] = {
    {"seq", T_ULONGLONG, offsetof(SnapshotObject, seq), READONLY,
     "The publish this record came from (1 for the first)."},
    {"counter", T_OBJECT_EX, offsetof(SnapshotObject, counter_int), READONLY, "The writer's counter."},
    {"timestamp_ns", T_LONGLONG, offsetof(SnapshotObject, timestamp_ns), READONLY,
     "Wall-clock time of the publish, ns since the epoch."},
    {"writer_pid", T_ULONGLONG, offsetof(SnapshotObject, writer_pid), READONLY,
     "Pid of the process that published it."},
    {"values", T_OBJECT_EX, offsetof(SnapshotObject, values), READONLY,
     "The values (a private copy, or the read_into target)."},
    {"message", T_OBJECT_EX, offsetof(SnapshotObject, message), READONLY, "The message, decoded from UTF-8."},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef snapshot_getset[] = {
    {"timestamp", snapshot_timestamp, nullptr,
     "Wall-clock time of the publish, seconds since the epoch (like time.time()).", nullptr},
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

}  // namespace

void register_snapshot(py::module_& mod) {
  g_snapshot_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&snapshot_spec));
  if (g_snapshot_type == nullptr) throw py::error_already_set();
  mod.attr("Snapshot") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(g_snapshot_type));
  mod.attr("Snapshot").attr("__module__") = "xshm";
}

}  // namespace xshm_py
