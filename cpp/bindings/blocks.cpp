// The definitions behind blocks.hpp (what it binds and why is said there): the Record,
// WriteBlock and LockBlock classes as Python sees them, every method a METH_FASTCALL function
// and every attribute a getset descriptor (fastcall.hpp; a write block's enter, exit and record
// fields are its hot path, and pybind11's dispatcher costs ~100 ns a call, several times a
// block), each argument checked in xshm's words (args.hpp).
#include "blocks.hpp"

#include "args.hpp"
#include "casting.hpp"
#include "fastcall.hpp"

namespace xshm_py {

namespace {

template <class T>
T* self_as(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<T*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<T&>();
}

// ---- Record ----

PyObject* record_values(PyObject* self, void*) {
  return guarded([&] { return self_as<Record>(self)->values(); });
}

int record_set_values(PyObject* self, PyObject* value, void*) {
  return guarded_set([&] {
    if (value == nullptr) throw py::attribute_error("Record.values cannot be deleted");
    self_as<Record>(self)->set_values(value, Casting::Equiv);
  });
}

PyObject* record_counter(PyObject* self, void*) {
  return guarded([&] { return py::int_(self_as<Record>(self)->counter()); });
}

int record_set_counter(PyObject* self, PyObject* value, void*) {
  return guarded_set([&] {
    if (value == nullptr) throw py::attribute_error("Record.counter cannot be deleted");
    self_as<Record>(self)->set_counter(arg_u64(value, "counter"));
  });
}

PyObject* record_message(PyObject* self, void*) {
  return guarded([&] { return self_as<Record>(self)->message(); });
}

int record_set_message(PyObject* self, PyObject* value, void*) {
  return guarded_set([&] {
    if (value == nullptr) throw py::attribute_error("Record.message cannot be deleted");
    self_as<Record>(self)->set_message(arg_str(value, "message"));
  });
}

PyObject* record_set_message_fn(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<2> spec("set_message", {"message", "truncate"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    const std::string_view m = arg_str(a[0], "message");
    const bool truncate = a[1] != nullptr && arg_bool(a[1], "truncate");
    self_as<Record>(self)->set_message(m, truncate);
    return py::none();
  });
}

PyObject* record_set_values_fn(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&] {
    static const ArgSpec<2> spec("set_values", {"values", "casting"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    const Casting casting = arg_casting(a[1]);
    self_as<Record>(self)->set_values(a[0], casting);
    return py::none();
  });
}

PyGetSetDef g_record_getset[] = {
    {"values", record_values, record_set_values,
     "The values to publish, writable inside the block (the shared record itself when in\n"
     "place); read-only when the block ends. `rec.values = x` copies x into them, as numpy\n"
     "assignment does, if x has the record's dtype (see set_values to convert).",
     nullptr},
    {"counter", record_counter, record_set_counter, "The counter to publish.", nullptr},
    {"message", record_message, record_set_message,
     "The message to publish; longer than the slot raises MessageTooLongError.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef g_record_methods[] = {
    {"set_message", fastcall_fn(record_set_message_fn), METH_FASTCALL | METH_KEYWORDS,
     "set_message($self, /, message, truncate=False)\n--\n\n"
     "Sets the message. Longer than the slot raises MessageTooLongError, unless\n"
     "truncate=True, which cuts it on a code-point boundary to fit."},
    {"set_values", fastcall_fn(record_set_values_fn), METH_FASTCALL | METH_KEYWORDS,
     "set_values($self, /, values, casting='equiv')\n--\n\n"
     "Copies `values` into the record's values, as numpy assignment does (the record's shape,\n"
     "or one that broadcasts to it). `casting` (numpy's vocabulary: 'no', 'equiv', 'safe',\n"
     "'same_kind', 'unsafe') says which dtypes are converted: by default only the record's own;\n"
     "a list or a number is np.asarray'ed first. `rec.values = x` is set_values(x)."},
    {nullptr, nullptr, 0, nullptr},
};

// ---- WriteBlock ----

PyObject* block_enter(PyObject* self, PyObject*) {
  return guarded([&] { return py::cast(self_as<WriteBlock>(self)->enter()); });
}

PyObject* block_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return guarded([&] {
    if (nargs != 3)
      throw py::type_error("__exit__() takes exactly 3 arguments (" + std::to_string(nargs) + " given)");
    const py::object none = py::none();
    const bool r = self_as<WriteBlock>(self)->exit(py::reinterpret_borrow<py::object>(args[0]), none, none);
    return py::bool_(r);
  });
}

PyObject* block_seq(PyObject* self, void*) {
  return guarded([&] { return py::cast(self_as<WriteBlock>(self)->seq()); });
}

PyMethodDef g_block_methods[] = {
    {"__enter__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_enter)), METH_NOARGS,
     "__enter__($self, /)\n--\n\nTakes the writer mutex; returns the Record to write."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_exit)), METH_FASTCALL,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Publishes the record, or nothing when the block raised; releases the mutex."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef g_block_getset[] = {
    {"seq", block_seq, refuse_set, "The sequence the block published, None before or on error.",
     const_cast<char*>("WriteBlock.seq cannot be changed: it is the sequence the block published")},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// ---- LockBlock ----

PyObject* lock_enter(PyObject* self, PyObject*) {
  return guarded([&] {
    self_as<LockBlock>(self)->enter();
    return py::none();
  });
}

PyObject* lock_exit(PyObject* self, PyObject* const*, Py_ssize_t nargs) {
  return guarded([&] {
    if (nargs != 3)
      throw py::type_error("__exit__() takes exactly 3 arguments (" + std::to_string(nargs) + " given)");
    const py::object none = py::none();
    return py::bool_(self_as<LockBlock>(self)->exit(none, none, none));
  });
}

PyMethodDef g_lock_methods[] = {
    {"__enter__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(lock_enter)), METH_NOARGS,
     "__enter__($self, /)\n--\n\nTakes the writer mutex."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(lock_exit)), METH_FASTCALL,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nReleases the writer mutex."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

void register_blocks(py::module_& mod) {
  py::class_<Record> record(mod, "Record", "The record being written inside `with m.write() as rec:`.");
  install(record, g_record_methods, nullptr, g_record_getset);
  py::class_<WriteBlock> block(mod, "WriteBlock", "Context manager returned by SharedMemoryManager.write().");
  install(block, g_block_methods, nullptr, g_block_getset);
  py::class_<LockBlock> lock(mod, "LockBlock", "Context manager returned by SharedMemoryManager.lock().");
  install(lock, g_lock_methods, nullptr, nullptr);
}

}  // namespace xshm_py
