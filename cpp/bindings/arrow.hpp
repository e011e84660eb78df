// Snapshots and received messages as Arrow data, with no dependency on pyarrow: the Arrow
// PyCapsule interface (a stream reader's __arrow_c_stream__ below; for a snapshot)
// `__arrow_c_schema__`, `__arrow_c_array__` over the Arrow C data interface, so pyarrow,
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

#include <cstddef>
#include <vector>

#include <xshm/stream/reader.hpp>

namespace xshm_py {

namespace py = pybind11;

/// `__arrow_c_schema__()` of a snapshot.
py::object snapshot_arrow_schema(PyObject* snapshot);

/// `__arrow_c_array__(requested_schema=None)` of a snapshot: (schema capsule, array capsule).
/// A requested schema is not honoured (the capsule interface allows it): the record's own.
py::object snapshot_arrow_array(PyObject* snapshot);

/// What a reader's Arrow stream takes each batch from: up to `max_n` messages that are there
/// now, taken (called with the GIL held; may throw).
using TakeBatch = std::vector<xshm::Message> (*)(PyObject* reader, std::size_t max_n);

/// `r.__arrow_c_stream__(requested_schema=None)`: an "arrow_array_stream" capsule whose record
/// batches are the messages the reader receives, taken by `take` up to kArrowBatch at a time:
/// seq: uint64, timestamp: timestamp[ns, UTC], writer_pid: uint64, and data: large_binary for
/// a byte stream, or the frame as nested fixed-size lists of `dtype` over `dims`. The stream
/// ends when nothing is left to receive (it never waits): what comes later, a next stream
/// takes. It holds the reader while it lives; a batch owns its buffers (copies of the slots).
py::object reader_arrow_stream(PyObject* reader, const py::object& dtype,
                               const std::vector<Py_intptr_t>& dims, TakeBatch take);

/// Messages per record batch of a reader's Arrow stream, at most.
inline constexpr std::size_t kArrowBatch = 4096;

}  // namespace xshm_py
