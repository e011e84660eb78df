"""A stream export's flow control: what its mirrors acknowledged, how far it may read, and what
it must send again.

Blocking Zenoh's own threads is not backpressure: a link whose receiving thread waits longer
than Zenoh's lease (10 s) is closed, and what was in flight is lost without a trace. So a
stream mirror never lets Zenoh wait: it acknowledges on ``<key>/@ack`` the next source sequence
it needs and how many more messages it can take (its window, which its receiving channel
always has room for), after every batch it commits and every 0.2 s. The export reads only up
to the slowest live mirror's next sequence plus the window, keeps what it sent and nobody
acknowledged yet, and sends it again to a mirror whose acknowledgements stop short of what was
sent for a second (a batch lost with a link that dropped, a mirror that came back). A mirror
silent for :data:`MIRROR_TIMEOUT` is gone and no longer holds the export back.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Optional

from ._envelope import NO_SEQ, Ack

__all__ = ["MIRROR_TIMEOUT", "RESEND_AFTER", "SETTLE", "Credit", "max_window"]

MIRROR_TIMEOUT = 3.0  # seconds without an ack after which a mirror is gone
RESEND_AFTER = 1.0  # seconds a mirror's acks may stay short of what was sent before a resend
SETTLE = 0.5  # seconds the export waits after a new mirror appears (see Credit.plan)


WINDOW_MESSAGES = 4096  # the most messages a mirror takes beyond what it committed
WINDOW_BYTES = 64 << 20  # ... and the most bytes of them (what an export keeps to resend)


def max_window(max_bytes: int) -> int:
    """The window, in messages, of a stream whose messages take up to ``max_bytes``."""
    return max(1, min(WINDOW_MESSAGES, WINDOW_BYTES // max(1, max_bytes)))


@dataclass
class _Mirror:
    next_seq: int  # NO_SEQ until it committed something
    window: int
    seen: float  # its last ack
    progress: float  # its last ack that moved next_seq, or the last resend to it
    joined: int  # the export's next sequence when it appeared: where a NO_SEQ mirror starts


class Credit:
    """The export side. :meth:`on_ack` runs on the ack receiver's thread, the rest on the
    export's; one lock between them."""

    def __init__(self, next_read: int, max_window: int) -> None:
        self.next_read = next_read  # the next source sequence the export's reader will give
        self._max_window = max_window
        self._mirrors: dict[bytes, _Mirror] = {}
        self._inflight: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._lock = threading.Lock()
        self._settle_until = 0.0
        self.acked = threading.Event()  # set by each ack: the export looks again

    def on_ack(self, ack: Ack, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            m = self._mirrors.get(ack.mirror_id)
            if m is None:
                m = _Mirror(ack.next_seq, ack.window, now, now, self.next_read)
                self._mirrors[ack.mirror_id] = m
                # Zenoh reports a new subscriber before data published to it arrives (about
                # 100 ms here): read nothing more until its route has settled.
                self._settle_until = now + SETTLE
            else:
                if ack.next_seq != m.next_seq:
                    m.progress = now
                m.next_seq, m.window = ack.next_seq, ack.window
            m.seen = now
        self.acked.set()

    def _need(self, m: _Mirror) -> int:
        return m.joined if m.next_seq == NO_SEQ else m.next_seq

    def plan(self, now: Optional[float] = None) -> tuple[int, int, list[bytes]]:
        """(live mirrors, messages the export may read now, envelopes to send again)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for k in [k for k, m in self._mirrors.items() if now - m.seen > MIRROR_TIMEOUT]:
                del self._mirrors[k]  # gone: no longer holds the export back
            live = list(self._mirrors.values())
            if not live:
                self._inflight.clear()
                return 0, 0, []
            floor = min(self._need(m) for m in live)
            while self._inflight and self._inflight[0][1] < floor:
                self._inflight.popleft()  # every live mirror has it
            resend: list[bytes] = []
            for m in live:
                need = self._need(m)
                if need < self.next_read and now - m.progress >= RESEND_AFTER:
                    resend += [env for _, last, env in self._inflight if last >= need]
                    m.progress = now
            if now < self._settle_until:
                return len(live), 0, resend
            window = min(self._max_window, *(m.window for m in live))
            return len(live), max(0, floor + window - self.next_read), resend

    def base(self, first: int) -> int:
        """The oldest sequence the export can still send, for a batch starting at ``first``:
        what a mirror lacks below it is gone for good."""
        with self._lock:
            return self._inflight[0][0] if self._inflight else first

    def sent(self, first: int, last: int, envelope: bytes) -> None:
        """A batch of sequences ``first..last`` went out."""
        with self._lock:
            self._inflight.append((first, last, envelope))
            self.next_read = last + 1

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)
