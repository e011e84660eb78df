// xshm.Stream, xshm.StreamReader and xshm.Message as Python sees them: a handle on one stream
// that converts Python data (bytes-likes, or numpy frames of the stream's dtype and shape) for
// the core's Stream (cpp/include/xshm/stream/stream.hpp), tries every send and receive once with the
// GIL held (nothing to wait for: no GIL round trip) and waits with it released, Ctrl-C
// honoured. A receive waits for its message without the GIL and then copies it with the GIL
// held, straight from the slot into the bytes or array it returns (one copy). A reader closed
// from another thread ends the receive waiting in it (ClosedError; iteration just stops).
// Message is a small C type like Snapshot (a pybind11 instance costs ~200 ns). The hot
// methods (send, try_send, recv, try_recv, iteration) are METH_FASTCALL (fastcall.hpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <xshm/stream/stream.hpp>

namespace xshm_py {

namespace py = pybind11;

/// The instance layout of xshm.Message.
struct MessageObject {
  PyObject_HEAD
  PyObject* data;  // bytes, or a numpy array for frame streams
  unsigned long long seq;
  long long timestamp_ns;
  unsigned long long writer_pid;
};

extern PyTypeObject* g_message_type;

/// What a stream carries, as Python sees it: bytes, or frames of one dtype and shape.
struct Frame {
  py::object dtype;  // None for byte streams
  std::vector<Py_intptr_t> dims;
  bool is_frame() const { return !dtype.is_none(); }
};

class PyStream {
 public:
  PyStream(xshm::Stream s, Frame f) : s_(std::move(s)), frame_(std::move(f)) {}
  xshm::Stream& s() {
    if (!s_.is_open()) throw xshm::ClosedError("the stream handle is closed");
    return s_;
  }
  const Frame& frame() const { return frame_; }
  bool closed() const { return !s_.is_open(); }
  void close() { s_.close(); }

 private:
  xshm::Stream s_;
  Frame frame_;
};

/// A reader as Python holds it. One receive at a time: `busy` covers every call a receive
/// makes into the core reader (the tries with the GIL held, the wait without it), so that
/// another thread's close() can interrupt the wait and close only once the receive has left
/// (close_reader in stream.cpp). Everything but `busy` is read and written with the GIL held;
/// `busy` is also read by a closer waiting without the GIL, under `m`.
class PyReader {
 public:
  PyReader(xshm::StreamReader r, Frame f, std::string name)
      : r_(std::make_shared<xshm::StreamReader>(std::move(r))),
        frame_(std::move(f)),
        name_(std::move(name)) {}
  xshm::StreamReader& r() {
    if (closed()) throw xshm::ClosedError("the stream reader is closed");
    return *r_;
  }
  /// The core reader, open or closed, shared with the receive that waits without the GIL.
  const std::shared_ptr<xshm::StreamReader>& shared() const { return r_; }
  bool closed() const { return !r_->is_attached(); }
  const Frame& frame() const { return frame_; }
  const std::string& name() const { return name_; }

  std::atomic<bool> busy{false};     // a receive is under way (written with the GIL held)
  class PyTicket* ticket = nullptr;  // a coroutine's receive sleeping (aio.hpp), GIL held
  unsigned long receiver = 0;        // ... in this thread (PyThread_get_thread_ident)
  int closers = 0;                   // close() calls waiting for the receive to leave
  std::mutex m;                      // with cv: a closer's wait for `busy` to clear
  std::condition_variable cv;

 private:
  std::shared_ptr<xshm::StreamReader> r_;
  Frame frame_;
  std::string name_;
};

/// A Python MessageView (stream_zero_copy.cpp) of `v`, taken by `reader`.
py::object make_view(std::shared_ptr<xshm::StreamReader> reader, xshm::MessageView v, const Frame& f);

/// Creates xshm.StreamClaim, Stream.claim()/try_claim() and xshm.MessageView
/// (stream_zero_copy.cpp).
void register_stream_claim(py::module_& mod, py::class_<PyStream>& stream_cls);

/// Creates xshm.Message, xshm.Stream and xshm.StreamReader in the module.
void register_stream(py::module_& mod);

}  // namespace xshm_py
