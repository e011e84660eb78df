"""xshm: live data shared between processes on one machine.

Two kinds of segment. A record holds the latest value: a ``counter``, a typed ``values`` array
and a UTF-8 ``message``; writers publish it under a robust process-shared mutex, and any number
of readers take consistent snapshots without locks (a seqlock), or look at the values in place
through a zero-copy numpy view. A stream (:class:`Stream`) carries every message, in order,
through a ring: any number of writers, and readers that each have their own cursor. C++
programs that include ``<xshm/xshm.hpp>`` read and write the same segments.

>>> import xshm
>>> with xshm.SharedMemoryManager.create("doctest-xshm", shape=(3,)) as m:
...     seq = m.publish(values=[1.0, 2.0, 3.0], message="hello", counter=7)
...     snap = m.read()
...     m.unlink()
>>> snap.counter, snap.message, snap.values.tolist()
(7, 'hello', [1.0, 2.0, 3.0])
"""

from __future__ import annotations

import os

import xshm_text as text

from . import errors
from ._core import (
    LAYOUT_VERSION,
    LockBlock,
    Message,
    MessageView,
    Record,
    SharedMemoryManager,
    Snapshot,
    Stream,
    StreamClaim,
    StreamReader,
    WriteBlock,
    normalize_name,
)
from ._core import unlink as _unlink
from ._version import __version__
from .errors import (
    ArgumentError,
    ClosedError,
    DtypeError,
    LayoutError,
    MessageDecodeError,
    MessageTooLongError,
    OverwrittenError,
    ReadOnlyError,
    StreamFullError,
    TornRecordError,
    WaitTimeoutError,
    XshmError,
)

__all__ = [
    "LAYOUT_VERSION",
    "ArgumentError",
    "ClosedError",
    "DtypeError",
    "LayoutError",
    "LockBlock",
    "Message",
    "MessageDecodeError",
    "MessageTooLongError",
    "MessageView",
    "OverwrittenError",
    "ReadOnlyError",
    "Record",
    "SharedMemoryManager",
    "Snapshot",
    "Stream",
    "StreamClaim",
    "StreamFullError",
    "StreamReader",
    "TornRecordError",
    "WaitTimeoutError",
    "WriteBlock",
    "XshmError",
    "__version__",
    "errors",
    "get_cmake_dir",
    "get_include",
    "normalize_name",
    "text",
    "unlink",
]


def unlink(name: str, force: bool = False) -> None:
    """Remove the segment ``name``.

    Mappings that exist stay valid until they are closed. Unless ``force`` is true, a segment
    that is not an xshm segment is refused with :class:`LayoutError`. A missing segment raises
    ``FileNotFoundError``.
    """
    _unlink(name, force)


def get_include() -> str:
    """The directory to add to a C++ compiler's include path for ``<xshm/xshm.hpp>``: the
    exact header this package was built from."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.isdir(installed):
        return installed
    return os.path.abspath(os.path.join(here, "..", "..", "cpp", "include"))


def get_cmake_dir() -> str:
    """The directory holding ``xshmConfig.cmake``, for ``find_package(xshm)`` (``-Dxshm_DIR``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "share", "cmake", "xshm")
