// xshm._core: the pybind11 module over the C++ header (cpp/include/xshm). One file per thing it
// binds: errors.{hpp,cpp} (the translator), snapshot.{hpp,cpp} (the Snapshot C type),
// fastcall.hpp (argument parsing of the hot methods), manager.{hpp,cpp}
// (SharedMemoryManager), blocks.{hpp,cpp} (the write and lock blocks), text.{hpp,cpp} (message
// decoding), waits.hpp (seconds and the signal check of long waits). The binding converts
// types, releases the GIL, maps errors and ties lifetimes; the protocol lives in the header.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include <xshm/layout.hpp>
#include <xshm/manager.hpp>
#include <xshm/segment.hpp>
#include <xshm/stream_layout.hpp>

#include "blocks.hpp"
#include "errors.hpp"
#include "manager.hpp"
#include "snapshot.hpp"
#include "stream.hpp"

namespace py = pybind11;

// Not declared free-threading safe (no py::mod_gil_not_used()): read()'s snapshot cache, a write
// block's views and the values window are guarded by the GIL; a free-threaded interpreter
// re-enables the GIL for this module until they get locks of their own.
PYBIND11_MODULE(_core, mod) {
  mod.doc() = "xshm's compiled core: a thin pybind11 binding over the C++ header (cpp/include/xshm).";
  py::register_exception_translator(&xshm_py::translate);

  mod.attr("LAYOUT_VERSION") = xshm::kLayoutVersion;
  mod.attr("STREAM_LAYOUT_VERSION") = xshm::kStreamLayoutVersion;
  mod.attr("MAX_NAME_BYTES") = xshm::kMaxNameBytes;

  xshm_py::register_snapshot(mod);
  // The class first, so that the blocks' signatures can name it; its methods after them.
  py::class_<xshm_py::Manager> manager_cls(mod, "SharedMemoryManager",
                                           "A handle on one xshm shared-memory segment.");
  xshm_py::register_blocks(mod);
  xshm_py::register_manager(manager_cls);
  xshm_py::register_stream(mod);

  mod.def(
      "unlink", [](const std::string& name, bool force) { xshm::unlink(name, force); }, py::arg("name"),
      py::arg("force") = false, "Remove a segment name; refuses a non-xshm segment unless force=True.");
  mod.def("normalize_name", &xshm::normalize_name, py::arg("name"),
          "The canonical form of a segment name (one leading '/'); raises ArgumentError for bad names.");
}
