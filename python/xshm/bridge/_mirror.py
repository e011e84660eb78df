"""A mirror: a local record or stream that follows a remote export, for ordinary local readers.

The mirror's thread learns the layout (``<key>/@layout``: asked, and announced by exports,
each announcement confirmed by asking), checks it against the mirror's cap, and creates the
local segment (0600) or attaches to one a previous run left with the same layout. Data
envelopes are applied on the session's receiving thread, one at a time, straight into the
local segment: a record update is published if it is newer than the last (by source
sequence), a stream batch is sent message by message, skipping duplicates and counting gaps,
and acknowledged (``_flow``). Nothing received is trusted: an envelope that does not decode,
names another layout or epoch than the confirmed ones, or does not fit its layout is counted
in ``invalid`` and dropped with a log line. A remote layout change is refused (the mirror stops
with a :class:`~xshm.LayoutError`, its segment untouched) unless ``allow_layout_change``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Optional, Union

import numpy as np

from .._core import SharedMemoryManager, Stream, segment_kind
from ..errors import LayoutError, StreamFullError, XshmError
from ._base import Bridge, Stopped
from ._envelope import (
    NO_SEQ,
    Batch,
    EnvelopeError,
    Layout,
    LayoutEnvelope,
    RecordEnvelope,
    check_fits,
    decode,
    encode_ack,
)
from ._flow import max_window
from ._status import log
from ._zenoh import ZenohSession

__all__ = ["DEFAULT_MAX_BYTES", "Mirror"]

DEFAULT_MAX_BYTES = 1 << 30  # the most a mirror reserves for a remote layout unless told
ASK_AFTER = 1.0  # seconds without a record update after which a mirror asks @latest
ASK_TIMEOUT = 1.0
SEND_SLICE = 0.1  # a blocked local send looks at the stop flag this often
ACK_INTERVAL = 0.2  # a stream mirror acknowledges at least this often


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
        # _apply: one envelope applied at a time, and the target swapped between two; it may
        # be held across a local send that waits for local readers, so nothing the thread
        # needs to go on (status, acks) takes it. _lock: the source's fields.
        self._apply = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._layout: Optional[Layout] = None
        self._layout_hash = 0
        self._epoch = 0  # the source epoch confirmed by @layout
        self._new_epoch = 0  # a newer one confirmed, for the receiving thread to take up
        self._announced: Optional[LayoutEnvelope] = None
        self._ask = False  # data named another layout or epoch: ask @layout
        self._asked_layout = 0.0
        self._target: Union[SharedMemoryManager, Stream, None] = None
        self._seq = -1  # the last source sequence committed (-1: none yet)
        self._next: Optional[int] = None  # a stream's next sequence needed (None: from base)
        self._last_applied = 0.0
        self._source: dict[str, Any] = {}
        self._mirror_id = os.urandom(16)
        self._ack_put: Optional[Callable[[bytes], None]] = None
        self._last_ack = 0.0
        self._acked_next = 0  # the next_seq of the last ack sent
        with self.counters.lock:
            self.counters.info.update(engine="zenoh", key=key, zid=session.zid())
        try:
            session.subscribe(key + "/@layout", self._on_layout)
        except BaseException:
            self._release()  # the status record made above
            raise

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

    def status_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"source": self.source}
        if self._layout is not None:
            fields["layout"] = self._layout.describe()
        fields["peers"] = self._session.peers()
        return fields

    # The thread: layout, creation, asking @latest when quiet, acks, status.
    def _run(self) -> None:
        try:
            self._follow()
        finally:
            with self._apply:
                target, self._target = self._target, None
            if target is not None:
                target.close()

    def _follow(self) -> None:
        while True:
            first = self.retry("waiting for the remote layout", self._ask_layout)
            if self._install(first):
                break
            self.sleep(ASK_TIMEOUT)
        layout = self._layout
        assert layout is not None
        record = layout.kind == "record"
        if not record:
            self._ack_put = self._session.publisher(self.key + "/@ack", block=False)
        # Only now, the segment made: a stream's export sends once this mirror acknowledges.
        window = max_window(layout.max_bytes) if not record else 0
        self._session.subscribe(self.key, self._on_data, latest_only=record, capacity=window)
        if record:
            self._ask_latest()
        self._ready.set()
        self.set_state("running")
        while not self.stopping:
            self.publish_status()
            self._look_at_layout()
            now = time.monotonic()
            if record and now - self._last_applied >= ASK_AFTER:
                self._ask_latest()
            if not record and now - self._last_ack >= ACK_INTERVAL:
                self._send_ack()
            self._wake.wait(ACK_INTERVAL / 2)
            self._wake.clear()

    def _look_at_layout(self) -> None:
        """Act on an announcement or on data naming another layout or epoch, once the export
        confirms it (asked on @layout, at most once a second for data)."""
        announced = self._announced
        now = time.monotonic()
        if announced is not None and (announced.layout_hash, announced.epoch) != (
            self._layout_hash,
            self._epoch,
        ):
            self._announced = None
        elif self._ask and now - self._asked_layout >= ASK_AFTER:
            announced = None  # asked because of data, not of an announcement
        else:
            return
        self._ask, self._asked_layout = False, now
        asked = self._query_layout()
        if asked is None:
            return
        if announced is not None and (asked.layout_hash, asked.epoch) != (
            announced.layout_hash,
            announced.epoch,
        ):
            self.counters.refuse(self.key, "an announced layout the export does not confirm")
        if asked.layout_hash != self._layout_hash:
            self._install(asked)
        elif asked.epoch != self._epoch:
            log.info("mirror %s: a new source (epoch %016x)", self.segment, asked.epoch)
            with self._lock:
                self._source.update(host=asked.host, name=asked.name, pid=asked.pid)
            self._new_epoch = asked.epoch  # the receiving thread starts over with it

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
            self._announced = None
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

    def _maybe_ack(self, layout: Layout) -> None:
        """After a batch: acknowledge once a quarter of the window was committed since the last
        ack, or 5 ms went by (the thread acknowledges every 0.2 s anyway)."""
        since = (self._next or 0) - self._acked_next
        if since >= max_window(layout.max_bytes) // 4 or time.monotonic() - self._last_ack > 0.005:
            self._send_ack()

    def _send_ack(self) -> None:
        put, layout = self._ack_put, self._layout
        if put is None or layout is None:
            return
        nxt, epoch = self._next, self._epoch  # once: the receiving thread may move them
        next_seq = NO_SEQ if nxt is None else nxt
        if self._new_epoch:  # a new source confirmed: ask it for its messages from the start
            epoch, next_seq = self._new_epoch, NO_SEQ
        window = max_window(layout.max_bytes)
        self._last_ack, self._acked_next = time.monotonic(), nxt or 0
        with contextlib.suppress(Exception):  # the session may be closing
            put(encode_ack(self._layout_hash, epoch, next_seq, window, self._mirror_id))

    # Delivery (the session's receiving thread).
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
        if self.stopping:
            return
        try:
            env = decode(payload)
            if not isinstance(env, (RecordEnvelope, Batch)):
                raise EnvelopeError("a layout or ack envelope on the data key")
            with self._apply:
                if self._target is None or self._layout is None:
                    return  # not made yet: what comes before the layout is not mirrored
                if self._new_epoch and env.epoch == self._new_epoch:
                    self._epoch, self._new_epoch = self._new_epoch, 0
                    self._seq, self._next = -1, None
                if env.layout_hash == self._layout_hash and env.epoch != self._epoch:
                    # A new source of the same layout (recreated under its name), or a forged
                    # epoch: nothing is applied until the export confirms it on @layout (then
                    # the export sends again what was not acknowledged). Counted meanwhile.
                    self._ask = True
                    self._wake.set()
                    raise EnvelopeError(
                        f"epoch {env.epoch:016x} not (yet) confirmed by the export's @layout"
                    )
                if env.layout_hash != self._layout_hash:
                    self._ask = True  # the thread asks the export which layout is current
                    self._wake.set()
                    raise EnvelopeError(
                        f"layout {env.layout_hash:016x}, epoch {env.epoch:016x}: the mirror's "
                        f"are {self._layout_hash:016x}, {self._epoch:016x}"
                    )
                check_fits(env, self._layout)  # first: what is refused changes nothing
                if isinstance(env, RecordEnvelope):
                    self._apply_record(env, self._layout)
                else:
                    self._apply_batch(env, self._layout)
        except EnvelopeError as e:
            self.counters.refuse(self.key, str(e))
        except Stopped:
            pass

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

    def _apply_batch(self, batch: Batch, layout: Layout) -> None:
        """Commit what follows what the mirror has, in order. Below the batch's base is gone
        for good (counted lost). Under "block" a batch that does not follow on (one before it
        was lost with a link) is left for the export to send again from the mirror's ack;
        under "drop_oldest" the gap is counted and the batch committed."""
        s = self._target
        assert isinstance(s, Stream)
        block = layout.backpressure == "block"
        nxt = batch.base if self._next is None else self._next  # a fresh mirror: its base
        if batch.base > nxt:
            self.counters.add(lost=batch.base - nxt, gaps=1)
            nxt = batch.base
        self._next = nxt
        start = 0
        while start < len(batch.seqs) and batch.seqs[start] < nxt:
            start += 1
        if start:
            self.counters.add(duplicates=start)
        if start == len(batch.seqs) or (block and batch.seqs[start] > nxt):
            self._send_ack()  # had it, or a hole: say where the mirror is
            return
        items: list[Any] = batch.data[start:]
        if layout.dtype is not None:
            items = [np.frombuffer(d, layout.dtype).reshape(layout.shape) for d in items]
        sent = 0
        try:
            if not block:
                s.send_many(items)
                sent = len(items)
            else:
                # In slices that look at the stop flag; the mirror is its stream's one writer,
                # so the head says how many of a slice that ran out of time went in.
                while sent < len(items):
                    head = s.head
                    try:
                        s.send_many(items[sent:], timeout=SEND_SLICE)
                        sent = len(items)
                    except StreamFullError:
                        sent += s.head - head
                        if self.stopping:
                            raise Stopped from None
        finally:
            if sent:  # what was committed, also when stopped in the middle
                last = start + sent - 1
                seq = batch.seqs[last]
                missing = seq - nxt - (sent - 1)  # "drop_oldest": skipped by the ring or link
                if missing:
                    self.counters.add(lost=missing, gaps=1)
                self._seq, self._next = seq, seq + 1
                nbytes = sum(len(d) for d in batch.data[start : last + 1])
                self._committed(
                    seq, batch.timestamps_ns[last], batch.writer_pids[last], sent, nbytes
                )
                self._maybe_ack(layout)

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
