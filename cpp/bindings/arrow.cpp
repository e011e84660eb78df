// The definitions behind arrow.hpp. The C data interface's structs are spelled out from the
// Arrow specification (they are its ABI): xshm builds against no Arrow header.
#include "arrow.hpp"

#include <pybind11/numpy.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "snapshot.hpp"

namespace xshm_py {

namespace {

struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  std::int64_t flags;
  std::int64_t n_children;
  ArrowSchema** children;
  ArrowSchema* dictionary;
  void (*release)(ArrowSchema*);
  void* private_data;
};

struct ArrowArray {
  std::int64_t length;
  std::int64_t null_count;
  std::int64_t offset;
  std::int64_t n_buffers;
  std::int64_t n_children;
  const void** buffers;
  ArrowArray** children;
  ArrowArray* dictionary;
  void (*release)(ArrowArray*);
  void* private_data;
};

// ---- schemas: a tree of heap nodes, each released by its parent ----

struct SchemaPriv {
  std::string format;
  std::string name;
  std::vector<ArrowSchema*> children;
};

void release_schema(ArrowSchema* s) {
  auto* p = static_cast<SchemaPriv*>(s->private_data);
  for (ArrowSchema* c : p->children) {
    if (c->release != nullptr) c->release(c);
    delete c;
  }
  delete p;
  s->release = nullptr;
}

/// Fills `out` (a struct the caller owns) as a field `name` of `format` with `kids`.
void fill_schema(ArrowSchema* out, std::string format, std::string name, std::vector<ArrowSchema*> kids) {
  auto* p = new SchemaPriv{std::move(format), std::move(name), std::move(kids)};
  out->format = p->format.c_str();
  out->name = p->name.c_str();
  out->metadata = nullptr;
  out->flags = 0;  // not nullable: a snapshot has every field
  out->n_children = static_cast<std::int64_t>(p->children.size());
  out->children = p->children.empty() ? nullptr : p->children.data();
  out->dictionary = nullptr;
  out->release = release_schema;
  out->private_data = p;
}

ArrowSchema* new_schema(std::string format, std::string name, std::vector<ArrowSchema*> kids = {}) {
  auto* s = new ArrowSchema{};
  fill_schema(s, std::move(format), std::move(name), std::move(kids));
  return s;
}

// ---- arrays: the same tree; the root also holds a reference to the values array ----

struct ArrayPriv {
  std::vector<const void*> buffers;
  std::vector<ArrowArray*> children;
  std::vector<std::vector<std::uint8_t>> owned;  // buffers this node made (not the values)
  // What the node's buffers point into when it does not own them (the snapshot's values array,
  // a batch's frames), shared by every node that does: a consumer may move a child out of its
  // parent and release the parent first (the C data interface allows it).
  std::shared_ptr<void> hold;
};

/// A hold on a Python object, let go with the GIL (a consumer may release from any thread).
std::shared_ptr<void> hold_object(PyObject* o) {
  Py_INCREF(o);
  return std::shared_ptr<void>(o, [](void* q) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF(static_cast<PyObject*>(q));
    PyGILState_Release(g);
  });
}

/// Arrays made but not yet handed to a parent, released if an exception comes first.
struct Pending {
  std::vector<ArrowArray*> v;
  Pending() = default;
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  ~Pending() {
    for (ArrowArray* a : v) {
      if (a->release != nullptr) a->release(a);
      delete a;
    }
  }
  ArrowArray* add(ArrowArray* a) {
    v.push_back(a);
    return a;
  }
  std::vector<ArrowArray*> take() { return std::exchange(v, {}); }
};

void release_array(ArrowArray* a) {
  auto* p = static_cast<ArrayPriv*>(a->private_data);
  for (ArrowArray* c : p->children) {
    if (c->release != nullptr) c->release(c);
    delete c;
  }
  delete p;  // and its share of the hold
  a->release = nullptr;
}

void fill_array(ArrowArray* out, std::int64_t length, ArrayPriv* p) {
  out->length = length;
  out->null_count = 0;
  out->offset = 0;
  out->n_buffers = static_cast<std::int64_t>(p->buffers.size());
  out->n_children = static_cast<std::int64_t>(p->children.size());
  out->buffers = p->buffers.data();
  out->children = p->children.empty() ? nullptr : p->children.data();
  out->dictionary = nullptr;
  out->release = release_array;
  out->private_data = p;
}

/// A child array of `length` with a validity slot (null: none) and `data` buffers.
ArrowArray* new_array(std::int64_t length, std::vector<const void*> data, std::vector<ArrowArray*> kids = {},
                      std::vector<std::vector<std::uint8_t>> owned = {}, std::shared_ptr<void> hold = {}) {
  auto* p = new ArrayPriv{};
  p->buffers.push_back(nullptr);
  for (const void* d : data) p->buffers.push_back(d);
  p->children = std::move(kids);
  p->owned = std::move(owned);
  p->hold = std::move(hold);
  auto* a = new ArrowArray{};
  fill_array(a, length, p);
  return a;
}

/// One value of 8 bytes, owned by the array.
template <class T>
ArrowArray* scalar_array(T v) {
  std::vector<std::uint8_t> blob(sizeof v);
  std::memcpy(blob.data(), &v, sizeof v);
  std::vector<std::vector<std::uint8_t>> owned;
  owned.push_back(std::move(blob));
  const void* data = owned.back().data();
  return new_array(1, {data}, {}, std::move(owned));
}

/// The primitive Arrow format of a numpy dtype (complex: its component's), or throws.
std::string primitive_format(const py::dtype& dt, bool* complex) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  const char order = dt.byteorder();
  if (!(order == '=' || order == '|' || (order == '<') == (PY_BIG_ENDIAN == 0)))
    throw py::value_error("Arrow export: the values' dtype is not in native byte order");
  *complex = false;
  if (kind == 'b') return "b";
  if (kind == 'i' || kind == 'u') {
    const bool u = kind == 'u';
    switch (size) {
      case 1:
        return u ? "C" : "c";
      case 2:
        return u ? "S" : "s";
      case 4:
        return u ? "I" : "i";
      case 8:
        return u ? "L" : "l";
      default:
        break;
    }
  }
  if (kind == 'f' && size == 2) return "e";
  if (kind == 'f' && size == 4) return "f";
  if (kind == 'f' && size == 8) return "g";
  if (kind == 'c' && size == 8) return *complex = true, "f";
  if (kind == 'c' && size == 16) return *complex = true, "g";
  throw py::value_error("Arrow export: no Arrow type for dtype " + py::str(dt).cast<std::string>());
}

/// The snapshot's values, C-contiguous (a read_into target may not be: then a copy).
py::array contiguous_values(PyObject* snapshot) {
  py::array v = py::reinterpret_borrow<py::array>(reinterpret_cast<SnapshotObject*>(snapshot)->values);
  if (!(v.flags() & py::array::c_style)) v = py::module_::import("numpy").attr("ascontiguousarray")(v);
  return v;
}

/// The values column's type: nested fixed-size lists over `dims`, down to the primitive
/// (complex: a pair of floats), named `name`; a 0-d value is the primitive itself.
ArrowSchema* values_schema(const py::dtype& dt, const std::vector<py::ssize_t>& dims,
                           const std::string& name) {
  bool complex = false;
  const std::string prim = primitive_format(dt, &complex);
  ArrowSchema* inner = new_schema(prim, "item");
  if (complex) inner = new_schema("+w:2", "item", {inner});
  for (std::size_t i = dims.size(); i-- > 0;)
    inner = new_schema("+w:" + std::to_string(dims[i]), "item", {inner});
  auto* p = static_cast<SchemaPriv*>(inner->private_data);  // the outermost is the field
  p->name = name;
  inner->name = p->name.c_str();
  return inner;
}

/// The values column of `rows` values of `dims` at `data` (C order, one after the other): the
/// primitive child points at `data`, which `hold` keeps (every node of the column shares it),
/// except bools, packed into bits (a copy the array owns).
ArrowArray* values_array(const py::dtype& dt, const std::vector<py::ssize_t>& dims, const void* data,
                         std::int64_t rows, const std::shared_ptr<void>& hold) {
  bool complex = false;
  const std::string prim = primitive_format(dt, &complex);
  std::int64_t per_row = 1;
  for (py::ssize_t d : dims) per_row *= static_cast<std::int64_t>(d);
  const std::int64_t n = rows * per_row;
  ArrowArray* inner = nullptr;
  if (prim == "b") {  // bit-packed: a copy
    std::vector<std::uint8_t> bits(static_cast<std::size_t>((n + 7) / 8 + 1), 0);
    const auto* src = static_cast<const std::uint8_t*>(data);
    for (std::int64_t i = 0; i < n; ++i)
      if (src[i] != 0) bits[static_cast<std::size_t>(i / 8)] |= static_cast<std::uint8_t>(1u << (i % 8));
    std::vector<std::vector<std::uint8_t>> owned;
    owned.push_back(std::move(bits));
    const void* packed = owned.back().data();
    inner = new_array(n, {packed}, {}, std::move(owned));
  } else if (complex) {
    inner = new_array(2 * n, {data}, {}, {}, hold);
    inner = new_array(n, {}, {inner}, {}, hold);
  } else {
    inner = new_array(n, {data}, {}, {}, hold);
  }
  // The list array of dimension i holds one list per element of the dimensions before it.
  for (std::size_t i = dims.size(); i-- > 0;) {
    std::int64_t lists = rows;
    for (std::size_t j = 0; j < i; ++j) lists *= static_cast<std::int64_t>(dims[j]);
    inner = new_array(lists, {}, {inner}, {}, hold);
  }
  return inner;
}

std::vector<py::ssize_t> dims_of(const py::array& v) { return {v.shape(), v.shape() + v.ndim()}; }

ArrowSchema* record_schema(const py::array& v) {
  return new_schema("+s", "",
                    {new_schema("L", "seq"), new_schema("L", "counter"), new_schema("tsn:UTC", "timestamp"),
                     new_schema("L", "writer_pid"), new_schema("u", "message"),
                     values_schema(v.dtype(), dims_of(v), "values")});
}

void capsule_schema_gone(PyObject* cap) {
  auto* s = static_cast<ArrowSchema*>(PyCapsule_GetPointer(cap, "arrow_schema"));
  if (s == nullptr) {
    PyErr_Clear();
    return;
  }
  if (s->release != nullptr) s->release(s);
  delete s;
}

void capsule_array_gone(PyObject* cap) {
  auto* a = static_cast<ArrowArray*>(PyCapsule_GetPointer(cap, "arrow_array"));
  if (a == nullptr) {
    PyErr_Clear();
    return;
  }
  if (a->release != nullptr) a->release(a);
  delete a;
}

py::object schema_capsule(ArrowSchema* child_tree) {
  // The capsule owns a root struct; a consumer moves it out (and nulls its release).
  auto* root = new ArrowSchema(*child_tree);
  delete child_tree;  // its contents now live in root
  PyObject* cap = PyCapsule_New(root, "arrow_schema", capsule_schema_gone);
  if (cap == nullptr) {
    release_schema(root);
    delete root;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(cap);
}

}  // namespace

py::object snapshot_arrow_schema(PyObject* snapshot) {
  return schema_capsule(record_schema(contiguous_values(snapshot)));
}

py::object snapshot_arrow_array(PyObject* snapshot) {
  auto* s = reinterpret_cast<SnapshotObject*>(snapshot);
  py::array v = contiguous_values(snapshot);
  py::object schema = schema_capsule(record_schema(v));

  Py_ssize_t len = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(s->message, &len);
  if (utf8 == nullptr) throw py::error_already_set();
  std::vector<std::vector<std::uint8_t>> owned;
  const std::int32_t offsets[2] = {0, static_cast<std::int32_t>(len)};
  owned.emplace_back(reinterpret_cast<const std::uint8_t*>(offsets),
                     reinterpret_cast<const std::uint8_t*>(offsets + 2));
  owned.emplace_back(reinterpret_cast<const std::uint8_t*>(utf8),
                     reinterpret_cast<const std::uint8_t*>(utf8 + len));
  owned.back().push_back(0);  // never an empty buffer: a valid pointer for an empty message
  const void* off = owned[0].data();
  const void* bytes = owned[1].data();
  Pending kids;  // released if anything below throws
  kids.add(scalar_array<std::uint64_t>(s->seq));
  kids.add(scalar_array<std::uint64_t>(s->counter));
  kids.add(scalar_array<std::int64_t>(s->timestamp_ns));
  kids.add(scalar_array<std::uint64_t>(s->writer_pid));
  kids.add(new_array(1, {off, bytes}, {}, std::move(owned)));
  // the values' buffer lives while the consumer holds any part of the column
  kids.add(values_array(v.dtype(), dims_of(v), v.data(), 1, hold_object(v.ptr())));
  auto* p = new ArrayPriv{};
  p->buffers.push_back(nullptr);
  p->children = kids.take();
  auto* root = new ArrowArray{};
  fill_array(root, 1, p);
  PyObject* cap = PyCapsule_New(root, "arrow_array", capsule_array_gone);
  if (cap == nullptr) {
    release_array(root);
    delete root;
    throw py::error_already_set();
  }
  return py::make_tuple(schema, py::reinterpret_steal<py::object>(cap));
}

namespace {

struct ArrowArrayStream {
  int (*get_schema)(ArrowArrayStream*, ArrowSchema*);
  int (*get_next)(ArrowArrayStream*, ArrowArray*);
  const char* (*get_last_error)(ArrowArrayStream*);
  void (*release)(ArrowArrayStream*);
  void* private_data;
};

struct StreamPriv {
  PyObject* reader = nullptr;  // strong: the stream takes from it while it lives
  PyObject* dtype = nullptr;   // strong, a numpy dtype; null for a byte stream
  std::vector<py::ssize_t> dims;
  std::size_t frame_bytes = 0;
  TakeBatch take = nullptr;
  std::string error;
  bool done = false;
};

StreamPriv* priv(ArrowArrayStream* st) { return static_cast<StreamPriv*>(st->private_data); }

/// Runs `f` with the GIL; an exception becomes EIO with its text kept for get_last_error.
template <class F>
int with_gil(StreamPriv* p, F&& f) noexcept {
  if (!Py_IsInitialized()) {
    p->error = "the Python interpreter has exited";
    return EIO;
  }
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = 0;
  try {
    f();
  } catch (py::error_already_set& e) {
    p->error = e.what();
    rc = EIO;
  } catch (const std::exception& e) {
    p->error = e.what();
    rc = EIO;
  }
  PyGILState_Release(g);
  return rc;
}

ArrowSchema* batch_schema(StreamPriv* p) {
  ArrowSchema* data = p->dtype == nullptr
                          ? new_schema("Z", "data")
                          : values_schema(py::reinterpret_borrow<py::dtype>(p->dtype), p->dims, "data");
  return new_schema(
      "+s", "",
      {new_schema("L", "seq"), new_schema("tsn:UTC", "timestamp"), new_schema("L", "writer_pid"), data});
}

int stream_get_schema(ArrowArrayStream* st, ArrowSchema* out) {
  StreamPriv* p = priv(st);
  return with_gil(p, [&] {
    ArrowSchema* root = batch_schema(p);
    *out = *root;  // the tree now hangs from *out
    delete root;
  });
}

template <class T>
std::vector<std::uint8_t> blob_of(const std::vector<xshm::Message>& msgs, T (*field)(const xshm::Message&)) {
  std::vector<std::uint8_t> b(msgs.size() * sizeof(T) + 1);
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    const T v = field(msgs[i]);
    std::memcpy(b.data() + i * sizeof(T), &v, sizeof v);
  }
  return b;
}

ArrowArray* owned_column(std::int64_t rows, std::vector<std::vector<std::uint8_t>> blobs) {
  std::vector<const void*> data;
  for (const auto& b : blobs) data.push_back(b.data());
  return new_array(rows, std::move(data), {}, std::move(blobs));
}

int stream_get_next(ArrowArrayStream* st, ArrowArray* out) {
  StreamPriv* p = priv(st);
  return with_gil(p, [&] {
    std::vector<xshm::Message> msgs;
    if (!p->done) msgs = p->take(p->reader, kArrowBatch);
    if (msgs.empty()) {  // nothing there now: the end of this stream
      p->done = true;
      std::memset(out, 0, sizeof *out);
      return;
    }
    // (Taken, the messages are the batch's: only an allocation failure below loses them.)
    const auto rows = static_cast<std::int64_t>(msgs.size());
    Pending kids;  // released if anything below throws
    ArrowArray* data = nullptr;
    if (p->dtype == nullptr) {
      std::vector<std::uint8_t> offsets((msgs.size() + 1) * sizeof(std::int64_t));
      std::vector<std::uint8_t> bytes;
      std::int64_t at = 0;
      for (std::size_t i = 0; i < msgs.size(); ++i) {
        std::memcpy(offsets.data() + i * sizeof at, &at, sizeof at);
        bytes.insert(bytes.end(), msgs[i].data.begin(), msgs[i].data.end());
        at += static_cast<std::int64_t>(msgs[i].data.size());
      }
      std::memcpy(offsets.data() + msgs.size() * sizeof at, &at, sizeof at);
      bytes.push_back(0);  // never empty: a valid pointer when every message is
      std::vector<std::vector<std::uint8_t>> blobs;
      blobs.push_back(std::move(offsets));
      blobs.push_back(std::move(bytes));
      data = owned_column(rows, std::move(blobs));
    } else {
      // The frames one after the other in one 64-byte aligned buffer the batch owns; a
      // foreign writer's short message is zero-filled, as a received frame is.
      const std::size_t total =
          std::max<std::size_t>(64, (msgs.size() * p->frame_bytes + 63) & ~std::size_t{63});
      void* heap = std::aligned_alloc(64, total);
      if (heap == nullptr) throw std::bad_alloc();
      const std::shared_ptr<void> hold(heap, std::free);
      std::memset(heap, 0, total);
      for (std::size_t i = 0; i < msgs.size(); ++i)
        std::memcpy(static_cast<unsigned char*>(heap) + i * p->frame_bytes, msgs[i].data.data(),
                    std::min(msgs[i].data.size(), p->frame_bytes));
      data = values_array(py::reinterpret_borrow<py::dtype>(p->dtype), p->dims, heap, rows, hold);
    }
    std::vector<std::vector<std::uint8_t>> seq, ts, pid;
    seq.push_back(blob_of<std::uint64_t>(msgs, [](const xshm::Message& m) { return std::uint64_t{m.seq}; }));
    ts.push_back(
        blob_of<std::int64_t>(msgs, [](const xshm::Message& m) { return std::int64_t{m.timestamp_ns}; }));
    pid.push_back(blob_of<std::uint64_t>(
        msgs, [](const xshm::Message& m) { return static_cast<std::uint64_t>(m.writer_pid); }));
    kids.add(data);
    kids.add(owned_column(rows, std::move(seq)));
    kids.add(owned_column(rows, std::move(ts)));
    kids.add(owned_column(rows, std::move(pid)));
    auto* root_priv = new ArrayPriv{};
    root_priv->buffers.push_back(nullptr);
    std::vector<ArrowArray*> made = kids.take();  // data, seq, timestamp, writer_pid
    root_priv->children = {made[1], made[2], made[3], made[0]};
    fill_array(out, rows, root_priv);
  });
}

const char* stream_last_error(ArrowArrayStream* st) {
  StreamPriv* p = priv(st);
  return p->error.empty() ? nullptr : p->error.c_str();
}

void stream_release(ArrowArrayStream* st) {
  StreamPriv* p = priv(st);
  if (Py_IsInitialized()) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_XDECREF(p->reader);
    Py_XDECREF(p->dtype);
    PyGILState_Release(g);
  }
  delete p;
  st->release = nullptr;
}

void capsule_stream_gone(PyObject* cap) {
  auto* st = static_cast<ArrowArrayStream*>(PyCapsule_GetPointer(cap, "arrow_array_stream"));
  if (st == nullptr) {
    PyErr_Clear();
    return;
  }
  if (st->release != nullptr) st->release(st);
  delete st;
}

}  // namespace

py::object reader_arrow_stream(PyObject* reader, const py::object& dtype,
                               const std::vector<Py_intptr_t>& dims, TakeBatch take) {
  auto p = std::make_unique<StreamPriv>();
  if (!dtype.is_none()) {
    py::dtype dt = py::dtype::from_args(dtype);
    bool complex = false;
    (void)primitive_format(dt, &complex);  // an unexportable dtype fails here, not mid-stream
    p->frame_bytes = static_cast<std::size_t>(dt.itemsize());
    for (Py_intptr_t d : dims) {
      p->dims.push_back(static_cast<py::ssize_t>(d));
      p->frame_bytes *= static_cast<std::size_t>(d);
    }
    p->dtype = dt.release().ptr();
  }
  p->take = take;
  Py_INCREF(reader);
  p->reader = reader;
  auto* st = new ArrowArrayStream{stream_get_schema, stream_get_next, stream_last_error, stream_release,
                                  p.release()};
  PyObject* cap = PyCapsule_New(st, "arrow_array_stream", capsule_stream_gone);
  if (cap == nullptr) {
    stream_release(st);
    delete st;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(cap);
}

}  // namespace xshm_py
