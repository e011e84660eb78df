"""The Zenoh mirror: learns the layout on ``<key>/@layout`` (asked, and announced by exports,
each announcement confirmed by asking), then applies data envelopes on the session's receiving
thread, one at a time, straight into the local segment: a record's newest update; a stream's
batches, skipping duplicates, counting gaps, and acknowledged on ``<key>/@ack`` (``_flow``).
A record mirror that hears nothing for a second asks ``<key>/@latest``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from .._core import Stream
from ._base import Stopped
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
from ._mirror import Mirror
from ._status import log
from ._zenoh import ZenohSession

__all__ = ["ZenohMirror"]

ASK_AFTER = 1.0  # seconds without a record update after which a mirror asks @latest
ASK_TIMEOUT = 1.0
ACK_INTERVAL = 0.2  # a stream mirror acknowledges at least this often


class ZenohMirror(Mirror):
    """Follows the export published under ``key`` over a Zenoh session."""

    def __init__(self, session: ZenohSession, key: str, into: str, **kw: Any) -> None:
        super().__init__(key, into, **kw)
        self._session = session
        self._wake = threading.Event()
        self._new_epoch = 0  # a newer epoch confirmed, for the receiving thread to take up
        self._announced: Optional[LayoutEnvelope] = None
        self._ask = False  # data named another layout or epoch: ask @layout
        self._asked_layout = 0.0
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

    def _close_engine(self) -> None:
        self._session.close()

    def _peers(self) -> list[str]:
        return self._session.peers()

    def _install(self, env: LayoutEnvelope) -> bool:
        ok = super()._install(env)
        if not ok:
            self._announced = None  # counted once; the next announcement is looked at again
        return ok

    # The thread: layout, creation, asking @latest when quiet, acks, status.
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
        sent, stopped = self._send_items(s, items, block)
        if sent:  # what was committed, also when stopped in the middle
            last = start + sent - 1
            seq = batch.seqs[last]
            missing = seq - nxt - (sent - 1)  # "drop_oldest": skipped by the ring or link
            if missing:
                self.counters.add(lost=missing, gaps=1)
            self._seq, self._next = seq, seq + 1
            nbytes = sum(len(d) for d in batch.data[start : last + 1])
            self._committed(seq, batch.timestamps_ns[last], batch.writer_pids[last], sent, nbytes)
            self._maybe_ack(layout)
        if stopped:
            raise Stopped
