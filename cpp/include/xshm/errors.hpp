// The exceptions the xshm core throws. Errors the operating system reports are
// std::system_error carrying the errno (ENOENT, EEXIST, EACCES, ENOSPC, ...), so every
// binding can map them to its own "file not found" / "permission denied" types.
// Everything else derives from xshm::Error.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

namespace xshm {

/// Base of every error the core raises itself (not the OS errors).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A segment that is foreign, corrupt, truncated, of another layout version, or whose
/// layout does not match what the caller asked for.
class LayoutError : public Error {
 public:
  using Error::Error;
};

/// A bad argument: name, shape, size, message too long, read-only handle asked to write.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// A dtype the layout cannot carry (only little-endian bool, ints, floats, complex).
class DtypeError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// The message is longer than the message slot and truncation was not asked for.
class MessageTooLongError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// A write through a handle that was opened read-only.
class ReadOnlyError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// Only with backup disabled: the live record was left half-written by a writer that died;
/// readers get this until the next complete publish.
class TornRecordError : public Error {
 public:
  using Error::Error;
};

/// A bounded wait (wait(), open(timeout), lock(timeout)) ran out.
class TimeoutError : public Error {
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
