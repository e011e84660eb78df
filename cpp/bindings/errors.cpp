// The definitions behind errors.hpp (what it binds and why is said there).
#include "errors.hpp"

#include <string>
#include <system_error>

#include <xshm/errors.hpp>

namespace xshm_py {

py::object error_class(const char* name) { return py::module_::import("xshm.errors").attr(name); }

namespace {

void set_error_object(const py::object& err) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
}

}  // namespace

void translate(std::exception_ptr p) {
  // Most derived first: a catch of a base would take its subclasses.
  try {
    if (p) std::rethrow_exception(p);
  } catch (const xshm::LayoutError& e) {
    py::set_error(error_class("LayoutError"), e.what());
  } catch (const xshm::DtypeError& e) {
    py::set_error(error_class("DtypeError"), e.what());
  } catch (const xshm::MessageTooLongError& e) {
    py::set_error(error_class("MessageTooLongError"), e.what());
  } catch (const xshm::ArgumentError& e) {
    py::set_error(error_class("ArgumentError"), e.what());
  } catch (const xshm::ReadOnlyError& e) {
    py::set_error(error_class("ReadOnlyError"), e.what());
  } catch (const xshm::MessageDecodeError& e) {
    set_error_object(error_class("MessageDecodeError")(e.what(), e.offset(), py::bytes()));
  } catch (const xshm::OverwrittenError& e) {
    py::set_error(error_class("OverwrittenError"), e.what());
  } catch (const xshm::TornRecordError& e) {
    py::set_error(error_class("TornRecordError"), e.what());
  } catch (const xshm::StreamFullError& e) {
    py::set_error(error_class("StreamFullError"), e.what());
  } catch (const xshm::WaitTimeoutError& e) {
    py::set_error(error_class("WaitTimeoutError"), e.what());
  } catch (const xshm::ClosedError& e) {
    py::set_error(error_class("ClosedError"), e.what());
  } catch (const xshm::Error& e) {
    py::set_error(error_class("XshmError"), e.what());
  } catch (const std::system_error& e) {
    // OSError(errno, text) becomes FileNotFoundError, PermissionError, ... by errno.
    py::object err = py::reinterpret_steal<py::object>(
        PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
    if (!err) throw py::error_already_set();
    PyErr_SetObject(PyExc_OSError, err.ptr());
  }
}

void raise_message_decode(const char* data, std::size_t len, std::size_t offset) {
  set_error_object(error_class("MessageDecodeError")(
      "the message is not valid UTF-8 (first invalid byte at offset " + std::to_string(offset) + ")", offset,
      py::bytes(data, len)));
  throw py::error_already_set();
}

}  // namespace xshm_py
