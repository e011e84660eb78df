// xshm._core's argument checks: every parameter of the public API is taken as a Python object and
// converted here, so that a wrong argument gets xshm's words naming the parameter (TypeError for
// a wrong type, ArgumentError, a ValueError, for a wrong value) instead of pybind11's
// "incompatible function arguments" or CPython's "can't convert negative int to unsigned".
// The hot paths (an exact int, a float, True/False) cost what the old conversions did.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <xshm/clock.hpp>
#include <xshm/errors.hpp>

namespace xshm_py {

namespace py = pybind11;

/// The name of o's type, as Python writes it ("str", "numpy.float64").
inline std::string type_name(PyObject* o) { return Py_TYPE(o)->tp_name; }

/// repr(o), for a message; never throws.
inline std::string repr_of(PyObject* o) {
  PyObject* r = PyObject_Repr(o);
  if (r == nullptr) {
    PyErr_Clear();
    return "<" + type_name(o) + ">";
  }
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(r, &n);
  std::string out = s != nullptr ? std::string(s, static_cast<std::size_t>(n)) : "<" + type_name(o) + ">";
  if (s == nullptr) PyErr_Clear();
  Py_DECREF(r);
  if (out.size() > 60) out = out.substr(0, 57) + "...";
  return out;
}

/// The pending Python error's text (str(exc)), cleared; for wrapping numpy's messages.
inline std::string take_error_text() {
  if (!PyErr_Occurred()) return "unknown error";
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  std::string text = value != nullptr ? repr_of(value) : "unknown error";
  if (value != nullptr) {
    PyObject* s = PyObject_Str(value);
    if (s != nullptr) {
      const char* u = PyUnicode_AsUTF8(s);
      if (u != nullptr) text = u;
      Py_DECREF(s);
    }
    PyErr_Clear();
  }
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return text;
}

/// True for the integers Python and numpy use: int (and bool) and anything with __index__,
/// never a float.
inline bool is_integer(PyObject* o) { return PyLong_Check(o) || (!PyFloat_Check(o) && PyIndex_Check(o)); }

/// arg_u64's cases off the fast path: an int out of range (its error pending), another integer
/// type, or not an integer at all.
[[gnu::noinline]] inline std::uint64_t arg_u64_slow(PyObject* o, const char* name) {
  if (PyLong_CheckExact(o)) {
    PyErr_Clear();
  } else if (!is_integer(o)) {
    throw py::type_error(std::string(name) + " must be an integer in 0..2**64-1, not " + type_name(o));
  } else {
    PyObject* i = PyNumber_Index(o);  // an array of several integers has __index__, and refuses
    if (i == nullptr)
      throw py::type_error(std::string(name) + " must be an integer in 0..2**64-1, not " + type_name(o) +
                           " (" + take_error_text() + ")");
    const unsigned long long v = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (!(v == static_cast<unsigned long long>(-1) && PyErr_Occurred())) return v;
    PyErr_Clear();
  }
  throw xshm::ArgumentError(std::string(name) + " must be an integer in 0..2**64-1, got " + repr_of(o));
}

/// An integer parameter in 0..2**64-1: TypeError for a non-integer, ArgumentError out of range.
/// An int in range is the inline fast path (wait(seq), publish(counter=)).
[[gnu::always_inline]] inline std::uint64_t arg_u64(PyObject* o, const char* name) {
  if (PyLong_CheckExact(o)) {
    const unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v != static_cast<unsigned long long>(-1) || !PyErr_Occurred()) return v;
  }
  return arg_u64_slow(o, name);
}

/// A flag: True or False (numpy's bool_ and the ints 0 and 1 too). TypeError otherwise: a
/// string such as "no" is true to Python, and would silently say yes.
inline bool arg_bool(PyObject* o, const char* name, const char* choices = "True or False") {
  if (o == Py_True) return true;
  if (o == Py_False) return false;
  if (PyLong_Check(o) || std::string_view(Py_TYPE(o)->tp_name) == "numpy.bool" ||
      std::string_view(Py_TYPE(o)->tp_name) == "numpy.bool_") {
    const int t = PyObject_IsTrue(o);
    if (t < 0) throw py::error_already_set();
    if (!PyLong_Check(o) || PyLong_AsLong(o) == t) return t != 0;
    PyErr_Clear();
  }
  throw py::type_error(std::string(name) + " must be " + choices + ", not " +
                       (PyLong_Check(o) ? repr_of(o) : type_name(o)));
}

/// A str parameter as UTF-8 (the view lives as long as `o`). TypeError for another type,
/// ArgumentError for a str that has no UTF-8 form (a lone surrogate).
inline std::string_view arg_str(PyObject* o, const char* name, const char* or_what = "") {
  if (!PyUnicode_Check(o))
    throw py::type_error(std::string(name) + " must be a str" + or_what + ", not " + type_name(o));
  Py_ssize_t len = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(o, &len);  // cached in the str object
  if (utf8 == nullptr)
    throw xshm::ArgumentError(std::string(name) + " cannot be stored as UTF-8: " + take_error_text());
  return std::string_view(utf8, static_cast<std::size_t>(len));
}

/// A number of seconds as a double; None gives nullopt. TypeError for anything that is not a
/// real number; an int too large for a double is +-inf.
inline std::optional<double> arg_seconds(PyObject* o, const char* name) {
  if (o == nullptr || o == Py_None) return std::nullopt;
  if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
  if (PyUnicode_Check(o) || PyBytes_Check(o) || PyComplex_Check(o) || Py_TYPE(o)->tp_as_number == nullptr ||
      (Py_TYPE(o)->tp_as_number->nb_float == nullptr && Py_TYPE(o)->tp_as_number->nb_index == nullptr))
    throw py::type_error(std::string(name) + " must be a number of seconds or None, not " + type_name(o));
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    if (PyLong_Check(o) && PyErr_ExceptionMatches(PyExc_OverflowError)) {
      PyErr_Clear();
      int overflow = 0;
      (void)PyLong_AsLongLongAndOverflow(o, &overflow);  // only its sign: -1 or +1
      return overflow < 0 ? -HUGE_VAL : HUGE_VAL;
    }
    throw py::type_error(std::string(name) + " must be a number of seconds or None, not " + type_name(o) +
                         " (" + take_error_text() + ")");
  }
  return v;
}

/// "-1.0", "nan": a number of seconds as Python prints it.
inline std::string seconds_text(double v) {
  py::object f = py::reinterpret_steal<py::object>(PyFloat_FromDouble(v));
  return f ? std::string(py::str(f)) : std::to_string(v);
}

/// A `timeout=` parameter, one rule for every call that takes one: seconds >= 0 (inf, or more
/// than a century, waits forever), None waits forever; negative or NaN is ArgumentError.
inline xshm::Timeout arg_timeout_given(PyObject* o, const char* name) {
  const std::optional<double> s = arg_seconds(o, name);
  if (!s) return std::nullopt;
  if (!(*s >= 0))
    throw xshm::ArgumentError(std::string(name) + " must be >= 0 seconds, or None to wait forever; got " +
                              seconds_text(*s));
  return xshm::from_seconds(*s);
}

/// A duration parameter that is not a timeout (`spin`): seconds >= 0, None as 0; inf or more
/// than a century is kForever (never undefined behaviour in a cast).
inline std::chrono::nanoseconds arg_duration_given(PyObject* o, const char* name) {
  const std::optional<double> s = arg_seconds(o, name);
  if (!s) return std::chrono::nanoseconds{0};
  if (!(*s >= 0))
    throw xshm::ArgumentError(std::string(name) + " must be >= 0 seconds; got " + seconds_text(*s));
  return xshm::from_seconds(*s).value_or(xshm::kForever);
}

[[gnu::always_inline]] inline xshm::Timeout arg_timeout(PyObject* o, const char* name = "timeout") {
  if (o == nullptr || o == Py_None) return std::nullopt;
  return arg_timeout_given(o, name);
}

[[gnu::always_inline]] inline std::chrono::nanoseconds arg_duration(PyObject* o, const char* name) {
  if (o == nullptr || o == Py_None) return std::chrono::nanoseconds{0};
  return arg_duration_given(o, name);
}

/// A Timeout as one integer, for the hot paths: nanoseconds, kWaitForever for nullopt. GCC
/// passes a std::optional<nanoseconds> through memory with a byte store and a 16-byte load (a
/// store-forwarding stall, ~10 ns a call in wait()); an int64 stays in a register.
inline constexpr std::int64_t kWaitForever = -1;

[[gnu::always_inline]] inline std::int64_t arg_timeout_ns(PyObject* o, const char* name = "timeout") {
  if (o == nullptr || o == Py_None) return kWaitForever;
  const xshm::Timeout t = arg_timeout_given(o, name);
  return t ? t->count() : kWaitForever;
}

inline xshm::Timeout timeout_of_ns(std::int64_t ns) {
  if (ns == kWaitForever) return std::nullopt;
  return std::chrono::nanoseconds{ns};
}

}  // namespace xshm_py
