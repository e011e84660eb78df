// xshm._core's side of the core's waits: the between-slices hook that takes the GIL back for a
// moment so that Ctrl-C (or any signal handler that raises) ends a wait that runs with the GIL
// released. (Python seconds become the core's Timeout in args.hpp: arg_timeout.)
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include <xshm/clock.hpp>
#include <xshm/errors.hpp>

namespace xshm_py {

namespace py = pybind11;

/// The between-slices hook of a wait with the GIL released.
inline void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace xshm_py
