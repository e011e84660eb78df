// Zero-copy sends and receives from Python, over the core's StreamClaim (claim.hpp) and
// MessageView (reader.hpp):
//
//   with s.claim(nbytes) as buf:   # buf: a writable numpy array over the slot itself
//       buf[:] = ...               # sent when the block ends; not at all if it raises
//   with r.recv_view() as v:       # v.data: a read-only numpy array over the slot itself
//       total = v.data.sum()       # the reader moves past it when the block ends
//
// Every array over the slot has, at the end of its base chain, a capsule that owns the core
// claim or view (and through it the mapping), so the claim or view lives as long as any array
// over its slot. Ending it (commit, drop, release, leaving the block) first checks that no
// array derived from the handed-out one still exists (the reference count of their common
// base tells), as memoryview.release() does: else BufferError, and the claim or view stays
// held, its slot pinned, so that no array ever aliases a slot another message reuses. Once
// ended, the handed-out array is pointed at a read-only region of zeros: writing to it
// raises, reading shows no message. Not counted, so not refused (numpy gives them the
// handed-out array, not the private one, as base, or copies its data pointer): views of a
// numpy subclass (np.matrix, recarray, masked arrays), np.lib.stride_tricks (as_strided,
// sliding_window_view), exports of its buffer (memoryview(buf), ctypes pointers, buf.flat
// iterators). They keep the slot's address after the block: copy what is kept.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "args.hpp"
#include "fastcall.hpp"
#include "stream.hpp"
#include "waits.hpp"

namespace xshm_py {

namespace {

/// A read-only region of zeros as large as any payload (max_bytes <= 2**30), never touched
/// (address space only): where an ended claim's array points.
char* retired_region() {
  static char* p = [] {
    void* q = ::mmap(nullptr, (std::size_t{1} << 30) + 4096, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (q == MAP_FAILED) throw std::bad_alloc();
    return static_cast<char*>(q);
  }();
  return p;
}

/// The arrays over one slot: a private array whose base is the capsule `owner`, and the view
/// of it handed out. numpy gives every array derived from the handed-out one the private array
/// as base (it stops collapsing a base chain at a non-array), so its reference count tells how
/// many there are.
class SlotArrays {
 public:
  py::object get(const Frame& f, void* data, std::size_t size, bool writable, const py::capsule& owner) {
    if (!handed_) {
      py::array base;
      if (f.is_frame())
        base = py::array(py::dtype::from_args(f.dtype), f.dims, {}, data, owner);
      else
        base = py::array(py::dtype("uint8"), {static_cast<py::ssize_t>(size)}, {}, data, owner);
      if (!writable) py::detail::array_proxy(base.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
      handed_ = base.attr("view")();
      base_ = std::move(base);
    }
    return handed_;
  }
  /// Arrays over the slot other than the one handed out: views of it, slices, reshapes (the
  /// private base is held here and by the handed-out array).
  Py_ssize_t derived() const { return base_ ? Py_REFCNT(base_.ptr()) - 2 : 0; }
  void check_no_derived(const std::string& what) const {
    if (const Py_ssize_t n = derived(); n > 0)
      throw py::buffer_error(std::to_string(n) + " array(s) derived from the " + what);
  }
  /// Points the handed-out array and the private one (its base, reachable as `buf.base`) at
  /// the read-only zeros: neither can reach the slot any more, and, the base read-only, numpy
  /// refuses to make the handed-out array writable again.
  void retire() {
    for (const py::object& o : {handed_, base_}) {
      if (!o) continue;
      auto* a = py::detail::array_proxy(o.ptr());
      a->data = retired_region();
      a->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    }
  }

 private:
  py::object base_;    // the private array over the slot (base: the capsule)
  py::object handed_;  // the array handed out (base: base_)
};

class PyClaim {
 public:
  PyClaim(xshm::StreamClaim c, Frame f, std::string name)
      : frame_(std::move(f)), name_(std::move(name)), seq_(c.seq()), size_(c.size()) {
    auto* owned = new xshm::StreamClaim(std::move(c));
    owner_ = py::capsule(owned, [](void* p) { delete static_cast<xshm::StreamClaim*>(p); });
  }

  std::uint64_t seq() const { return seq_; }
  std::size_t size() const { return size_; }
  bool is_open() const { return claim().is_open(); }

  /// The writable array over the slot (the same object every time).
  py::object array() { return arrays_.get(frame_, open_claim().data(), size_, true, owner_); }

  /// Publishes the first `n` bytes (all claimed: None).
  void commit(py::handle n) {
    xshm::StreamClaim& c = open_claim();
    if (!n.is_none() && (!is_integer(n.ptr()) || PyBool_Check(n.ptr())))
      throw py::type_error("nbytes must be an integer or None, not " + type_name(n.ptr()));
    const std::size_t bytes = n.is_none() ? size_ : static_cast<std::size_t>(arg_u64(n.ptr(), "nbytes"));
    if (bytes > size_)  // checked before the arrays are retired: the claim stays usable
      throw xshm::ArgumentError("commit of " + std::to_string(bytes) + " bytes: the claim has " +
                                std::to_string(size_));
    if (frame_.is_frame() && bytes != size_)
      throw xshm::ArgumentError("a frame is sent whole: commit() takes no size on a frame stream");
    check_no_derived("commit");
    arrays_.retire();
    c.commit(bytes);
  }

  void drop() {
    if (!claim().is_open()) return;
    check_no_derived("drop");
    arrays_.retire();
    claim().drop();
  }

  /// Leaving the block: commit on a clean exit, drop when it raised. With the user's exception
  /// in flight nothing is raised here: if derived arrays still exist the claim stays open
  /// (until drop(), or until this object and every array over the slot are gone: the capsule
  /// then drops it), and the user's error propagates.
  void exit(bool raised) {
    if (!claim().is_open()) return;  // committed or dropped inside the block
    if (!raised) {
      commit(py::none());
      return;
    }
    arrays_.retire();
    if (arrays_.derived() == 0) claim().drop();
  }

  std::string repr() const {
    return "<xshm.StreamClaim " + name_ + " seq=" + std::to_string(seq_) +
           " nbytes=" + std::to_string(size_) + (claim().is_open() ? " open>" : " ended>");
  }

 private:
  xshm::StreamClaim& claim() const { return *static_cast<xshm::StreamClaim*>(owner_.get_pointer()); }
  xshm::StreamClaim& open_claim() const {
    if (!claim().is_open())
      throw xshm::ClosedError("the claim of message " + std::to_string(seq_) +
                              " has ended (committed or dropped)");
    return claim();
  }
  void check_no_derived(const char* what) const {
    arrays_.check_no_derived(
        std::string("claim's buffer (views, slices) still exist: delete them before the claim "
                    "can ") +
        what + " (the message is not sent yet and its slot stays held)");
  }

  Frame frame_;
  std::string name_;
  std::uint64_t seq_;
  std::size_t size_;
  py::capsule owner_;  // owns the core claim
  SlotArrays arrays_;
};

/// A view as Python holds it: the capsule owns the core view and the reader it refers to
/// (kept alive and in place).
struct OwnedView {
  std::shared_ptr<xshm::StreamReader> reader;  // declared first: destroyed after the view
  xshm::MessageView view;
};

class PyView {
 public:
  PyView(std::shared_ptr<xshm::StreamReader> reader, xshm::MessageView v, Frame f)
      : frame_(std::move(f)), info_(v.info()) {
    auto* owned = new OwnedView{std::move(reader), std::move(v)};
    owner_ = py::capsule(owned, [](void* p) { delete static_cast<OwnedView*>(p); });
  }

  /// The read-only array over the slot (the same object every time).
  py::object data() {
    xshm::MessageView& v = held_view();
    return arrays_.get(frame_, const_cast<unsigned char*>(v.data()), v.size(), false, owner_);
  }
  const xshm::MessageInfo& info() const { return info_; }
  bool held() const { return view().is_held(); }
  bool overwritten() const { return view().overwritten(); }

  /// The reader moves past the message. BufferError while derived arrays exist (the view
  /// stays held); OverwrittenError when a drop_oldest writer overwrote it (counted lost).
  void release() {
    if (!view().is_held()) return;
    arrays_.check_no_derived(
        "view's data (views, slices) still exist: delete them before the view can be released (the "
        "reader stays on message " +
        std::to_string(info_.seq) + ")");
    arrays_.retire();
    view().release();
  }

  /// Leaving the block: release. With the user's exception in flight nothing is raised here:
  /// an overwritten view is counted lost in silence, and with derived arrays still there the
  /// view stays held (release() it later).
  void exit(bool raised) {
    if (!view().is_held()) return;
    if (!raised) {
      release();
      return;
    }
    arrays_.retire();
    if (arrays_.derived() == 0) {
      try {
        view().release();
      } catch (const xshm::OverwrittenError&) {
      }
    }
  }

  std::string repr() const {
    return "<xshm.MessageView seq=" + std::to_string(info_.seq) + " nbytes=" + std::to_string(info_.size) +
           (view().is_held() ? " held>" : " released>");
  }

 private:
  xshm::MessageView& view() const { return static_cast<OwnedView*>(owner_.get_pointer())->view; }
  xshm::MessageView& held_view() const {
    if (!view().is_held())
      throw xshm::ClosedError("the view of message " + std::to_string(info_.seq) +
                              " was released: its data is no longer there (copy what you keep)");
    return view();
  }

  Frame frame_;
  xshm::MessageInfo info_;
  py::capsule owner_;  // owns the core view
  SlotArrays arrays_;
};

std::size_t claim_bytes(const PyStream& ps, xshm::Stream& s, PyObject* nbytes) {
  if (nbytes == nullptr || nbytes == Py_None) return static_cast<std::size_t>(s.max_bytes());
  if (ps.frame().is_frame())
    throw xshm::ArgumentError("a frame stream's claim is one whole frame: give no nbytes");
  if (!is_integer(nbytes) || PyBool_Check(nbytes))
    throw py::type_error("nbytes must be an integer or None, not " + type_name(nbytes));
  return static_cast<std::size_t>(arg_u64(nbytes, "nbytes"));
}

PyStream& stream_self(PyObject* self) { return py::handle(self).cast<PyStream&>(); }

PyObject* fast_claim(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<2> spec("claim", {"nbytes", "timeout"}, 0);
    PyObject* a[2];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_self(self);
    xshm::Stream& s = ps.s();
    const std::size_t n = claim_bytes(ps, s, a[0]);
    const xshm::Timeout limit = arg_timeout(a[1]);
    std::optional<xshm::StreamClaim> c = s.try_claim(n);  // with the GIL: nothing to wait for
    if (!c && limit && limit->count() == 0) {
      c.emplace(s.claim(n, limit));  // raises StreamFullError, naming why
    } else if (!c) {
      xshm::Stream local = s;
      py::gil_scoped_release nogil;
      c.emplace(local.claim(n, limit, check_signals));
    }
    return py::cast(PyClaim(std::move(*c), ps.frame(), s.name()));
  });
}

PyObject* fast_try_claim(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return guarded([&]() -> py::object {
    static const ArgSpec<1> spec("try_claim", {"nbytes"}, 0);
    PyObject* a[1];
    spec.parse(args, nargs, kwnames, a);
    PyStream& ps = stream_self(self);
    xshm::Stream& s = ps.s();
    std::optional<xshm::StreamClaim> c = s.try_claim(claim_bytes(ps, s, a[0]));
    if (!c) return py::none();
    return py::cast(PyClaim(std::move(*c), ps.frame(), s.name()));
  });
}

constexpr int kFastClaim = METH_FASTCALL | METH_KEYWORDS;
PyMethodDef g_claim_methods[] = {
    {"claim", fastcall_fn(fast_claim), kFastClaim,
     "claim($self, /, nbytes=None, timeout=None)\n--\n\n"
     "Claim the next slot for a zero-copy send: `with s.claim(n) as buf:` fills `buf` (a writable\n"
     "numpy array over the slot: uint8 of `nbytes`, default max_bytes, or the stream's frame) and\n"
     "sends it when the block ends; to send fewer bytes, keep the claim (`c = s.claim(n)`, `with c\n"
     "as buf:`) and call `c.commit(k)` in the block. Waits as send() does (GIL released, Ctrl-C\n"
     "honoured), then raises StreamFullError. An open claim holds back the readers behind it."},
    {"try_claim", fastcall_fn(fast_try_claim), kFastClaim,
     "try_claim($self, /, nbytes=None)\n--\n\nA claim if a slot is free now, else None (never waits)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

py::object make_view(std::shared_ptr<xshm::StreamReader> reader, xshm::MessageView v, const Frame& f) {
  return py::cast(PyView(std::move(reader), std::move(v), f));
}

void register_stream_claim(py::module_& mod, py::class_<PyStream>& stream_cls) {
  py::class_<PyClaim> claim_cls(
      mod, "StreamClaim",
      "A slot of a stream claimed for a zero-copy send (Stream.claim()). Used as a context\n"
      "manager it yields a writable numpy array over the slot itself, and sends it when\n"
      "the block ends (drops it, sending nothing, if the block raises).");
  claim_cls.def_property_readonly("seq", &PyClaim::seq, "The sequence number the message gets.")
      .def_property_readonly("nbytes", &PyClaim::size, "The bytes claimed.")
      .def_property_readonly("open", &PyClaim::is_open, "Whether it is neither committed nor dropped yet.")
      .def_property_readonly("array", &PyClaim::array,
                             "The writable numpy array over the slot (uint8 of nbytes, or the frame).")
      .def("commit", &PyClaim::commit, py::arg("nbytes") = py::none(),
           "Send the first `nbytes` bytes (None: all claimed; a frame is always whole). The array\n"
           "then reads as zeros and refuses writes. BufferError while arrays derived from it exist.")
      .def("drop", &PyClaim::drop,
           "Withdraw the claim: nothing is sent (readers step over its number and count it `skipped`).\n"
           "Idempotent.")
      .def("__enter__", &PyClaim::array)
      .def("__exit__",
           [](PyClaim& c, py::handle type, py::handle, py::handle) {
             c.exit(!type.is_none());
             return false;
           })
      .def("__repr__", &PyClaim::repr);
  install(claim_cls, nullptr, nullptr, nullptr);  // __init__ refuses, saying how to get one

  install(stream_cls, g_claim_methods, nullptr, nullptr);

  py::class_<PyView> view_cls(
      mod, "MessageView",
      "A message read in place (StreamReader.recv_view()): `data` is a read-only numpy array over\n"
      "the slot itself. The reader moves past the message when the view is released (leaving its\n"
      "with block): until then a 'block' writer cannot reuse the slot.");
  view_cls
      .def_property_readonly("data", &PyView::data,
                             "The payload, in place: a read-only numpy array (uint8, or the frame).")
      .def_property_readonly(
          "seq", [](const PyView& v) { return v.info().seq; }, "Its sequence number.")
      .def_property_readonly(
          "nbytes", [](const PyView& v) { return v.info().size; }, "Its payload bytes.")
      .def_property_readonly(
          "timestamp_ns", [](const PyView& v) { return v.info().timestamp_ns; },
          "Wall-clock time it was sent, ns since the epoch.")
      .def_property_readonly(
          "writer_pid", [](const PyView& v) { return v.info().writer_pid; },
          "Pid of the process that sent it.")
      .def_property_readonly("held", &PyView::held, "Whether it is not yet released.")
      .def_property_readonly("overwritten", &PyView::overwritten,
                             "Whether a 'drop_oldest' writer has reused the slot since the view was taken:\n"
                             "what `data` shows may then be torn (release() raises OverwrittenError).")
      .def("release", &PyView::release,
           "Move the reader past the message. Idempotent. BufferError while arrays derived from\n"
           "`data` exist (the view stays held); OverwrittenError if the slot was overwritten\n"
           "meanwhile (the message is counted lost).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyView& v, py::handle type, py::handle, py::handle) {
             v.exit(!type.is_none());
             return false;
           })
      .def("__repr__", &PyView::repr);
  install(view_cls, nullptr, nullptr, nullptr);
}

}  // namespace xshm_py
