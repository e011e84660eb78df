// Handing a copy's buffer to other libraries without copying it: DLPack (`__dlpack__`,
// `__dlpack_device__`, versioned and legacy) and the buffer protocol, for xshm.Snapshot (its
// values) and xshm.Message (a frame's array). Both export the numpy array the object owns:
// read() and recv() give each a buffer of its own, 64-byte aligned (aligned_array()), which
// the export keeps alive for as long as any consumer holds it. The live read-only view
// (m.values) and the stream's views (recv_view, claim) are numpy arrays over the mapping
// itself and are not xshm's to export: numpy's own __dlpack__ marks them read-only (DLPack
// 1.0's flag) and refuses the legacy protocol; a consumer that ignored the flag and wrote
// would crash the process on the read-only mapping.
#pragma once

#include <pybind11/pybind11.h>

#include <pybind11/numpy.h>

#include <cstddef>
#include <vector>

namespace xshm_py {

namespace py = pybind11;

/// A C-contiguous writable array of `dtype` and `dims` over a new 64-byte aligned buffer (at
/// least `nbytes`, rounded up to 64) that the array's base frees: what read() and recv() copy
/// into, aligned as Arrow asks and as JAX/XLA take without a copy.
py::object aligned_array(const py::dtype& dtype, const std::vector<Py_intptr_t>& dims, std::size_t nbytes);

/// `owner.__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)` exporting
/// `arr` (a numpy array): a "dltensor_versioned" capsule when max_version's major is >= 1, a
/// legacy "dltensor" one otherwise. BufferError for what DLPack cannot carry (a dtype it has no
/// code for, a non-native byte order, a device other than the CPU, a stream). `what` names the
/// exporter in errors.
PyObject* dlpack_export(PyObject* arr, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                        const char* what);

/// `__dlpack_device__()`: (kDLCPU, 0).
PyObject* dlpack_device();

}  // namespace xshm_py
