#include "blocks.hpp"

namespace xshm_py {

void register_blocks(py::module_& mod) {
  py::class_<Record>(mod, "Record", "The record being written inside `with m.write() as rec:`.")
      .def_property_readonly(
          "values", &Record::values,
          "The values to publish, writable inside the block (the shared record itself when in\n"
          "place); read-only when the block ends.")
      .def_property("counter", &Record::counter, &Record::set_counter, "The counter to publish.")
      .def_property(
          "message", &Record::message, [](Record& r, const std::string& m) { r.set_message(m); },
          "The message to publish; longer than the slot raises MessageTooLongError.")
      .def("set_message", &Record::set_message, py::arg("message"), py::arg("truncate") = false,
           "Sets the message. Longer than the slot raises MessageTooLongError, unless\n"
           "truncate=True, which cuts it on a code-point boundary to fit.");

  py::class_<WriteBlock>(mod, "WriteBlock", "Context manager returned by SharedMemoryManager.write().")
      .def("__enter__", &WriteBlock::enter)
      .def("__exit__", &WriteBlock::exit)
      .def_property_readonly("seq", &WriteBlock::seq,
                             "The sequence the block published, None before or on error.");

  py::class_<LockBlock>(mod, "LockBlock", "Context manager returned by SharedMemoryManager.lock().")
      .def("__enter__", &LockBlock::enter)
      .def("__exit__", &LockBlock::exit);
}

}  // namespace xshm_py
