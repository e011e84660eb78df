// xshm._core's casting rule, for publish(values=..., casting=) and a write block's
// `rec.values = x` / rec.set_values(x, casting=): numpy's own vocabulary and meaning
// (np.can_cast). The default, "equiv", takes values that already have the segment's dtype (a
// byte-swapped array of it is converted); any other dtype is refused with a DtypeError naming
// both dtypes and the casting that would convert. Values without a dtype of their own (lists,
// tuples, Python numbers) are first made an array by np.asarray, then the rule applies. Only
// numbers (bool, integers, floats, complex) are ever converted.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <string>
#include <string_view>

#include <xshm/errors.hpp>

#include "args.hpp"

namespace xshm_py {

namespace py = pybind11;

/// numpy's casting levels, least permissive first.
enum class Casting { No, Equiv, Safe, SameKind, Unsafe };

inline constexpr std::array<const char*, 5> kCastingNames{"no", "equiv", "safe", "same_kind", "unsafe"};

inline const char* casting_name(Casting c) { return kCastingNames[static_cast<std::size_t>(c)]; }

/// A `casting=` parameter: one of numpy's five names; not given: "equiv".
inline Casting arg_casting(PyObject* o) {
  if (o == nullptr) return Casting::Equiv;
  const std::string_view s = arg_str(o, "casting");
  for (std::size_t i = 0; i < kCastingNames.size(); ++i)
    if (s == kCastingNames[i]) return static_cast<Casting>(i);
  throw xshm::ArgumentError(
      "casting must be one of 'no', 'equiv', 'safe', 'same_kind', 'unsafe' (numpy's), not " + repr_of(o));
}

/// np.can_cast(from, to, casting). Only off the fast path (a dtype that is not the segment's).
inline bool can_cast(const py::dtype& from, const py::dtype& to, Casting c) {
  static PyObject* const fn =
      py::object(py::module_::import("numpy").attr("can_cast")).release().ptr();  // immortal
  py::object r = py::reinterpret_borrow<py::object>(fn)(from, to, casting_name(c));
  return r.cast<bool>();
}

/// numpy's name of a dtype with its byte order when it is not native: "float64", ">f8".
inline std::string dtype_text(const py::dtype& dt) { return py::str(dt); }

/// "a float64 record", "an int64 record".
inline std::string record_of(const py::dtype& dt) {
  const std::string name = dtype_text(dt);
  return (name.rfind("int", 0) == 0 ? "an " : "a ") + name + " record";
}

/// `values` as an array whose dtype is `target`, converted under `casting` when it is another
/// (the array itself when it already is: not necessarily contiguous; the caller's shape).
inline py::array cast_values(py::handle values, const py::dtype& target, Casting casting) {
  auto& api = py::detail::npy_api::get();
  py::array arr;
  std::string given;  // for values that were not an array: what numpy made of them
  if (api.PyArray_Check_(values.ptr())) {
    arr = py::reinterpret_borrow<py::array>(values);
  } else {
    PyObject* a = api.PyArray_FromAny_(values.ptr(), nullptr, 0, 0, 0, nullptr);  // np.asarray(values)
    if (a == nullptr)
      throw xshm::ArgumentError("values (a " + type_name(values.ptr()) +
                                ") could not be made an array: " + take_error_text());
    arr = py::reinterpret_steal<py::array>(a);
    given = " (numpy's dtype for the " + type_name(values.ptr()) + " given)";
  }
  const py::dtype from = arr.dtype();
  if (from.ptr() == target.ptr() || api.PyArray_EquivTypes_(from.ptr(), target.ptr())) return arr;
  const char kind = from.kind();
  if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f' && kind != 'c')
    throw xshm::DtypeError(dtype_text(from) + " values" + given + " cannot go into " + record_of(target) +
                           ": values must be numbers (bool, integers, floats or complex)");
  if (!can_cast(from, target, casting)) {
    // The least permissive casting that converts, and the more permissive ones after it.
    std::size_t first = static_cast<std::size_t>(casting) + 1;
    while (first + 1 < kCastingNames.size() && !can_cast(from, target, static_cast<Casting>(first))) ++first;
    std::string ways = std::string("pass casting='") + kCastingNames[first] + "'";
    for (std::size_t i = first + 1; i < kCastingNames.size(); ++i)
      ways += std::string(i == first + 1 ? " (or '" : ", '") + kCastingNames[i] + "'" +
              (i + 1 == kCastingNames.size() ? ")" : "");
    throw xshm::DtypeError(dtype_text(from) + " values" + given + " into " + record_of(target) + ": " + ways +
                           " to convert, or build the array as " + dtype_text(target));
  }
  PyObject* out = PyObject_CallMethod(arr.ptr(), "astype", "O", target.ptr());
  if (out == nullptr)
    throw xshm::ArgumentError("values could not be converted to " + dtype_text(target) + ": " +
                              take_error_text());
  return py::reinterpret_steal<py::array>(out);
}

}  // namespace xshm_py
