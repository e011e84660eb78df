// xshm._core's side of the core's waits: Python seconds (None: forever) as the core's
// Timeout, and the between-slices hook that takes the GIL back for a moment so that Ctrl-C
// (or any signal handler that raises) ends a wait that runs with the GIL released.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include <xshm/clock.hpp>
#include <xshm/errors.hpp>

namespace xshm_py {

namespace py = pybind11;

/// Seconds (None: forever) as the core's Timeout (xshm::from_seconds: negative is zero,
/// NaN, infinity and more than a century forever).
inline xshm::Timeout to_timeout(std::optional<double> seconds) {
  return seconds ? xshm::from_seconds(*seconds) : std::nullopt;
}

/// A Python `timeout=` argument as the core's Timeout: None waits forever; negative or NaN is
/// refused (ArgumentError), the same for every call that takes one.
inline xshm::Timeout timeout_arg(std::optional<double> seconds) {
  if (seconds && !(*seconds >= 0)) throw xshm::ArgumentError("timeout must be >= 0 or None");
  return to_timeout(seconds);
}

/// The between-slices hook of a wait with the GIL released.
inline void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace xshm_py
