// The definitions behind blocks.hpp (what it binds and why is said there).
#include "blocks.hpp"

#include "fastcall.hpp"

namespace xshm_py {

namespace {

// ---- fast entry points: a write block's enter, exit and record fields are its hot path ----
// (pybind11's dispatcher costs ~100 ns a call, several times a block). They replace the
// pybind11 attributes of the classes (register_blocks) and call the same methods.

template <class T>
T* self_as(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) return static_cast<T*>(inst->simple_value_holder[0]);
  return &py::handle(self).cast<T&>();
}

PyObject* record_values(PyObject* self, void*) {
  return guarded([&] { return self_as<Record>(self)->values(); });
}

PyObject* record_counter(PyObject* self, void*) {
  return guarded([&] { return py::int_(self_as<Record>(self)->counter()); });
}

int record_set_counter(PyObject* self, PyObject* value, void*) {
  PyObject* r = guarded([&]() -> py::object {
    if (value == nullptr) throw py::attribute_error("counter cannot be deleted");
    self_as<Record>(self)->set_counter(as_u64(value, "counter"));
    return py::none();
  });
  if (r == nullptr) return -1;
  Py_DECREF(r);
  return 0;
}

PyObject* record_message(PyObject* self, void*) {
  return guarded([&] { return self_as<Record>(self)->message(); });
}

int record_set_message(PyObject* self, PyObject* value, void*) {
  PyObject* r = guarded([&]() -> py::object {
    if (value == nullptr) throw py::attribute_error("message cannot be deleted");
    self_as<Record>(self)->set_message(py::handle(value).cast<std::string>());
    return py::none();
  });
  if (r == nullptr) return -1;
  Py_DECREF(r);
  return 0;
}

PyGetSetDef g_record_getset[] = {
    {"values", record_values, nullptr,
     "The values to publish, writable inside the block (the shared record itself when in\n"
     "place); read-only when the block ends.",
     nullptr},
    {"counter", record_counter, record_set_counter, "The counter to publish.", nullptr},
    {"message", record_message, record_set_message,
     "The message to publish; longer than the slot raises MessageTooLongError.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* block_enter(PyObject* self, PyObject*) {
  return guarded([&] { return py::cast(self_as<WriteBlock>(self)->enter()); });
}

PyObject* block_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return guarded([&] {
    if (nargs != 3) throw py::type_error("__exit__() takes 3 arguments");
    const py::object none = py::none();
    const bool r = self_as<WriteBlock>(self)->exit(py::reinterpret_borrow<py::object>(args[0]), none, none);
    return py::bool_(r);
  });
}

PyMethodDef g_block_methods[] = {
    {"__enter__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_enter)), METH_NOARGS,
     "__enter__($self, /)\n--\n\nTakes the writer mutex; returns the Record to write."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_exit)), METH_FASTCALL,
     "__exit__($self, arg0, arg1, arg2, /)\n--\n\n"
     "Publishes the record, or nothing when the block raised; releases the mutex."},
    {nullptr, nullptr, 0, nullptr},
};

/// Puts the fast descriptors on the class, over pybind11's attributes of the same names.
template <class Cls>
void install(Cls& cls, PyMethodDef* methods, PyGetSetDef* getset) {
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  for (PyMethodDef* def = methods; def != nullptr && def->ml_name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewMethod(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(descr);
  }
  for (PyGetSetDef* def = getset; def != nullptr && def->name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewGetSet(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->name) = py::reinterpret_steal<py::object>(descr);
  }
}

}  // namespace

void register_blocks(py::module_& mod) {
  py::class_<Record> record(mod, "Record", "The record being written inside `with m.write() as rec:`.");
  record.def("set_message", &Record::set_message, py::arg("message"), py::arg("truncate") = false,
             "Sets the message. Longer than the slot raises MessageTooLongError, unless\n"
             "truncate=True, which cuts it on a code-point boundary to fit.");
  install(record, nullptr, g_record_getset);

  py::class_<WriteBlock> block(mod, "WriteBlock", "Context manager returned by SharedMemoryManager.write().");
  block.def_property_readonly("seq", &WriteBlock::seq,
                              "The sequence the block published, None before or on error.");
  install(block, g_block_methods, nullptr);

  py::class_<LockBlock>(mod, "LockBlock", "Context manager returned by SharedMemoryManager.lock().")
      .def("__enter__", &LockBlock::enter)
      .def("__exit__", &LockBlock::exit);
}

}  // namespace xshm_py
