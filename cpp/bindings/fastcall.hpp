// xshm._core's fast-call machinery: every public method is a METH_FASTCALL function and every
// attribute a getset descriptor, put on the pybind11 classes by install(). The hot ones
// (read, read_into, publish, wait, seq) need it because pybind11's dispatcher and keyword
// machinery cost 0.2 to 1.5 us per call; all of them, so that a wrong argument gets xshm's
// words (args.hpp) and Python's own arity messages, never pybind11's "incompatible function
// arguments". ArgSpec matches the arguments (keyword names by pointer: they arrive interned);
// guarded() maps exceptions like pybind11 would.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "errors.hpp"

namespace xshm_py {

namespace py = pybind11;

/// Runs f() (returning a py::object) and hands its result to CPython, or sets the Python
/// error of what it threw (the translator of errors.hpp for C++ exceptions).
template <class F>
inline PyObject* guarded(F&& f) noexcept {
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
    if (nargs > n)
      throw py::type_error(std::string(fname) + "() takes at most " + std::to_string(n) + " arguments (" +
                           std::to_string(nargs) + " given)");
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

/// The setter of an attribute that cannot be changed (set or deleted): AttributeError with xshm's reason,
/// the `closure` of its PyGetSetDef ("WriteBlock.seq cannot be changed: ...").
inline int refuse_set(PyObject*, PyObject*, void* closure) {
  PyErr_SetString(PyExc_AttributeError, static_cast<const char*>(closure));
  return -1;
}

/// `__init__` of the classes that xshm makes and a user does not: TypeError saying how to get
/// one (pybind11 would say "No constructor defined!").
inline PyObject* refuse_init(PyObject* self, PyObject*, PyObject*) {
  const std::string cls = Py_TYPE(self)->tp_name;
  const std::string name = cls.substr(cls.rfind('.') + 1);
  std::string how = "made by xshm";
  if (name == "SharedMemoryManager")
    how = "made by SharedMemoryManager.create(name, ...) or SharedMemoryManager.open(name, ...)";
  else if (name == "WriteBlock")
    how = "made by m.write(), to use as `with m.write() as rec:`";
  else if (name == "Record")
    how = "given by `with m.write() as rec:`";
  else if (name == "LockBlock")
    how = "made by m.lock(), to use as `with m.lock():`";
  else if (name == "Stream")
    how = "made by Stream.create(name, capacity, ...) or Stream.open(name, ...)";
  else if (name == "StreamReader")
    how = "made by s.reader(start='oldest' or 'latest') of a Stream";
  else if (name == "StreamClaim")
    how = "made by s.claim(nbytes) or s.try_claim(nbytes) of a Stream";
  else if (name == "MessageView")
    how = "made by r.recv_view() of a StreamReader";
  PyErr_SetString(PyExc_TypeError, (name + " objects cannot be made directly: they are " + how).c_str());
  return nullptr;
}

/// Puts fast descriptors on a pybind11 class, over its attributes of the same names: methods
/// (`statics`: static methods, called without self), attributes, and an __init__ that refuses.
inline void install(py::handle cls, PyMethodDef* methods, PyMethodDef* statics, PyGetSetDef* getset) {
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  static PyMethodDef init_def = {
      "__init__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(refuse_init)),
      METH_VARARGS | METH_KEYWORDS, "Not for users: see the class's documentation."};
  PyObject* init = PyDescr_NewMethod(type, &init_def);
  if (init == nullptr) throw py::error_already_set();
  cls.attr("__init__") = py::reinterpret_steal<py::object>(init);
  for (PyMethodDef* def = methods; def != nullptr && def->ml_name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewMethod(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(descr);
  }
  for (PyMethodDef* def = statics; def != nullptr && def->ml_name != nullptr; ++def) {
    py::object module = cls.attr("__module__");
    py::object fn = py::reinterpret_steal<py::object>(PyCFunction_NewEx(def, nullptr, module.ptr()));
    if (!fn) throw py::error_already_set();
    PyObject* sm = PyStaticMethod_New(fn.ptr());
    if (sm == nullptr) throw py::error_already_set();
    cls.attr(def->ml_name) = py::reinterpret_steal<py::object>(sm);
  }
  for (PyGetSetDef* def = getset; def != nullptr && def->name != nullptr; ++def) {
    PyObject* descr = PyDescr_NewGetSet(type, def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def->name) = py::reinterpret_steal<py::object>(descr);
  }
}

/// A METH_FASTCALL | METH_KEYWORDS function as PyMethodDef wants it.
template <class F>
inline PyCFunction fastcall_fn(F* f) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(f));
}

/// A setter's body run like guarded(): 0, or -1 with the Python error set.
template <class F>
inline int guarded_set(F&& f) noexcept {
  PyObject* r = guarded([&]() -> py::object {
    f();
    return py::none();
  });
  if (r == nullptr) return -1;
  Py_DECREF(r);
  return 0;
}

}  // namespace xshm_py
