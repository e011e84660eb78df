"""A mirror: a local record or stream that follows a remote export, for ordinary local readers.

The mirror's thread learns the layout (``<key>/@layout``: asked, and announced by exports),
checks it against the mirror's cap, and creates the local segment (0600) or attaches to one a
previous run left with the same layout. Data envelopes are applied on Zenoh's delivery thread,
under one lock, straight into the local segment: a record update is published if it is newer
than the last (by source sequence; a new source epoch starts over), a stream batch is sent
message by message, skipping duplicates and counting gaps. Nothing received is trusted: an
envelope that does not decode, names another layout or does not fit its layout is counted in
``invalid`` and dropped with a log line. A remote layout change is refused (the mirror stops
with a :class:`~xshm.LayoutError`, its segment untouched) unless ``allow_layout_change``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .._core import SharedMemoryManager, Stream, segment_kind
from ..errors import LayoutError, StreamFullError
from ._base import Bridge, Stopped
from ._envelope import (
    Batch,
    EnvelopeError,
    Layout,
    LayoutEnvelope,
    RecordEnvelope,
    check_fits,
    decode,
)
from ._status import log
from ._zenoh import ZenohSession

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["DEFAULT_MAX_BYTES", "Mirror"]

DEFAULT_MAX_BYTES = 1 << 30  # the most a mirror reserves for a remote layout unless told
ASK_AFTER = 1.0  # seconds without a record update after which a mirror asks @latest
ASK_TIMEOUT = 1.0
SEND_SLICE = 0.1  # a blocked local send looks at the stop flag this often


class Mirror(Bridge):
    """Follows the export published under ``key`` into the local segment ``into``."""

    role = "mirror"

    def __init__(
        self,
        session: ZenohSession,
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
        self._session = session
        self._allow_change = allow_layout_change
        self._max_bytes = max_bytes
        self._mode = mode
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._layout: Optional[Layout] = None
        self._layout_hash = 0
        self._announced: Optional[LayoutEnvelope] = None
        self._unknown_hash = 0  # a layout hash data named that is not the mirror's
        self._asked_layout = 0.0
        self._target: Union[SharedMemoryManager, Stream, None] = None
        self._epoch = 0
        self._seq = -1  # the last source sequence committed (-1: none yet)
        self._last_applied = 0.0
        self._source: dict[str, Any] = {}
        with self.counters.lock:
            self.counters.info.update(engine="zenoh", key=key, zid=session.zid())
        session.subscribe(key + "/@layout", self._on_layout)

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
        """Stop following, close the Zenoh session and the local segment (it stays, with the
        last record or the messages not yet read); raise the error that stopped the mirror,
        if one did."""
        self._stop_thread()
        self._session.close()
        self._release()
        self._raise_error()

    def __enter__(self) -> Self:
        return self

    def status_fields(self) -> dict[str, Any]:
        with self._lock:
            fields: dict[str, Any] = {"source": dict(self._source)}
        if self._layout is not None:
            fields["layout"] = self._layout.describe()
        fields["peers"] = self._session.peers()
        return fields

    # The thread: layout, creation, asking @latest when quiet, status.
    def _run(self) -> None:
        try:
            self._follow()
        finally:
            with self._lock:
                target, self._target = self._target, None
            if target is not None:
                target.close()

    def _follow(self) -> None:
        while True:
            first = self.retry("waiting for the remote layout", self._ask_layout)
            if self._install(first):
                break
            self.sleep(ASK_TIMEOUT)
        # Only now: a stream's export sends nothing until a mirror's subscriber matches.
        assert self._layout is not None
        self._session.subscribe(self.key, self._on_data, self._layout.kind == "record")
        if self._layout is not None and self._layout.kind == "record":
            self._ask_latest()
        self._ready.set()
        self.set_state("running")
        while not self.stopping:
            self.counters.set(peers=len(self._session.peers()))
            self.publish_status()
            announced = self._announced
            if announced is not None and announced.layout_hash != self._layout_hash:
                self._install(announced)
            elif self._unknown_hash and time.monotonic() - self._asked_layout >= ASK_AFTER:
                # Data names a layout the mirror has not seen announced (the announcement can
                # be missed while a restarted export is reconnecting): ask, once a second.
                self._unknown_hash, self._asked_layout = 0, time.monotonic()
                asked = self._query_layout()
                if asked is not None and asked.layout_hash != self._layout_hash:
                    self._install(asked)
            kind = self._layout.kind if self._layout is not None else ""
            if kind == "record" and time.monotonic() - self._last_applied >= ASK_AFTER:
                self._ask_latest()
            self._wake.wait(0.1)
            self._wake.clear()

    def _ask_layout(self) -> Optional[LayoutEnvelope]:
        if self._announced is not None:
            return self._announced
        return self._query_layout()

    def _query_layout(self) -> Optional[LayoutEnvelope]:
        payload = self._session.get(self.key + "/@layout", ASK_TIMEOUT)
        if payload is None:
            return None
        try:
            env = decode(payload)
        except EnvelopeError as e:
            self.counters.refuse(self.key, str(e))
            return None
        if not isinstance(env, LayoutEnvelope):
            self.counters.refuse(self.key, "the answer on @layout is not a layout envelope")
            return None
        return env

    def _ask_latest(self) -> None:
        self._last_applied = time.monotonic()  # ask again only after another quiet second
        payload = self._session.get(self.key + "/@latest", ASK_TIMEOUT)
        if payload is not None:
            self._on_data(memoryview(payload))

    def _install(self, env: LayoutEnvelope) -> bool:
        """Make the local segment for ``env``'s layout; False when the layout is refused."""
        layout = env.layout
        if layout.reserve_nbytes > self._max_bytes:
            self._announced = None  # counted once; the next announcement is looked at again
            self.counters.refuse(
                self.key,
                f"remote layout ({layout.describe()}) needs {layout.reserve_nbytes} bytes, "
                f"over the mirror's max_bytes {self._max_bytes}",
            )
            return False
        if self._layout is not None and not self._allow_change:
            raise LayoutError(
                f"the remote layout of {self.key!r} changed from {self._layout.describe()} to "
                f"{layout.describe()}; the mirror {self.segment!r} keeps its layout for its "
                "readers (allow_layout_change=True, or --allow-layout-change, recreates it)"
            )
        target = self._make(layout, replace=self._layout is not None)
        with self._lock:
            old, self._target = self._target, target
            self._layout, self._layout_hash = layout, env.layout_hash
            self._epoch, self._seq = 0, -1
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

    # Delivery (Zenoh's thread).
    def _on_layout(self, payload: memoryview) -> None:
        try:
            env = decode(payload)
        except EnvelopeError as e:
            self.counters.refuse(self.key, str(e))
            return
        if not isinstance(env, LayoutEnvelope):
            self.counters.refuse(self.key, "the envelope on @layout is not a layout envelope")
            return
        self._announced = env
        self._wake.set()

    def _on_data(self, payload: memoryview) -> None:
        try:
            env = decode(payload)
            with self._lock:
                if self._target is None:
                    return  # not made yet: what comes before the layout is not mirrored
                if isinstance(env, LayoutEnvelope):
                    raise EnvelopeError("a layout envelope on the data key")
                if env.layout_hash != self._layout_hash:
                    self._unknown_hash = env.layout_hash  # the thread asks for it
                    self._wake.set()
                    raise EnvelopeError(
                        f"layout hash {env.layout_hash:016x} is not the mirror's "
                        f"{self._layout_hash:016x}"
                    )
                assert self._layout is not None
                check_fits(env, self._layout)  # first: what is refused changes nothing
                if isinstance(env, RecordEnvelope):
                    self._apply_record(env, self._layout)
                else:
                    self._apply_batch(env, self._layout)
        except EnvelopeError as e:
            self.counters.refuse(self.key, str(e))
        except Stopped:
            pass

    def _new_epoch(self, epoch: int) -> None:
        if self._epoch != 0:
            log.info("mirror %s: a new source (epoch %016x)", self.segment, epoch)
        self._epoch, self._seq = epoch, -1

    def _apply_record(self, env: RecordEnvelope, layout: Layout) -> None:
        if env.epoch != self._epoch:
            self._new_epoch(env.epoch)
        elif env.seq <= self._seq:
            return  # older or already committed: a mirror never goes back
        assert isinstance(self._target, SharedMemoryManager) and layout.dtype is not None
        values = np.frombuffer(env.values, dtype=layout.dtype).reshape(layout.shape)
        self._target.publish(values=values, message=str(env.message, "utf-8"), counter=env.counter)
        self._seq = env.seq
        self._last_applied = time.monotonic()
        nbytes = len(env.message) + len(env.values)
        self._committed(env.seq, env.timestamp_ns, env.writer_pid, 1, nbytes)

    def _apply_batch(self, batch: Batch, layout: Layout) -> None:
        if batch.epoch != self._epoch:
            self._new_epoch(batch.epoch)
        s = self._target
        assert isinstance(s, Stream)
        start = 0
        while start < len(batch.seqs) and batch.seqs[start] <= self._seq:
            start += 1
        if start:
            self.counters.add(duplicates=start)
        if start == len(batch.seqs):
            return
        first = batch.seqs[start]
        lost = (first - self._seq - 1 if self._seq >= 0 else 0) + (
            batch.seqs[-1] - first - (len(batch.seqs) - start - 1)
        )
        items: list[Any] = batch.data[start:]
        if layout.dtype is not None:
            items = [np.frombuffer(d, layout.dtype).reshape(layout.shape) for d in items]
        if layout.backpressure == "drop_oldest":
            s.send_many(items)
        else:
            for d in items:
                while True:
                    try:
                        s.send(d, timeout=SEND_SLICE)
                        break
                    except StreamFullError:
                        if self.stopping:
                            raise Stopped from None
        if lost:
            self.counters.add(lost=lost, gaps=1)
        self._seq = batch.seqs[-1]
        n = len(batch.seqs) - start
        nbytes = sum(len(d) for d in batch.data[start:])
        self._committed(batch.seqs[-1], batch.timestamps_ns[-1], batch.writer_pids[-1], n, nbytes)

    def _committed(self, seq: int, ts: int, pid: int, n: int, nbytes: int) -> None:
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
