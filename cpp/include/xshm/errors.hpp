// The exceptions the xshm core throws. Errors the operating system reports are
// std::system_error carrying the errno (ENOENT, EEXIST, EACCES, ENOSPC, ...), so every
// binding can map them to its own "file not found" / "permission denied" types.
// Everything else derives from xshm::Error, in the tree Python's xshm.errors mirrors name for
// name: Error (XshmError) > LayoutError; ArgumentError > {DtypeError, MessageTooLongError};
// ReadOnlyError; MessageDecodeError; TornRecordError; WaitTimeoutError > StreamFullError;
// ClosedError.
#pragma once

#include <cerrno>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <system_error>

namespace xshm {

/// Base of every error the core raises itself (not the OS errors).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The Python name of the base class; the same tree in both languages.
using XshmError = Error;

/// A segment that is foreign, corrupt, truncated, of another layout version, or whose
/// layout does not match what the caller asked for.
class LayoutError : public Error {
 public:
  using Error::Error;
};

/// A bad argument: name, shape, size, dtype, message too long.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// A dtype the layout cannot carry (only little-endian bool, ints, floats, complex), or a typed
/// call whose T is not the segment's element type (typed.hpp); Python: values of another dtype
/// that its casting rule does not convert.
class DtypeError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// The message is longer than the message slot and truncation was not asked for.
class MessageTooLongError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// A write through a handle that was opened read-only. Not an ArgumentError: in Python it is
/// also a PermissionError, which cannot share a base with ValueError.
class ReadOnlyError : public Error {
 public:
  using Error::Error;
};

/// A message slot holding bytes that are not valid UTF-8, met by a checked accessor
/// (Snapshot::text()). offset() is where the first invalid sequence starts.
class MessageDecodeError : public Error {
 public:
  MessageDecodeError(const std::string& what, std::size_t offset) : Error(what), offset_(offset) {}
  std::size_t offset() const noexcept { return offset_; }

 private:
  std::size_t offset_;
};

/// Only with backup disabled: the live record was left half-written by a writer that died;
/// readers get this until the next complete publish.
class TornRecordError : public Error {
 public:
  using Error::Error;
};

/// A bounded wait (wait(), open(timeout), publish/begin_write/lock with a timeout) ran out.
class WaitTimeoutError : public Error {
 public:
  using Error::Error;
};

/// A send on a "block" stream ran out of time because the slowest reader stayed a full ring
/// behind (or the stream's mutex stayed held by a stopped writer).
class StreamFullError : public WaitTimeoutError {
 public:
  using WaitTimeoutError::WaitTimeoutError;
};

/// Deprecated: the old name of WaitTimeoutError, kept so existing code compiles.
using TimeoutError [[deprecated("use WaitTimeoutError")]] = WaitTimeoutError;

/// A view of a "drop_oldest" stream's message (StreamReader::recv_view) whose slot a writer
/// overwrote while it was held: what was read through it may be torn. The reader counted the
/// message lost and moved past it.
class OverwrittenError : public Error {
 public:
  using Error::Error;
};

/// The handle was closed.
class ClosedError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] inline void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}
}  // namespace detail

}  // namespace xshm
