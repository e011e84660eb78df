// xshm.Snapshot, what read() and read_into() return: a small C type rather than a pybind11
// class, because read() is the hot path and a pybind11 instance costs ~200 ns to make, this
// one ~50 ns. Read-only attributes; it owns its values array and message str.
#pragma once

#include <pybind11/pybind11.h>

#include <xshm/reader.hpp>

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
};

/// The type, made by register_snapshot().
extern PyTypeObject* g_snapshot_type;

/// Creates xshm.Snapshot and adds it to the module.
void register_snapshot(py::module_& mod);

/// A Snapshot of `info`, taking over `values` and `message`.
inline py::object make_snapshot(const xshm::RecordInfo& info, py::object values, py::str message) {
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

}  // namespace xshm_py
