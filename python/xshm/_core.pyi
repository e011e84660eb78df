"""Stubs for xshm._core, the pybind11 binding over the C++ header. Checked against the
compiled module by mypy.stubtest (make lint)."""

from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, Optional, Union

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, TypeAlias

LAYOUT_VERSION: int
MAX_NAME_BYTES: int

_Shape: TypeAlias = Union[int, tuple[int, ...], list[int]]
_Casting: TypeAlias = Literal["no", "equiv", "safe", "same_kind", "unsafe"]

class Snapshot:
    """A consistent copy of a segment's record."""
    @property
    def seq(self) -> int: ...
    @property
    def counter(self) -> int: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def writer_pid(self) -> int: ...
    @property
    def values(self) -> npt.NDArray[Any]: ...
    @property
    def message(self) -> str: ...
    def __dlpack__(
        self,
        *,
        stream: Optional[int] = None,
        max_version: Optional[tuple[int, int]] = None,
        dl_device: Optional[tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any:
        """A DLPack capsule over the object's own buffer (no copy; see docs)."""
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __arrow_c_schema__(self) -> Any:
        """The Arrow schema (PyCapsule) of the one-row struct below."""
    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]:
        """(schema, array) PyCapsules: one row of seq, counter, timestamp, writer_pid, message
        and values (nested fixed-size lists; the snapshot's own buffer, no copy)."""

class Record:
    """The record being written inside ``with m.write() as rec:``."""
    @property
    def values(self) -> npt.NDArray[Any]:
        """The values to publish, writable inside the block (the shared record itself when in
        place); read-only when the block ends. Raises ArgumentError after the block.
        ``rec.values = x`` is ``rec.set_values(x)``: a copy into them."""
    @values.setter
    def values(self, value: npt.ArrayLike) -> None: ...
    @property
    def counter(self) -> int: ...
    @counter.setter
    def counter(self, value: int) -> None: ...
    @property
    def message(self) -> str: ...
    @message.setter
    def message(self, value: str) -> None: ...
    def set_message(self, message: str, truncate: bool = ...) -> None:
        """Set the message. Longer than the slot raises MessageTooLongError, unless
        ``truncate=True``, which cuts it on a code-point boundary to fit."""
    def set_values(self, values: npt.ArrayLike, casting: _Casting = ...) -> None:
        """Copy ``values`` into the record's values as numpy assignment does (the record's
        shape, or one that broadcasts to it). ``casting`` (numpy's vocabulary) says which dtypes
        are converted: by default ("equiv") only the record's own, and DtypeError names the
        casting that would convert; a list or a number is ``np.asarray``'ed first."""

class WriteBlock:
    """Context manager returned by SharedMemoryManager.write()."""
    def __enter__(self) -> Record: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> None: ...
    @property
    def seq(self) -> Optional[int]: ...

class LockBlock:
    """Context manager returned by SharedMemoryManager.lock()."""
    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> None: ...

class SharedMemoryManager:
    """A handle on one xshm shared-memory segment."""
    @staticmethod
    def create(
        name: str,
        shape: _Shape = ...,
        dtype: npt.DTypeLike = ...,
        message_capacity: int = ...,
        mode: int = ...,
        exist_ok: bool = ...,
        backup: bool = ...,
        errors: str = ...,
    ) -> SharedMemoryManager: ...
    @staticmethod
    def open(
        name: str,
        readonly: bool = ...,
        timeout: Optional[float] = ...,
        errors: str = ...,
        stall_timeout: Optional[float] = ...,
    ) -> SharedMemoryManager: ...
    def close(self) -> None: ...
    def unlink(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def message_capacity(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def backup(self) -> bool: ...
    @property
    def errors(self) -> str: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def recoveries(self) -> int: ...
    @property
    def owner_pid(self) -> int: ...
    @property
    def live_values(self) -> npt.NDArray[Any]:
        """Zero-copy, read-only view of the live values: it may show a publish in progress
        (``read()`` gives a consistent copy)."""
    @property
    def values(self) -> npt.NDArray[Any]:
        """The old name of :attr:`live_values`, kept as an alias (the live view, which may
        show a publish in progress; a snapshot's ``.values`` is the consistent copy)."""
    def header(self) -> dict[str, Any]: ...
    def read(self) -> Snapshot:
        """A consistent snapshot (copy) of the record. Never waits for a writer. A snapshot
        you hold (or its values, or a view of them) never changes; once nothing holds the
        last one, the next read() refills it rather than allocating."""
    def read_into(self, out: npt.NDArray[Any]) -> Snapshot: ...
    def publish(
        self,
        values: Optional[npt.ArrayLike] = ...,
        message: Optional[str] = ...,
        counter: Optional[int] = ...,
        truncate: bool = ...,
        casting: _Casting = ...,
    ) -> int:
        """Write and publish in one call; a field given as None keeps its value. ``values``
        must have the segment's shape; ``casting`` (numpy's vocabulary) says which dtypes are
        converted: by default ("equiv") only the segment's own (byte-swapped too), and
        DtypeError names the casting that would convert; a list or a number is
        ``np.asarray``'ed first."""
    def wait(self, seq: int, timeout: Optional[float] = ..., spin: float = ...) -> int: ...
    def wait_async(self, seq: int, timeout: Optional[float] = None) -> Coroutine[Any, Any, int]:
        """``await m.wait_async(seq)``: wait's asyncio twin; the new sequence, WaitTimeoutError
        after ``timeout`` seconds, ClosedError if the handle closes meanwhile. No thread per
        wait (see xshm._aio); cancelling it withdraws it."""
    def _prepare_wait(self, seq: int) -> Union[int, _Ticket]: ...
    def write(self, timeout: Optional[float] = ..., in_place: Optional[bool] = ...) -> WriteBlock:
        """``with m.write() as rec:`` takes the writer mutex and gives the record to write;
        leaving the block publishes it, a block that raises publishes nothing and leaves the
        record as it was. ``in_place``: None writes ``rec.values`` straight into the shared
        record when the segment has a backup, into a private copy without one; True forces in
        place (without a backup: readers stall meanwhile, and an aborted or killed block leaves
        the record torn until the next full publish); False forces the private copy. Arrays
        handed out become read-only when the block ends; views derived from them that outlive
        it are detached: they keep the values as the block left them, and writes through them
        stay private to this process."""
    def lock(self, timeout: Optional[float] = ...) -> LockBlock: ...

def unlink(name: str, force: bool = ...) -> None: ...
def normalize_name(name: str) -> str: ...

STREAM_LAYOUT_VERSION: int

_Bytes: TypeAlias = Union[bytes, bytearray, memoryview, npt.NDArray[Any]]

class Message:
    """One message received from a stream (a copy)."""
    @property
    def data(self) -> Any:
        """The payload: bytes, or a numpy array (a private copy) for a frame stream."""
    @property
    def seq(self) -> int: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def writer_pid(self) -> int: ...
    def __dlpack__(
        self,
        *,
        stream: Optional[int] = None,
        max_version: Optional[tuple[int, int]] = None,
        dl_device: Optional[tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any:
        """A DLPack capsule over the object's own buffer (no copy; see docs)."""
    def __dlpack_device__(self) -> tuple[int, int]: ...

class StreamReader:
    """One reader of a stream: its own cursor, every message in order from where it started."""
    def recv(self, timeout: Optional[float] = None, spin: float = 0.0) -> Message:
        """The next message; WaitTimeoutError after `timeout` seconds (None: forever)."""
    def recv_view(self, timeout: Optional[float] = None, spin: float = 0.0) -> MessageView:
        """The next message read in place (no copy), until the view is released."""
    def try_recv(self) -> Optional[Message]:
        """The next message if one is there, else None."""
    def recv_many(self, max_n: int, timeout: Optional[float] = None) -> list[Message]:
        """Wait up to `timeout` for one message, then take every message there, up to `max_n`."""
    def close(self) -> None:
        """Detach: a 'block' writer stops waiting for this reader. Idempotent."""
    @property
    def closed(self) -> bool: ...
    @property
    def lost(self) -> int: ...
    @property
    def lag(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def skipped(self) -> int:
        """Sequence numbers stepped over because their claim was dropped (nothing sent)."""
    @property
    def cursor(self) -> int: ...
    @property
    def group(self) -> Optional[str]:
        """The name of the group it is a member of, or None."""
    def __enter__(self) -> Self: ...
    def __exit__(self, arg0: object, arg1: object, arg2: object, /) -> bool: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Message: ...
    def recv_async(self, timeout: Optional[float] = None) -> Coroutine[Any, Any, Message]:
        """``await r.recv_async()``: the next message, awaited (WaitTimeoutError after
        ``timeout`` seconds; ClosedError once the reader closes). One receive at a time."""
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Coroutine[Any, Any, Message]: ...
    def _prepare_wait(self) -> Optional[_Ticket]: ...
    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The messages there now, received, as an Arrow stream (PyCapsule) of record batches:
        seq, timestamp, writer_pid, data. Ends when nothing is left; never waits."""

class MessageView:
    """A message read in place: `with r.recv_view() as v:` reads v.data without a copy."""
    @property
    def data(self) -> npt.NDArray[Any]:
        """The payload, in place: a read-only numpy array (uint8, or the frame)."""
    @property
    def seq(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def writer_pid(self) -> int: ...
    @property
    def held(self) -> bool: ...
    @property
    def overwritten(self) -> bool: ...
    def release(self) -> None:
        """Move the reader past the message (BufferError while derived arrays exist)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, arg0: object, arg1: object, arg2: object, /) -> bool: ...

class StreamClaim:
    """A slot claimed for a zero-copy send: `with s.claim(n) as buf:` fills and sends it."""
    @property
    def seq(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def open(self) -> bool: ...
    @property
    def array(self) -> npt.NDArray[Any]:
        """The writable numpy array over the slot itself."""
    def commit(self, nbytes: Optional[int] = None) -> None:
        """Send the first `nbytes` bytes (None: all); BufferError while derived arrays exist."""
    def drop(self) -> None:
        """Withdraw the claim: nothing is sent. Idempotent."""
    def __enter__(self) -> npt.NDArray[Any]: ...
    def __exit__(self, arg0: object, arg1: object, arg2: object, /) -> bool: ...

class Stream:
    """A stream: every message, in order, through a ring in shared memory."""
    @staticmethod
    def create(
        name: str,
        capacity: int,
        max_bytes: Optional[int] = None,
        dtype: Any = None,
        shape: Optional[_Shape] = None,
        backpressure: str = "block",
        max_readers: int = 16,
        mode: int = 0o600,
        exist_ok: bool = False,
        max_groups: int = 16,
    ) -> Stream:
        """Create a stream of `capacity` messages (exclusive; owner-only 0600 by default)."""
    @staticmethod
    def open(name: str, readonly: bool = False, timeout: Optional[float] = 0) -> Stream:
        """Open an existing stream, validating every header field against the mapping."""
    def send(self, data: _Bytes, timeout: Optional[float] = None) -> int:
        """Send one message; return its sequence number (StreamFullError after `timeout`)."""
    def try_send(self, data: _Bytes) -> bool:
        """Send if there is room now; False when a 'block' stream is full."""
    def send_many(self, items: Any, timeout: Optional[float] = None) -> int:
        """Send every item in order; return the sequence number of the last."""
    def claim(self, nbytes: Optional[int] = None, timeout: Optional[float] = None) -> StreamClaim:
        """Claim the next slot for a zero-copy send (StreamFullError after `timeout`)."""
    def try_claim(self, nbytes: Optional[int] = None) -> Optional[StreamClaim]:
        """A claim if a slot is free now, else None."""
    def reader(self, start: str = "oldest", group: Optional[str] = None) -> StreamReader:
        """Attach a new reader at the oldest retained message or the next one ('latest'); with
        `group`, a member of that named group (each message to exactly one member)."""
    def groups(self) -> list[dict[str, Any]]:
        """The reader groups: name, start, cursor, lag, received, lost, skipped, members."""
    def close(self) -> None: ...
    def unlink(self) -> None: ...
    def readers(self) -> list[dict[str, Any]]: ...
    def header(self) -> dict[str, Any]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, arg0: object, arg1: object, arg2: object, /) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def dtype(self) -> Optional[np.dtype[Any]]: ...
    @property
    def shape(self) -> Optional[tuple[int, ...]]: ...
    @property
    def backpressure(self) -> str: ...
    @property
    def max_readers(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def head(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def abandoned(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

def segment_kind(name: str) -> str:
    """'record', 'stream' or 'unknown', from the segment's first page (no validation)."""

# asyncio's machinery (xshm._aio drives it)
class _Inbox:
    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> list[int]: ...

class _FutexRing:
    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> list[int]: ...
    def backlog(self) -> bool: ...

class _Ticket:
    def watch(self, inbox: _Inbox, key: int, deadline_ns: Optional[int] = None) -> None: ...
    def arm(self, ring: _FutexRing, key: int) -> None: ...
    def release(self, fired: bool = False) -> None: ...
    @property
    def armed(self) -> bool: ...
    @property
    def recheck_ns(self) -> Optional[int]: ...

def _notifier_info() -> dict[str, Any]: ...
def _io_uring() -> bool: ...
