// xshm._core's error mapping: every C++ exception that reaches Python becomes the class of the
// same name in xshm.errors (xshm::Error -> XshmError), and std::system_error becomes the
// OSError subclass its errno selects (FileNotFoundError, PermissionError, ...).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <exception>

namespace xshm_py {

namespace py = pybind11;

/// The class xshm.errors.<name>.
py::object error_class(const char* name);

/// The translator registered with pybind11 (and called by the fast entry points).
void translate(std::exception_ptr p);

/// Raises xshm.errors.MessageDecodeError for the message bytes [data, data + len), whose
/// first invalid UTF-8 sequence starts at `offset`.
[[noreturn]] void raise_message_decode(const char* data, std::size_t len, std::size_t offset);

}  // namespace xshm_py
