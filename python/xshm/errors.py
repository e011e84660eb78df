"""The exceptions xshm raises.

Every error of xshm's own derives from :class:`XshmError` and from the built-in exception a
caller would expect (``ValueError``, ``TypeError``, ...), so ``except ValueError`` keeps working.
Errors the operating system reports keep their built-in types: ``FileNotFoundError``,
``FileExistsError``, ``PermissionError``, ``OSError`` (for example ENOSPC on a full /dev/shm).

The tree is the C++ core's (``cpp/include/xshm/errors.hpp``), class for class and name for name
(C++ calls the base ``xshm::Error`` and also ``xshm::XshmError``)::

    XshmError
    ├── LayoutError            (ValueError)
    ├── ArgumentError          (ValueError)
    │   ├── DtypeError         (TypeError)
    │   └── MessageTooLongError
    ├── ReadOnlyError          (PermissionError)
    ├── MessageDecodeError     (ValueError)
    ├── TornRecordError        (RuntimeError)
    ├── OverwrittenError       (RuntimeError)
    ├── WaitTimeoutError       (TimeoutError)
    │   └── StreamFullError
    └── ClosedError            (ValueError)
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ClosedError",
    "DtypeError",
    "LayoutError",
    "MessageDecodeError",
    "MessageTooLongError",
    "OverwrittenError",
    "ReadOnlyError",
    "StreamFullError",
    "TornRecordError",
    "WaitTimeoutError",
    "XshmError",
]


class XshmError(Exception):
    """Base class of every error raised by xshm itself."""


class LayoutError(XshmError, ValueError):
    """A segment that is foreign, corrupt, truncated, of another layout version, or whose
    layout does not match what the caller asked for."""


class ArgumentError(XshmError, ValueError):
    """A bad argument: a name, shape or size that xshm refuses."""


class DtypeError(ArgumentError, TypeError):
    """A dtype the layout cannot carry (only little-endian bool, integers, floats, complex), or
    values of another dtype than the segment's that the ``casting=`` rule does not convert (the
    message names both dtypes and the casting that would)."""


class MessageTooLongError(ArgumentError):
    """A message longer than the segment's message slot (pass ``truncate=True`` to cut it)."""


class MessageDecodeError(XshmError, ValueError):
    """A message slot holding bytes that are not valid UTF-8, read by a handle opened with
    ``errors="strict"``. ``offset`` is where the first invalid sequence starts (found by
    :func:`xshm_text.valid_up_to`); ``raw`` holds the message bytes."""

    def __init__(self, message: str, offset: int, raw: bytes) -> None:
        super().__init__(message)
        self.offset = offset
        self.raw = raw


class ReadOnlyError(XshmError, PermissionError):
    """A write through a handle opened with ``readonly=True``. Not an :class:`ArgumentError`:
    Python's ``PermissionError`` cannot share a base with ``ValueError``, and C++ keeps the same
    shape."""


class TornRecordError(XshmError, RuntimeError):
    """Only for segments created with ``backup=False``: the record was left half-written by a
    writer that died; it stays unreadable until the next complete publish."""


class OverwrittenError(XshmError, RuntimeError):
    """A view of a ``'drop_oldest'`` stream's message (``StreamReader.recv_view()``) whose slot a
    writer reused while the view was held: what was read through it may be torn. The reader
    counted the message lost and moved past it."""


class WaitTimeoutError(XshmError, TimeoutError):
    """A bounded wait (``wait``, ``write``/``lock`` with a timeout, ``open`` with a timeout)
    ran out."""


class StreamFullError(WaitTimeoutError):
    """A send ran out of time: on a ``"block"`` stream the slowest attached reader stayed a full
    ring behind; on either policy, the stream's mutex stayed held by a stopped writer, or the
    next slot's earlier writer was still writing it. Nothing was sent, or, for ``send_many``,
    the message says how many were."""


class ClosedError(XshmError, ValueError):
    """An operation on a closed handle."""
