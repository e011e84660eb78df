"""A mirror: a local record or stream that follows a remote export, for ordinary local readers.

What every engine's mirror shares: the layout it learned (checked against the mirror's cap)
makes the local segment (0600), or attaches to one a previous run left with the same layout;
a record update is published if it is newer than the last (by source sequence: a mirror never
goes back); a stream's messages go in order into the local stream, the mirror being its only
writer. Nothing received is trusted: an envelope that does not decode, names another layout or
epoch than the confirmed ones, or does not fit its layout is counted in ``invalid`` and dropped
with a log line. A remote layout change is refused (the mirror stops with a
:class:`~xshm.LayoutError`, its segment untouched) unless ``allow_layout_change``. Each engine
receives in its own way: ``_zenoh_mirror``, ``_redis_bridge``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Optional, Union

import numpy as np

from .._core import SharedMemoryManager, Stream, segment_kind
from ..errors import LayoutError, StreamFullError, XshmError
from ._base import Bridge
from ._envelope import Layout, LayoutEnvelope, RecordEnvelope
from ._status import log

__all__ = ["DEFAULT_MAX_BYTES", "Mirror"]

DEFAULT_MAX_BYTES = 1 << 30  # the most a mirror reserves for a remote layout unless told
SEND_SLICE = 0.1  # a blocked local send looks at the stop flag this often


class Mirror(Bridge):
    """Follows the export published under ``key`` into the local segment ``into``: what every
    engine's mirror shares (the local segment, its layout, the source's fields); a subclass
    receives from its engine."""

    role = "mirror"

    def __init__(
        self,
        key: str,
        into: str,
        *,
        allow_layout_change: bool,
        max_bytes: int,
        mode: int,
        status: bool,
    ) -> None:
        super().__init__(into, status)
        self.key = key
        self._allow_change = allow_layout_change
        self._max_bytes = max_bytes
        self._mode = mode
        # _apply: one envelope applied at a time, and the target swapped between two; it may
        # be held across a local send that waits for local readers, so nothing the thread
        # needs to go on (status, acks) takes it. _lock: the source's fields.
        self._apply = threading.Lock()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._layout: Optional[Layout] = None
        self._layout_hash = 0
        self._epoch = 0  # the source epoch confirmed by the export
        self._target: Union[SharedMemoryManager, Stream, None] = None
        self._seq = -1  # the last source sequence committed (-1: none yet)
        self._next: Optional[int] = None  # a stream's next sequence needed (None: from base)
        self._last_applied = 0.0
        self._source: dict[str, Any] = {}

    # What users see.
    @property
    def source(self) -> dict[str, Any]:
        """Where the mirrored data comes from: ``host``, ``name`` and ``pid`` of the export,
        and of the last update committed its source ``seq``, ``timestamp_ns`` and
        ``writer_pid`` (the local segment's own timestamp and writer pid are the mirror's)."""
        with self._lock:
            return dict(self._source)

    @property
    def layout(self) -> Optional[Layout]:
        return self._layout

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Wait until the local segment exists (for a record: holding the remote's current
        record, when it has one). ``TimeoutError`` after ``timeout``; the mirror's error if it
        stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not self.running:
                self._raise_error()
                raise RuntimeError("the mirror stopped before it was ready")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"mirror of {self.key!r} not ready after {timeout} s")

    def close(self) -> None:
        """Stop following, close the engine's session and the local segment (it stays, with
        the last record or the messages not yet read); raise the error that stopped the mirror,
        if one did."""
        self._stop_thread()
        self._close_engine()
        self._release()
        self._raise_error()

    def _close_engine(self) -> None:
        raise NotImplementedError

    def _peers(self) -> list[str]:
        raise NotImplementedError

    def status_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"source": self.source}
        if self._layout is not None:
            fields["layout"] = self._layout.describe()
        fields["peers"] = self._peers()
        return fields

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            with self._apply:
                target, self._target = self._target, None
            if target is not None:
                target.close()

    def _follow(self) -> None:
        raise NotImplementedError

    def _install(self, env: LayoutEnvelope) -> bool:
        """Make the local segment for ``env``'s layout; False when the layout is refused."""
        layout = env.layout
        if layout.reserve_nbytes > self._max_bytes:
            self.counters.refuse(
                self.key,
                f"remote layout ({layout.describe()}) needs {layout.reserve_nbytes} bytes, "
                f"over the mirror's max_bytes {self._max_bytes}",
            )
            return False
        old_layout = self._layout
        if old_layout is not None and (not self._allow_change or layout.kind != old_layout.kind):
            more = (
                "a record and a stream are not each other's mirror"
                if layout.kind != old_layout.kind
                else "allow_layout_change=True, or --allow-layout-change, recreates it"
            )
            raise LayoutError(
                f"the remote layout of {self.key!r} changed from {old_layout.describe()}"
                f" to {layout.describe()}; the mirror {self.segment!r} keeps its layout for "
                f"its readers ({more})"
            )
        try:
            target = self._make(layout, replace=self._layout is not None)
        except (XshmError, ValueError, OverflowError) as e:  # a layout the core refuses
            self.counters.refuse(self.key, f"remote layout ({layout.describe()}): {e}")
            return False
        with self._apply:
            old, self._target = self._target, target
            self._layout, self._layout_hash, self._epoch = layout, env.layout_hash, env.epoch
            self._seq, self._next = -1, None
        with self._lock:
            self._source = {"host": env.host, "name": env.name, "pid": env.pid}
        if old is not None:
            old.close()
            log.warning("mirror %s: recreated for the layout %s", self.segment, layout.describe())
        return True

    def _make(self, layout: Layout, replace: bool) -> Union[SharedMemoryManager, Stream]:
        if replace:
            _unlink_quietly(self.segment)
        try:
            return _create(self.segment, layout, self._mode)
        except FileExistsError:
            pass
        existing = _open(self.segment)
        have = _layout_of(existing)
        if have == layout:
            return existing
        existing.close()
        if not self._allow_change:
            raise LayoutError(
                f"the local segment {self.segment!r} is a {have.describe() if have else 'segment'}"
                f", the remote's is a {layout.describe()} (remove it, choose another name, or "
                "allow_layout_change=True)"
            )
        _unlink_quietly(self.segment)
        return _create(self.segment, layout, self._mode)

    def _apply_record(self, env: RecordEnvelope, layout: Layout) -> None:
        self._last_applied = time.monotonic()
        if env.seq <= self._seq:
            return  # older or already committed: a mirror never goes back
        assert isinstance(self._target, SharedMemoryManager) and layout.dtype is not None
        values = np.frombuffer(env.values, dtype=layout.dtype).reshape(layout.shape)
        self._target.publish(values=values, message=str(env.message, "utf-8"), counter=env.counter)
        self._seq = env.seq
        nbytes = len(env.message) + len(env.values)
        self._committed(env.seq, env.timestamp_ns, env.writer_pid, 1, nbytes)

    def _send_items(self, s: Stream, items: list[Any], block: bool) -> tuple[int, bool]:
        """Send ``items`` into the local stream: (how many went in, whether the mirror was asked
        to stop meanwhile). Under "block" in slices that look at the stop flag; the mirror is
        its stream's one writer, so the head says how many of a slice that ran out of time went
        in."""
        if not block:
            s.send_many(items)
            return len(items), False
        sent = 0
        while sent < len(items):
            head = s.head
            try:
                s.send_many(items[sent:], timeout=SEND_SLICE)
                sent = len(items)
            except StreamFullError:
                sent += s.head - head
                if self.stopping:
                    return sent, True
        return sent, False

    def _committed(self, seq: int, ts: int, pid: int, n: int, nbytes: int) -> None:
        with self._lock:
            self._source.update(seq=seq, timestamp_ns=ts, writer_pid=pid)
        self.counters.add(messages=n, bytes=nbytes)
        self.counters.set(
            source_seq=seq,
            source_time=ts / 1e9,
            source_pid=pid,
            lag_ms=(time.time_ns() - ts) / 1e6,
        )


def _create(name: str, layout: Layout, mode: int) -> Union[SharedMemoryManager, Stream]:
    if layout.kind == "record":
        return SharedMemoryManager.create(
            name,
            shape=layout.shape,
            dtype=layout.dtype if layout.dtype is not None else "float64",
            message_capacity=layout.message_capacity,
            mode=mode,
        )
    frames = layout.dtype is not None
    return Stream.create(
        name,
        capacity=layout.capacity,
        max_bytes=None if frames else layout.max_bytes,
        dtype=layout.dtype,
        shape=layout.shape if frames else None,
        backpressure=layout.backpressure,
        mode=mode,
    )


def _open(name: str) -> Union[SharedMemoryManager, Stream]:
    if segment_kind(name) == "stream":
        return Stream.open(name)
    return SharedMemoryManager.open(name)


def _layout_of(seg: Union[SharedMemoryManager, Stream]) -> Optional[Layout]:
    if isinstance(seg, SharedMemoryManager):
        return Layout.of_record(seg.dtype, seg.shape, seg.message_capacity)
    return Layout.of_stream(seg.capacity, seg.max_bytes, seg.backpressure, seg.dtype, seg.shape)


def _unlink_quietly(name: str) -> None:
    from .._core import unlink

    with contextlib.suppress(FileNotFoundError):
        unlink(name, False)
