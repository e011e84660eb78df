// xshm._core's message decoding: the bytes of a message slot as a Python str, under the
// handle's policy for bytes that are not UTF-8 (a foreign writer's): 'replace' (U+FFFD) or
// 'strict' (MessageDecodeError with the offset xshm::utf8::valid_up_to finds).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>

namespace xshm_py {

namespace py = pybind11;

enum class DecodePolicy { Replace, Strict };

/// 'replace' or 'strict'; ArgumentError otherwise.
DecodePolicy parse_policy(const std::string& errors);
const char* policy_name(DecodePolicy policy) noexcept;

/// The slow path of decode_message(): bytes that are not valid UTF-8.
py::str decode_invalid(const char* data, std::size_t len, DecodePolicy policy);

/// Decodes a message slot. Valid UTF-8 (the hot path) costs one strict decode.
inline py::str decode_message(const char* data, std::size_t len,
                              DecodePolicy policy = DecodePolicy::Replace) {
  PyObject* s = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), "strict");
  if (s != nullptr) return py::reinterpret_steal<py::str>(s);
  return decode_invalid(data, len, policy);
}

}  // namespace xshm_py
