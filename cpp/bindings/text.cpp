// The definitions behind text.hpp (what it binds and why is said there).
#include "text.hpp"

#include <string_view>

#include <xshm/errors.hpp>
#include <xshm/utf8.hpp>

#include "errors.hpp"

namespace xshm_py {

DecodePolicy parse_policy(const std::string& errors) {
  if (errors == "replace") return DecodePolicy::Replace;
  if (errors == "strict") return DecodePolicy::Strict;
  throw xshm::ArgumentError("errors must be 'replace' or 'strict', not '" + errors + "'");
}

const char* policy_name(DecodePolicy policy) noexcept {
  return policy == DecodePolicy::Strict ? "strict" : "replace";
}

py::str decode_invalid(const char* data, std::size_t len, DecodePolicy policy) {
  if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) throw py::error_already_set();
  PyErr_Clear();
  if (policy == DecodePolicy::Replace) {
    PyObject* s = PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), "replace");
    if (s == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(s);
  }
  raise_message_decode(data, len, xshm::utf8::valid_up_to(std::string_view(data, len)));
}

}  // namespace xshm_py
