"""Exports and mirrors over Redis Streams (``_redis`` for the keys and the client).

A record's export adds each update it sees to the record's Redis stream (trimmed to a few
entries: latest value; a slow broker makes the export skip updates, never queue them); a
mirror started late reads the last entry, then follows with ``XREAD``.

A stream's export is one of the stream's readers and adds every message, in order, one entry
each, pipelined. Each mirror is a consumer group: it reads with ``XREADGROUP``, commits into
the local stream, and only then acknowledges (``XACK``) and records its place (source epoch,
next source sequence, local stream head) in ``K/@mirrors``, in one transaction. So a mirror
restarted after a crash knows how many of the entries Redis delivers again it had committed
(its stream's head went past the place it recorded by exactly that many: it is the stream's
only writer) and drops those, and any message it already has by source sequence. An export
(re)connecting reads the newest entry Redis holds of its source and sends only what follows.
Under ``"block"`` the export trims only what every group consumed and reads no further while
``max_entries`` remain unconsumed (so the stream's writers wait, a ring later); under
``"drop_oldest"`` Redis trims the oldest entries and mirrors count the gap.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Optional

import numpy as np

from .._core import SharedMemoryManager, Stream, segment_kind
from ..errors import WaitTimeoutError
from ._base import Bridge, Stopped
from ._envelope import (
    Batch,
    EnvelopeError,
    Layout,
    LayoutEnvelope,
    RecordEnvelope,
    check_fits,
    decode,
    decode_one,
    encode_layout,
    encode_one,
)
from ._export import close_source, count_sent, open_source, snapshot_envelope, source_epoch
from ._flow import max_window
from ._mirror import Mirror
from ._redis import RedisLink, RedisOptions
from ._status import log

__all__ = ["RedisMirror", "make_redis_export"]

FIELD = b"e"  # an entry's one field: the envelope
RECORD_KEEP = 16  # a record's Redis stream keeps about this many entries (approximate trim)
POLL = 0.1  # the longest a thread waits before it looks at its stop flag
RECONNECT = 0.5  # seconds between attempts to reach the broker
ROOM_EVERY = 0.1  # seconds between a "block" export's looks at its mirrors' groups
CONFIRM_EVERY = 1.0  # seconds before a refused remote layout is looked at again
CONSUMER = "mirror"  # a mirror's one consumer in its group
BATCH = 512  # the most stream messages one pipeline carries


class _Relayout(Exception):
    """The mirror took up a new remote layout: it starts following again."""


def data_key(key: str) -> str:
    """The Redis stream of the export under ``key``: ``{key}``, a hash tag, so that a Redis
    Cluster puts it and the two keys below in one slot (one node; a MULTI may span them)."""
    return "{" + key + "}"


def layout_key(key: str) -> str:
    return data_key(key) + "/@layout"


def mirrors_key(key: str) -> str:
    return data_key(key) + "/@mirrors"


def _next_id(entry_id: bytes) -> str:
    """The smallest stream ID after ``entry_id`` (``ms-seq``)."""
    ms, _, seq = entry_id.decode().partition("-")
    return f"{ms}-{int(seq) + 1}"


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq)


def _linked(options: RedisOptions) -> RedisLink:
    """A client that reached the broker, or one that will: refused credentials or certificates
    stop here (PermissionError); an absent broker is waited for by the bridge."""
    link = RedisLink(options)
    try:
        link.check()
    except BaseException:
        link.close()
        raise
    return link


def _wait_out(bridge: Bridge, link: RedisLink, e: BaseException) -> None:
    """The broker went away or answered with something that passes (``RedisLink.waits_out``):
    say so in the state and the status's error, then let the bridge try again."""
    link.connected = False
    text = repr(str(e))[1:-1][:300]  # a pipeline's error names its command, envelope and all
    log.warning("%s %s: %s: trying again", bridge.role, bridge.segment, text)
    bridge.set_state(f"broker unreachable: {text}")
    with bridge.counters.lock:
        bridge.counters.error = f"{type(e).__name__}: {text}"
    bridge.publish_status()
    bridge.sleep(RECONNECT)


def _reach(bridge: Bridge, link: RedisLink) -> Optional[bool]:
    """True once the broker answers (for :meth:`Bridge.retry`). Once running, a refusal (a
    password changed, a certificate renewed on the broker) is waited out like an absent broker,
    the reason in the status's ``error``: the operator can fix it without restarting us."""
    try:
        if link.check():
            with bridge.counters.lock:
                bridge.counters.error = None
            return True
        error = link.last_error
    except PermissionError as e:
        error = str(e)
    with bridge.counters.lock:
        bridge.counters.error = error
    return None


class _Linked(Bridge):
    """A bridge over one Redis client: :meth:`_session` runs while the broker answers; when
    it stops answering the bridge says so in its state and reconnects."""

    def __init__(self, segment: str, status: bool, key: str, options: RedisOptions) -> None:
        super().__init__(segment, status)
        self.key = key
        self._stream = data_key(key)
        try:
            self._link = _linked(options)
        except BaseException:
            Bridge._release(self)  # the status record
            raise
        with self.counters.lock:
            self.counters.info.update(engine="redis", key=key, url=self._link.url)

    def _connected_run(self) -> None:
        while not self.stopping:
            self.retry("waiting for the broker", lambda: _reach(self, self._link), RECONNECT)
            try:
                self._session()
            except self._link.errors as e:
                if not self._link.waits_out(e):
                    raise
                _wait_out(self, self._link, e)

    def _session(self) -> None:
        raise NotImplementedError

    def status_fields(self) -> dict[str, Any]:
        return {"peers": self._link.peers()}


class _RedisExport(_Linked):
    role = "export"

    def __init__(
        self, name: str, key: str, options: RedisOptions, status: bool, identity: str
    ) -> None:
        super().__init__(name, status, key, options)
        self._options = options
        self._host = socket.gethostname()
        self._epoch = source_epoch(identity)

    def _run(self) -> None:
        self._connected_run()

    def _put_layout(self, layout: Layout) -> int:
        envelope = encode_layout(layout, self._epoch, self._host, self.segment, os.getpid())
        self._link.client.set(layout_key(self.key), envelope)
        return layout.hash()


class RedisRecordExport(_RedisExport):
    """Adds one record's updates to ``key`` (see the module's docstring)."""

    def __init__(self, name: str, key: str, options: RedisOptions, status: bool) -> None:
        self._m = SharedMemoryManager.open(name, readonly=True, errors="replace")
        try:
            super().__init__(
                name, key, options, status, f"record {self._m.header()['creation_id']}"
            )
        except BaseException:
            self._m.close()
            raise

    def _release(self) -> None:
        super()._release()
        self._link.close()
        self._m.close()

    def _session(self) -> None:
        m, client = self._m, self._link.client
        layout = Layout.of_record(m.dtype, m.shape, m.message_capacity)
        layout_hash = self._put_layout(layout)
        self.set_state("running")
        seq = -1  # (re)connected: the current record goes out at once
        while not self.stopping:
            self.publish_status()
            if seq >= 0:
                try:
                    m.wait(seq, timeout=POLL)
                except WaitTimeoutError:
                    continue
            snap = m.read()
            if snap.seq == 0:  # never written
                seq = 0
                continue
            envelope = snapshot_envelope(snap, layout_hash, self._epoch)
            client.xadd(self._stream, {FIELD: envelope}, maxlen=RECORD_KEEP, approximate=True)
            seq = snap.seq
            count_sent(self.counters, snap, 1, len(envelope))


class RedisStreamExport(_RedisExport):
    """Adds every message of one stream to ``key``, as one of its readers."""

    def __init__(
        self, name: str, key: str, options: RedisOptions, status: bool, start: str
    ) -> None:
        self._s, self._r, identity = open_source(name, start)
        try:
            super().__init__(name, key, options, status, identity)
        except BaseException:
            close_source(self._s, self._r)
            raise
        self._unsent: list[Any] = []  # read, and not known to be in Redis
        self._room = 0
        self._room_at = 0.0

    def _release(self) -> None:
        super()._release()
        self._link.close()
        close_source(self._s, self._r)

    def _held(self, layout_hash: int) -> int:
        """The newest source sequence of this source that Redis holds (-1: none), looking past
        up to 64 newer entries of others (the export never trims its newest entry)."""
        for _, fields in self._link.client.xrevrange(self._stream, count=64):
            try:
                env = decode((fields or {}).get(FIELD, b""))
            except EnvelopeError:
                continue
            if isinstance(env, Batch) and (env.layout_hash, env.epoch) == (
                layout_hash,
                self._epoch,
            ):
                return env.seqs[-1]
        return -1

    def _look_at_groups(self, block: bool) -> None:
        """Count the mirrors' groups; under "block" trim what every group consumed and work out
        how many more entries the export may add."""
        client = self._link.client
        try:
            groups = client.xinfo_groups(self._stream)
        except self._link.redis.ResponseError as e:
            if "no such key" not in str(e):
                raise
            groups = []
        self.counters.set(mirrors=len(groups))
        if not block:
            return
        needed: Optional[tuple[int, int]] = None
        needed_id = ""
        for g in groups:
            # The oldest entry the group still needs: its oldest unacknowledged, or the one
            # after the last delivered (the summary's min is None when all were just acked).
            oldest = None
            if g["pending"]:
                try:
                    oldest = client.xpending(self._stream, g["name"])["min"]
                except self._link.redis.ResponseError as e:
                    if not self._link.no_group(e):
                        raise
                    continue  # destroyed meanwhile: it needs nothing
            if oldest is not None:
                first = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
            else:
                first = _next_id(g["last-delivered-id"])
            k = _id_key(first.encode())
            if needed is None or k < needed:
                needed, needed_id = k, first
        newest = client.xrevrange(self._stream, count=1)
        if needed is not None and newest:
            # Never the newest entry: a restarted export reads there what Redis has of it.
            if _id_key(newest[0][0]) < needed:
                needed_id = newest[0][0].decode()
            client.xtrim(self._stream, minid=needed_id, approximate=False)
        self._room = max(0, self._options.max_entries - client.xlen(self._stream))
        self._room_at = time.monotonic()

    def _session(self) -> None:
        s, r, client = self._s, self._r, self._link.client
        layout = Layout.of_stream(s.capacity, s.max_bytes, s.backpressure, s.dtype, s.shape)
        layout_hash = self._put_layout(layout)
        block = s.backpressure == "block"
        held = self._held(layout_hash)  # a restarted export, a reconnection: what Redis has
        # XADD key [MAXLEN ~ n] * e envelope, straight to the pipeline
        head: tuple[Any, ...] = ("XADD", self._stream)
        if not block:
            head += ("MAXLEN", "~", self._options.max_entries)
        head += ("*", FIELD)
        batch = max(1, min(BATCH, max_window(s.max_bytes)))
        self._room_at = 0.0
        self.set_state("running")
        while not self.stopping:
            self.publish_status()
            if time.monotonic() - self._room_at >= ROOM_EVERY:
                self._look_at_groups(block)
            if block and self._room <= 0:
                self.set_state("waiting for the mirrors' groups")
                self.sleep(ROOM_EVERY)
                continue
            self.set_state("running")
            msgs = self._unsent or r.recv_many(
                min(batch, self._room) if block else batch, timeout=POLL
            )
            if msgs and msgs[0].seq <= held:
                msgs = [x for x in msgs if x.seq > held]
            if not msgs:
                self._unsent = []
                continue
            self._unsent = msgs
            # A cluster's plain pipeline sends a command again when its reply is lost: in one
            # MULTI (one slot) the batch is all or nothing, and _held knows which.
            pipe = client.pipeline(transaction=self._options.cluster)
            nbytes = 0
            for x in msgs:
                envelope = encode_one(
                    layout_hash, self._epoch, x.seq, x.timestamp_ns, x.writer_pid, x.data
                )
                nbytes += len(envelope)
                pipe.execute_command(*head, envelope)
            pipe.execute()
            self._unsent = []
            last = msgs[-1]
            held = last.seq
            self._room -= len(msgs)
            count_sent(self.counters, last, len(msgs), nbytes)
            self.counters.set(lost=r.lost, backlog=r.lag)


def make_redis_export(
    name: str, key: str, options: RedisOptions, status: bool, start: str
) -> Bridge:
    """The export that fits the segment ``name`` (a record or a stream)."""
    if segment_kind(name) == "stream":
        return RedisStreamExport(name, key, options, status, start)
    return RedisRecordExport(name, key, options, status)


class _NewSource(Exception):
    """A stream entry of a source the export's layout key confirms as new (the same layout, a
    new epoch): the mirror finishes with the old one, then starts over with it."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"a new source, epoch {epoch:016x}")
        self.epoch = epoch


class RedisMirror(Mirror):
    """Follows the export under ``key`` through a Redis server (see the module's docstring)."""

    def __init__(self, options: RedisOptions, key: str, into: str, **kw: Any) -> None:
        super().__init__(key, into, **kw)
        self._stream = data_key(key)
        self.group = options.group or f"xshm-mirror/{socket.gethostname()}/{into.lstrip('/')}"
        try:
            self._link = _linked(options)
        except BaseException:
            self._release()
            raise
        # The source sequence the recorded place maps to the local stream's head now (the
        # "line": seq = anchor_seq + head - anchor_head while commits follow on); None: no line.
        self._line: Optional[int] = None
        with self.counters.lock:
            self.counters.info.update(engine="redis", key=key, url=self._link.url, group=self.group)

    def _close_engine(self) -> None:
        self._link.close()

    def _peers(self) -> list[str]:
        return self._link.peers()

    # The thread.
    def _follow(self) -> None:
        while not self.stopping:
            self.retry("waiting for the broker", lambda: _reach(self, self._link), RECONNECT)
            try:
                while self._layout is None:
                    env = self.retry("waiting for the remote layout", self._get_layout)
                    if not self._install(env):
                        self.sleep(CONFIRM_EVERY)
                if self._layout.kind == "record":
                    self._follow_record()
                else:
                    self._follow_stream()
            except _Relayout:
                continue
            except self._link.errors as e:
                if self._link.no_group(e):  # destroyed, or its stream deleted: made again
                    log.warning("mirror %s: %s: following again", self.segment, e)
                    self.sleep(POLL)
                    continue
                if not self._link.waits_out(e):
                    raise
                _wait_out(self, self._link, e)

    def _get_layout(self) -> Optional[LayoutEnvelope]:
        payload = self._link.client.get(layout_key(self.key))
        if payload is None:
            return None
        try:
            env = decode(payload)
        except EnvelopeError as e:
            self.counters.refuse(layout_key(self.key), str(e))
            return None
        if not isinstance(env, LayoutEnvelope):
            self.counters.refuse(layout_key(self.key), "not a layout envelope")
            return None
        return env

    def _source_of(self, env: Any, stream: bool) -> None:
        """Check that ``env`` comes from the confirmed source. Data naming another layout or
        epoch is looked up in ``{K}/@layout`` (one GET each: Redis keeps the entry, so nothing
        is refused for want of asking): a new layout is installed (:class:`_Relayout`, or
        ``LayoutError`` unless allowed), a new epoch taken up (a record's at once; a
        stream's by :class:`_NewSource`). :class:`EnvelopeError` if the key does not confirm."""
        if (env.layout_hash, env.epoch) == (self._layout_hash, self._epoch):
            return
        current = self._get_layout()
        if current is None or (current.layout_hash, current.epoch) != (env.layout_hash, env.epoch):
            raise EnvelopeError(
                f"layout {env.layout_hash:016x}, epoch {env.epoch:016x}: not the source that "
                "the export's layout key names"
            )
        if current.layout_hash != self._layout_hash:
            if not self._install(current):  # refused and counted; LayoutError stops the mirror
                raise EnvelopeError("a remote layout the mirror cannot make")
            raise _Relayout
        log.info("mirror %s: a new source (epoch %016x)", self.segment, current.epoch)
        with self._lock:
            self._source.update(host=current.host, name=current.name, pid=current.pid)
        if stream:
            raise _NewSource(current.epoch)
        with self._apply:
            self._epoch, self._seq = current.epoch, -1

    def _follow_record(self) -> None:
        client = self._link.client
        last_id: Any = b"0-0"
        for entry_id, fields in client.xrevrange(self._stream, count=1):
            last_id = entry_id
            self._apply_record_entry(fields)
        self._ready.set()
        self.set_state("running")
        while not self.stopping:
            self.publish_status()
            reply = client.xread({self._stream: last_id}, count=64, block=int(POLL * 1000))
            if not reply:
                continue
            entries = reply[0][1]
            last_id = entries[-1][0]
            for _, fields in reversed(entries):  # the newest that applies: latest value
                if self._apply_record_entry(fields):
                    break

    def _apply_record_entry(self, fields: Optional[dict[bytes, bytes]]) -> bool:
        try:
            env = decode((fields or {}).get(FIELD, b""))
            if not isinstance(env, RecordEnvelope):
                raise EnvelopeError("not a record envelope in a record's stream")
            self._source_of(env, stream=False)
            layout = self._layout
            assert layout is not None
            check_fits(env, layout)
            with self._apply:
                self._apply_record(env, layout)
            return True
        except EnvelopeError as e:
            self.counters.refuse(self.key, str(e))
            return False

    # A stream: the group, the place, the redelivery, then new entries.
    def _follow_stream(self) -> None:
        client, group = self._link.client, self.group
        try:
            client.xgroup_create(self._stream, group, id="0", mkstream=True)
        except self._link.redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        s = self._target
        assert isinstance(s, Stream) and self._layout is not None
        self._take_place(client.hget(mirrors_key(self.key), group), s.head)
        self._ready.set()
        self.set_state("running")
        count = max(1, min(BATCH, max_window(self._layout.max_bytes)))
        read_from: Any = b"0"  # first what was delivered and not acknowledged
        while not self.stopping:
            self.publish_status()
            pending = read_from != ">"
            reply = client.xreadgroup(
                group,
                CONSUMER,
                {self._stream: read_from},
                count=count,
                block=None if pending else int(POLL * 1000),
            )
            entries = reply[0][1] if reply else []
            if pending:
                if not entries:
                    read_from = ">"
                    continue
                read_from = entries[-1][0]
            if entries:
                try:
                    self._commit(entries)
                except _NewSource as new:
                    self._start_source(new.epoch, s.head)
                    raise _Relayout from None  # follow again: the rest is redelivered

    def _take_place(self, place: Optional[bytes], head: int) -> None:
        """Where this group left off: ``"<epoch> <seq> <head>"``, the source sequence of the
        message the local stream's head ``head`` was to hold (``-``: none committed yet). The
        mirror anchors that line before it commits what does not follow on it, and commits
        follow on it otherwise, so the local head now says the next sequence needed, whatever
        Redis delivers again (a group made again, a broker that lost its last writes): what
        is below it is dropped as a duplicate. A place of an older epoch than the layout key's
        is followed first (the backlog that source left) until an entry of the new one."""
        try:
            epoch_hex, anchor, at = (place or b"").decode().split()
            epoch, anchor_head = int(epoch_hex, 16), int(at)
            anchor_seq = None if anchor == "-" else int(anchor)
        except ValueError:
            if place:
                self.counters.refuse(mirrors_key(self.key), f"an unreadable place {place!r}")
            self._start_source(self._epoch, head)
            return
        if anchor_seq is None:
            if epoch != self._epoch:  # nothing committed of that source: the current one
                self._start_source(self._epoch, head)
                return
            self._next = self._line = None
            return
        nxt = anchor_seq + max(0, head - anchor_head)
        with self._apply:
            self._epoch, self._next, self._line = epoch, nxt, nxt
        if head < anchor_head:  # a local stream made since (removed, or a new layout)
            self._anchor(nxt, head)

    def _anchor(self, seq: int, head: int) -> None:
        """Record that the message about to be committed at local ``head`` is ``seq``."""
        self._link.client.hset(
            mirrors_key(self.key), self.group, f"{self._epoch:016x} {seq} {head}"
        )
        self._line = seq

    def _start_source(self, epoch: int, head: int) -> None:
        """Follow ``epoch`` from its first message: nothing of it committed yet."""
        self._link.client.hset(mirrors_key(self.key), self.group, f"{epoch:016x} - {head}")
        with self._apply:
            self._epoch, self._seq, self._next, self._line = epoch, -1, None, None

    def _messages(self, fields: Optional[dict[bytes, bytes]], layout: Layout) -> Any:
        """The ``(seq, timestamp_ns, writer_pid, data)`` of one entry, checked;
        :class:`EnvelopeError` for anything that is not the confirmed source's batch."""
        payload = (fields or {}).get(FIELD, b"")
        one = decode_one(payload)  # the export's one message per entry, checked
        if one is not None and (one[0], one[1]) == (self._layout_hash, self._epoch):
            n = len(one[5])
            frame = layout.values_nbytes if layout.dtype is not None else None
            if n > layout.max_bytes or (frame is not None and n != frame):
                raise EnvelopeError(f"stream message {one[2]} has {n} bytes")
            return (one[2:],)
        env = decode(payload)  # anything else: decoded and checked in full
        if not isinstance(env, Batch):
            raise EnvelopeError("not a batch envelope in a stream's Redis stream")
        self._source_of(env, stream=True)
        check_fits(env, layout)
        return zip(env.seqs, env.timestamps_ns, env.writer_pids, env.data)

    def _commit(self, entries: list[tuple[bytes, Optional[dict[bytes, bytes]]]]) -> None:
        """Commit the messages of ``entries`` that follow what the mirror has, then acknowledge
        the entries and record the place, in one transaction. An entry of a new source ends
        the batch there (:class:`_NewSource`, after the entries before it are done)."""
        layout, s = self._layout, self._target
        assert layout is not None and isinstance(s, Stream)
        items: list[Any] = []
        origin: list[int] = []  # the entry each item came from
        meta: list[tuple[int, int, int, int]] = []
        new_source: Optional[_NewSource] = None
        done = len(entries)
        for i, (_, fields) in enumerate(entries):
            if fields is None:  # delivered once, trimmed since (drop_oldest's MAXLEN)
                continue
            try:
                messages = self._messages(fields, layout)
            except EnvelopeError as e:
                self.counters.refuse(self.key, str(e))
                continue
            except _NewSource as new:
                new_source, done = new, i
                break
            for seq, ts, pid, data in messages:
                if self._next is not None and seq < self._next:
                    self.counters.add(duplicates=1)
                    continue
                if self._next is not None and seq > self._next:
                    self.counters.add(lost=seq - self._next, gaps=1)
                self._next = seq + 1
                item: Any = data
                if layout.dtype is not None:
                    item = np.frombuffer(data, layout.dtype).reshape(layout.shape)
                items.append(item)
                origin.append(i)
                meta.append((seq, ts, pid, len(data)))
        block = layout.backpressure == "block"
        sent, stopped, k = 0, False, 0
        while k < len(items) and not stopped:  # one run of consecutive sequences at a time
            end = k + 1
            while end < len(items) and meta[end][0] == meta[end - 1][0] + 1:
                end += 1
            if self._line != meta[k][0]:  # not on the recorded line: anchor it first
                self._anchor(meta[k][0], s.head)
            n, stopped = self._send_items(s, items[k:end], block)
            sent += n
            self._line = meta[k][0] + n
            k = end if n == end - k else k + n
        if sent < len(items):  # stopped: the rest is delivered again next time
            done, self._next = origin[sent], meta[sent][0]
        if sent:
            seq, ts, pid, _ = meta[sent - 1]
            self._seq = seq
            self._committed(seq, ts, pid, sent, sum(m[3] for m in meta[:sent]))
        if done:
            pipe = self._link.client.pipeline(transaction=True)
            pipe.xack(self._stream, self.group, *[e[0] for e in entries[:done]])
            if self._line is not None:  # the line, as of now (shorter to read again)
                place = f"{self._epoch:016x} {self._line} {s.head}"
                pipe.hset(mirrors_key(self.key), self.group, place)
            pipe.execute()
        if stopped:
            raise Stopped
        if new_source is not None:
            raise new_source
