// xshm._core: the pybind11 module over the C++ header (cpp/include/xshm). One file per thing it
// binds: errors.{hpp,cpp} (the translator), snapshot.{hpp,cpp} (the Snapshot C type),
// fastcall.hpp (argument parsing of the hot methods), manager.{hpp,cpp}
// (SharedMemoryManager), blocks.{hpp,cpp} (the write and lock blocks), text.{hpp,cpp} (message
// decoding), waits.hpp (the signal check of long waits), args.hpp (every argument checked in
// xshm's words), casting.hpp (numpy's casting= rule for values of another dtype). The binding converts
// types, releases the GIL, maps errors and ties lifetimes; the protocol lives in the header.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include <xshm/layout.hpp>
#include <xshm/manager.hpp>
#include <xshm/segment.hpp>
#include <xshm/stream/layout.hpp>

#include "aio.hpp"
#include "args.hpp"
#include "blocks.hpp"
#include "errors.hpp"
#include "fastcall.hpp"
#include "manager.hpp"
#include "snapshot.hpp"
#include "stream.hpp"

namespace py = pybind11;

namespace {

PyObject* fast_unlink(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return xshm_py::guarded([&] {
    static const xshm_py::ArgSpec<2> spec("unlink", {"name", "force"}, 1);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    const std::string_view name = xshm_py::arg_str(a[0], "name");
    const bool force = a[1] != nullptr && xshm_py::arg_bool(a[1], "force");
    xshm::unlink(name, force);
    return py::none();
  });
}

PyObject* fast_normalize_name(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return xshm_py::guarded([&] {
    static const xshm_py::ArgSpec<1> spec("normalize_name", {"name"}, 1);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    return py::str(xshm::normalize_name(xshm_py::arg_str(a[0], "name")));
  });
}

PyMethodDef g_functions[] = {
    {"unlink", xshm_py::fastcall_fn(fast_unlink), METH_FASTCALL | METH_KEYWORDS,
     "unlink(name, force=False)\n--\n\n"
     "Remove a segment name; refuses a non-xshm segment unless force=True."},
    {"normalize_name", xshm_py::fastcall_fn(fast_normalize_name), METH_FASTCALL | METH_KEYWORDS,
     "normalize_name(name)\n--\n\n"
     "The canonical form of a segment name (one leading '/'); raises ArgumentError for bad names."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

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
  xshm_py::register_aio(mod);
  // The class first, so that the blocks' signatures can name it; its methods after them.
  py::class_<xshm_py::Manager> manager_cls(mod, "SharedMemoryManager",
                                           "A handle on one xshm shared-memory segment.");
  xshm_py::register_blocks(mod);
  xshm_py::register_manager(manager_cls);
  xshm_py::register_stream(mod);

  py::object module_name = mod.attr("__name__");
  for (PyMethodDef* def = g_functions; def->ml_name != nullptr; ++def) {
    PyObject* fn = PyCFunction_NewEx(def, nullptr, module_name.ptr());
    if (fn == nullptr) throw py::error_already_set();
    mod.attr(def->ml_name) = py::reinterpret_steal<py::object>(fn);
  }
}
