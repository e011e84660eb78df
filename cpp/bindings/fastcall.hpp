// xshm._core's fast-call argument parsing: the hot methods (read, read_into, publish, wait,
// seq) are METH_FASTCALL functions, because pybind11's dispatcher and keyword machinery cost
// 0.2 to 1.5 us per call there. ArgSpec matches their few arguments (keyword names by
// pointer: they arrive interned); guarded() maps exceptions like pybind11 would.
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
      throw py::type_error(std::string(fname) + "() takes at most " + std::to_string(n) + " arguments");
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

/// An int as u64; TypeError for anything else, OverflowError when negative or too large.
inline std::uint64_t as_u64(PyObject* o, const char* what) {
  if (!PyLong_Check(o)) throw py::type_error(std::string(what) + " must be an int");
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

/// A number of seconds, or nullopt for None / not given.
inline std::optional<double> as_opt_seconds(PyObject* o, const char* what) {
  if (o == nullptr || o == Py_None) return std::nullopt;
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(what) + " must be a number of seconds or None");
  }
  return v;
}

/// Truthiness, false when not given.
inline bool as_bool(PyObject* o) {
  if (o == nullptr) return false;
  const int t = PyObject_IsTrue(o);
  if (t < 0) throw py::error_already_set();
  return t != 0;
}

}  // namespace xshm_py
