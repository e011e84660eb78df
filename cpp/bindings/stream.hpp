// xshm.Stream, xshm.StreamReader and xshm.Message as Python sees them: a handle on one stream
// that converts Python data (bytes-likes, or numpy frames of the stream's dtype and shape) for
// the core's Stream (cpp/include/xshm/stream/stream.hpp), tries every send and receive once with the
// GIL held (nothing to wait for: no GIL round trip) and waits with it released, Ctrl-C
// honoured. Message is a small C type like Snapshot (a pybind11 instance costs ~200 ns). The
// hot methods (send, try_send, recv, try_recv, iteration) are METH_FASTCALL (fastcall.hpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
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

class PyReader {
 public:
  PyReader(xshm::StreamReader r, Frame f, std::string name, std::uint64_t max_bytes)
      : r_(std::make_unique<xshm::StreamReader>(std::move(r))),
        frame_(std::move(f)),
        name_(std::move(name)),
        buf_(static_cast<std::size_t>(max_bytes)) {}
  xshm::StreamReader& r() {
    if (!r_ || !r_->is_attached()) throw xshm::ClosedError("the stream reader is closed");
    return *r_;
  }
  bool closed() const { return !r_ || !r_->is_attached(); }
  const Frame& frame() const { return frame_; }
  const std::string& name() const { return name_; }
  std::vector<unsigned char>& buf() { return buf_; }
  bool busy = false;  // a receive of another thread waits with the GIL released

 private:
  std::unique_ptr<xshm::StreamReader> r_;
  Frame frame_;
  std::string name_;
  std::vector<unsigned char> buf_;
};

/// Creates xshm.Message, xshm.Stream and xshm.StreamReader in the module.
void register_stream(py::module_& mod);

}  // namespace xshm_py
