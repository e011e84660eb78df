"""Exports: a local record's updates, or a stream's messages, published under a key.

A record is latest-value: its export publishes each update it sees (one thread per segment,
sleeping on the record's futex), reliable but dropping under congestion, so a slow link skips
updates instead of queueing them; once the record is quiet it sends the last update again
(a dropped last update still arrives), and a mirror asks ``<key>/@latest`` when it hears
nothing. A stream's export is one of its readers: it sends every message in order, in batches
of what is there, reading no further than its mirrors acknowledged (``_flow``): under
``"block"`` a slow link or mirror so holds back (a ring later) the stream's writers, and what
a link lost is sent again; under ``"drop_oldest"`` the mirror counts what it misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
from typing import Any

import numpy as np

from .._core import SharedMemoryManager, Stream, segment_kind
from ..errors import WaitTimeoutError
from ._base import Bridge
from ._envelope import (
    NO_SEQ,
    Ack,
    EnvelopeError,
    Layout,
    decode,
    encode_batch,
    encode_layout,
    encode_record,
)
from ._flow import Credit, max_window
from ._status import Counters
from ._zenoh import ZenohSession

__all__ = [
    "RecordExport",
    "StreamExport",
    "close_source",
    "count_sent",
    "default_key",
    "open_source",
    "snapshot_envelope",
    "source_epoch",
]

QUIET_RESEND = 0.2  # seconds of quiet after which a record's last update is sent once more
POLL = 0.1  # the longest a thread sleeps before it looks at its stop flag
BATCH_BYTES = 1 << 16  # a stream batch carries about this many payload bytes at most


def source_epoch(identity: str) -> int:
    """The epoch of a source segment: BLAKE2b-64 of its creation identity, nonzero. Every export
    of one segment (a restarted one, a second one) sends the same; a segment recreated under
    the same name, another."""
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def default_key(name: str, host: str = "") -> str:
    return f"xshm/{host or socket.gethostname()}/{name.lstrip('/')}"


def snapshot_envelope(snap: Any, layout_hash: int, epoch: int) -> bytes:
    """The record envelope of one consistent snapshot."""
    values = np.ascontiguousarray(snap.values).reshape(-1).view(np.uint8)
    return encode_record(
        layout_hash,
        epoch,
        snap.seq,
        snap.timestamp_ns,
        snap.counter,
        snap.writer_pid,
        snap.message.encode("utf-8"),
        values.data,
    )


def count_sent(counters: Counters, last: Any, n: int, nbytes: int) -> None:
    """An export sent ``n`` updates or messages (``nbytes`` of envelopes), ``last`` the last."""
    counters.add(messages=n, bytes=nbytes)
    counters.set(
        source_seq=last.seq, source_time=last.timestamp_ns / 1e9, source_pid=last.writer_pid
    )


def open_source(name: str, start: str) -> tuple[Stream, Any, str]:
    """A stream export's source: the stream, its reader (attached now: "latest" is the next
    message sent after the export started) and the stream's identity (for its epoch)."""
    s = Stream.open(name)
    try:
        h = s.header()
        return s, s.reader(start=start), f"stream {h['created_ns']} {h['creator_pid']}"
    except BaseException:
        s.close()
        raise


def close_source(s: Stream, r: Any) -> None:
    """The reader first: left attached, it would hold a "block" stream's writers."""
    r.close()
    s.close()


class _Export(Bridge):
    role = "export"

    def __init__(
        self, session: ZenohSession, name: str, key: str, status: bool, identity: str
    ) -> None:
        super().__init__(name, status)
        self.key = key
        self._session = session
        self._host = socket.gethostname()
        self._epoch = source_epoch(identity)
        with self.counters.lock:
            self.counters.info.update(engine="zenoh", key=key, zid=session.zid())

    def status_fields(self) -> dict[str, Any]:
        return {"peers": self._session.peers()}

    def _announce(self, layout: Layout) -> int:
        envelope = encode_layout(layout, self._epoch, self._host, self.segment, os.getpid())
        self._session.queryable(self.key + "/@layout", lambda: envelope)
        self._session.publisher(self.key + "/@layout", block=True)(envelope)
        return layout.hash()


class RecordExport(_Export):
    """Publishes one record's updates under ``key`` (see the module's docstring)."""

    def __init__(self, session: ZenohSession, name: str, key: str, status: bool) -> None:
        self._m = SharedMemoryManager.open(name, readonly=True, errors="replace")
        try:
            identity = f"record {self._m.header()['creation_id']}"
            super().__init__(session, name, key, status, identity)
        except BaseException:
            self._m.close()
            raise

    def _release(self) -> None:
        super()._release()
        self._m.close()

    def _run(self) -> None:
        m = self._m
        layout = Layout.of_record(m.dtype, m.shape, m.message_capacity)
        layout_hash = self._announce(layout)
        latest: list[Any] = [None]
        self._session.queryable(self.key + "/@latest", lambda: latest[0])
        put = self._session.publisher(self.key, block=False, express=True)
        self.set_state("running")
        seq, last_update, resent = 0, 0.0, True
        while not self.stopping:
            self.publish_status()
            try:
                m.wait(seq, timeout=POLL)
            except WaitTimeoutError:
                if not resent and time.monotonic() - last_update >= QUIET_RESEND:
                    put(latest[0])
                    resent = True
                continue
            snap = m.read()
            envelope = snapshot_envelope(snap, layout_hash, self._epoch)
            latest[0] = envelope
            put(envelope)
            seq, last_update, resent = snap.seq, time.monotonic(), False
            count_sent(self.counters, snap, 1, len(envelope))


class StreamExport(_Export):
    """Sends every message of one stream under ``key``, as one of its readers."""

    def __init__(
        self, session: ZenohSession, name: str, key: str, status: bool, start: str
    ) -> None:
        self._s, self._r, identity = open_source(name, start)
        try:
            super().__init__(session, name, key, status, identity)
        except BaseException:
            close_source(self._s, self._r)
            raise

    def _release(self) -> None:
        super()._release()
        close_source(self._s, self._r)

    def _run(self) -> None:
        s, r = self._s, self._r
        layout = Layout.of_stream(s.capacity, s.max_bytes, s.backpressure, s.dtype, s.shape)
        layout_hash = self._announce(layout)
        block = s.backpressure == "block"
        put = self._session.publisher(self.key, block=block)
        batch = max(1, min(1024, BATCH_BYTES // (s.max_bytes + 24)))
        credit = Credit(r.cursor, max_window(s.max_bytes))

        def on_ack(payload: memoryview) -> None:
            try:
                ack = decode(payload)
                if not isinstance(ack, Ack):
                    raise EnvelopeError("not an ack envelope on @ack")
                if ack.layout_hash != layout_hash:
                    raise EnvelopeError("an ack for another layout")
                if ack.epoch != self._epoch:  # a mirror of this stream's previous incarnation:
                    ack = dataclasses.replace(ack, next_seq=NO_SEQ)  # it joins where we are
                credit.on_ack(ack)
            except EnvelopeError as e:
                self.counters.refuse(self.key + "/@ack", str(e))

        self._session.subscribe(self.key + "/@ack", on_ack)
        while not self.stopping:
            self.publish_status()
            mirrors, allowed, resend = credit.plan()
            self.counters.set(mirrors=mirrors)  # also while nothing is sent
            if block:
                for envelope in resend:  # the mirror skips what it has
                    put(envelope)
                    self.counters.add(resent=1)
            if not mirrors:
                # No mirror: read nothing (under "block" the stream's writers wait, a ring
                # later, rather than lose what no one received; under "drop_oldest" the
                # export's reader counts what it misses).
                self.set_state("waiting for a mirror")
            elif allowed <= 0:
                self.set_state("waiting for the mirrors' acks")
            if allowed <= 0:
                if credit.acked.wait(POLL):
                    credit.acked.clear()
                continue
            self.set_state("running")
            msgs = r.recv_many(min(batch, allowed), timeout=POLL)
            if not msgs:
                continue
            envelope = encode_batch(
                layout_hash,
                self._epoch,
                [(x.seq, x.timestamp_ns, x.writer_pid, x.data) for x in msgs],
                base=credit.base(msgs[0].seq),
            )
            put(envelope)
            last = msgs[-1]
            credit.sent(msgs[0].seq, last.seq, envelope)
            count_sent(self.counters, last, len(msgs), len(envelope))
            self.counters.set(lost=r.lost, backlog=r.lag)


def make_export(session: ZenohSession, name: str, key: str, status: bool, start: str) -> _Export:
    """The export that fits the segment ``name`` (a record or a stream)."""
    if segment_kind(name) == "stream":
        return StreamExport(session, name, key, status, start)
    return RecordExport(session, name, key, status)
