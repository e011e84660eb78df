// A snapshot as Arrow data, with no dependency on pyarrow: the Arrow PyCapsule interface
// (`__arrow_c_schema__`, `__arrow_c_array__`) over the Arrow C data interface, so pyarrow,
// polars, duckdb and the like take a snapshot as a one-row struct of
//   seq: uint64, counter: uint64, timestamp: timestamp[ns, UTC], writer_pid: uint64,
//   message: utf8, values
// with `values` the record's array as nested fixed-size lists, one level per dimension
// (shape (4, 3) of float32: fixed_size_list<fixed_size_list<float, 3>, 4>; shape (): the
// scalar itself). The innermost buffer is the snapshot's own 64-byte aligned values buffer, no
// copy, kept alive while the consumer holds it. Arrow has no complex type: a complex value is
// a fixed-size list of 2 floats (real, imaginary), still without a copy. Arrow's booleans are
// bits: bool values are packed into a new buffer (a copy).
#pragma once

#include <pybind11/pybind11.h>

namespace xshm_py {

namespace py = pybind11;

/// `__arrow_c_schema__()` of a snapshot.
py::object snapshot_arrow_schema(PyObject* snapshot);

/// `__arrow_c_array__(requested_schema=None)` of a snapshot: (schema capsule, array capsule).
/// A requested schema is not honoured (the capsule interface allows it): the record's own.
py::object snapshot_arrow_array(PyObject* snapshot);

}  // namespace xshm_py
