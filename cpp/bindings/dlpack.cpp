// The definitions behind dlpack.hpp. The DLPack structs are spelled out from its specification
// (dlpack.h, version 1.0; the layout is its ABI): xshm builds against no DLPack header.
#include "dlpack.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "fastcall.hpp"

namespace xshm_py {

namespace {

// ---- DLPack 1.0 ----
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::int32_t kDLCPU = 1;
constexpr std::uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLComplex = 5, kDLBool = 6;
constexpr std::uint64_t kFlagReadOnly = 1, kFlagIsCopied = 2;
constexpr const char* kVersionedName = "dltensor_versioned";
constexpr const char* kLegacyName = "dltensor";

/// What an export keeps: a reference to the array (so its buffer lives), and the shape and
/// strides the DLTensor points at.
struct Ctx {
  PyObject* array = nullptr;
  std::int64_t dims[2 * 32] = {};  // numpy's NPY_MAXDIMS is 32 (64 from numpy 2): checked
  Ctx() = default;
  Ctx(const Ctx&) = delete;
  Ctx& operator=(const Ctx&) = delete;
  // A consumer may call the deleter from any thread, with or without the GIL; after the
  // interpreter is gone the reference has nothing left to free.
  ~Ctx() {
    if (array == nullptr || !Py_IsInitialized()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF(array);
    PyGILState_Release(g);
  }
};

void drop_ctx(void* p) noexcept { delete static_cast<Ctx*>(p); }

void delete_versioned(DLManagedTensorVersioned* m) {
  drop_ctx(m->manager_ctx);
  delete m;
}

void delete_legacy(DLManagedTensor* m) {
  drop_ctx(m->manager_ctx);
  delete m;
}

// A capsule nobody consumed (still named "dltensor...") frees its tensor; a consumed one was
// renamed "used_..." and its consumer calls the deleter.
void versioned_capsule_gone(PyObject* cap) {
  if (!PyCapsule_IsValid(cap, kVersionedName)) return;
  auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, kVersionedName));
  if (m != nullptr && m->deleter != nullptr) m->deleter(m);
}

void legacy_capsule_gone(PyObject* cap) {
  if (!PyCapsule_IsValid(cap, kLegacyName)) return;
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kLegacyName));
  if (m != nullptr && m->deleter != nullptr) m->deleter(m);
}

[[noreturn]] void buffer_error(const std::string& msg) {
  PyErr_SetString(PyExc_BufferError, msg.c_str());
  throw py::error_already_set();
}

DLDataType dl_dtype(const py::dtype& dt, const char* what) {
  const char kind = dt.kind();
  const auto bits = static_cast<std::uint8_t>(dt.itemsize() * 8);
  const char order = dt.byteorder();
  const bool native = order == '=' || order == '|' || (order == '<') == (PY_BIG_ENDIAN == 0);
  if (!native) buffer_error(std::string(what) + ": DLPack has no byte order: its dtype is not native");
  switch (kind) {
    case 'b':
      return {kDLBool, 8, 1};
    case 'i':
      return {kDLInt, bits, 1};
    case 'u':
      return {kDLUInt, bits, 1};
    case 'f':
      return {kDLFloat, bits, 1};
    case 'c':
      return {kDLComplex, bits, 1};
    default:
      buffer_error(std::string(what) + ": DLPack has no type for dtype " + py::str(dt).cast<std::string>());
  }
}

bool is_none(PyObject* o) { return o == nullptr || o == Py_None; }

}  // namespace

py::object aligned_array(const py::dtype& dtype, const std::vector<Py_intptr_t>& dims, std::size_t nbytes) {
  const std::size_t bytes = std::max<std::size_t>(64, (nbytes + 63) & ~std::size_t{63});
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { std::free(q); });  // frees p if anything below throws
  auto& api = py::detail::npy_api::get();
  Py_INCREF(dtype.ptr());  // PyArray_NewFromDescr steals it
  constexpr int kFlags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                         py::detail::npy_api::NPY_ARRAY_ALIGNED_ | py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  PyObject* arr =
      api.PyArray_NewFromDescr_(api.PyArray_Type_, dtype.ptr(), static_cast<int>(dims.size()),
                                const_cast<Py_intptr_t*>(dims.data()), nullptr, p, kFlags, nullptr);
  if (arr == nullptr) throw py::error_already_set();
  py::object a = py::reinterpret_steal<py::object>(arr);
  if (api.PyArray_SetBaseObject_(arr, owner.release().ptr()) != 0) throw py::error_already_set();
  return a;
}

PyObject* dlpack_export(PyObject* arr_obj, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                        const char* what) {
  return guarded([&]() -> py::object {
    static const ArgSpec<4> spec("__dlpack__", {"stream", "max_version", "dl_device", "copy"}, 0);
    PyObject* a[4];
    spec.parse(args, nargs, kwnames, a);
    if (nargs > 0) throw py::type_error("__dlpack__() takes keyword arguments only");
    if (!is_none(a[0])) buffer_error(std::string(what) + ": stream must be None for the CPU");
    bool versioned = false;
    if (!is_none(a[1])) {
      py::tuple v = py::reinterpret_borrow<py::object>(a[1]);
      if (v.size() != 2) throw py::type_error("max_version must be a (major, minor) tuple");
      versioned = v[0].cast<long>() >= 1;
    }
    if (!is_none(a[2])) {
      py::tuple d = py::reinterpret_borrow<py::object>(a[2]);
      if (d.size() != 2 || d[0].cast<long>() != kDLCPU || d[1].cast<long>() != 0)
        buffer_error(std::string(what) + ": it lives on the CPU (device (1, 0)); dl_device asks for " +
                     py::repr(d).cast<std::string>());
    }
    bool copy = false;
    if (!is_none(a[3])) copy = PyObject_IsTrue(a[3]) == 1;

    py::array arr = py::reinterpret_borrow<py::array>(arr_obj);
    const py::dtype dt = arr.dtype();
    const DLDataType dl = dl_dtype(dt, what);
    if (copy) {
      std::vector<Py_intptr_t> dims(arr.shape(), arr.shape() + arr.ndim());
      py::array fresh =
          py::reinterpret_borrow<py::array>(aligned_array(dt, dims, static_cast<std::size_t>(arr.nbytes())));
      auto& api = py::detail::npy_api::get();
      if (api.PyArray_CopyInto_(fresh.ptr(), arr.ptr()) != 0) throw py::error_already_set();
      arr = fresh;
    }
    const int nd = static_cast<int>(arr.ndim());
    if (nd > 32) buffer_error(std::string(what) + ": more than 32 dimensions");
    const bool read_only = !arr.writeable();
    if (read_only && !versioned)
      buffer_error(std::string(what) + ": read-only, which only DLPack 1.0 (max_version >= (1, 0)) can say");

    auto ctx = std::make_unique<Ctx>();
    for (int i = 0; i < nd; ++i) {
      const auto stride = arr.strides(i);
      if (stride % static_cast<py::ssize_t>(dt.itemsize()) != 0)
        buffer_error(std::string(what) + ": a stride is not a whole number of elements");
      ctx->dims[i] = arr.shape(i);
      ctx->dims[32 + i] = stride / static_cast<py::ssize_t>(dt.itemsize());
    }
    DLTensor t{};
    t.data = const_cast<void*>(arr.data());
    t.device = {kDLCPU, 0};
    t.ndim = nd;
    t.dtype = dl;
    t.shape = ctx->dims;
    t.strides = ctx->dims + 32;
    t.byte_offset = 0;
    ctx->array = arr.inc_ref().ptr();  // released by the deleter

    if (versioned) {
      auto* m = new DLManagedTensorVersioned{};
      m->version = {1, 0};
      m->manager_ctx = ctx.release();
      m->deleter = delete_versioned;
      m->flags = (read_only ? kFlagReadOnly : 0) | (copy ? kFlagIsCopied : 0);
      m->dl_tensor = t;
      PyObject* cap = PyCapsule_New(m, kVersionedName, versioned_capsule_gone);
      if (cap == nullptr) {
        delete_versioned(m);
        throw py::error_already_set();
      }
      return py::reinterpret_steal<py::object>(cap);
    }
    auto* m = new DLManagedTensor{};
    m->manager_ctx = ctx.release();
    m->deleter = delete_legacy;
    m->dl_tensor = t;
    PyObject* cap = PyCapsule_New(m, kLegacyName, legacy_capsule_gone);
    if (cap == nullptr) {
      delete_legacy(m);
      throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(cap);
  });
}

PyObject* dlpack_device() { return Py_BuildValue("(ii)", kDLCPU, 0); }

}  // namespace xshm_py
