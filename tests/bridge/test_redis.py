"""The bridge over Redis Streams, against a real ``redis-server`` each test starts on a free
loopback port: records (latest value, late start), streams (order, every message, fan-out to
consumer groups, "block" and "drop_oldest"), exactly-once across a mirror's and an export's
restart, malformed entries injected straight into Redis, and refused credentials. The
broker's and the processes' faults are in test_redis_faults.py."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import numpy as np
import pytest
import xshm
from bridge_helpers import RedisServer, free_port, status_values, wait_for
from xshm import bridge
from xshm.bridge._envelope import Layout, encode_batch, encode_record
from xshm.bridge._redis_bridge import data_key, layout_key, mirrors_key

KEY = "test/redis"
STREAM, LAYOUT = data_key(KEY), layout_key(KEY)  # the Redis keys: {test/redis}, ...


def _payload(k: int) -> bytes:
    return struct.pack("<Q", k) * 8


def _take(rd: xshm.StreamReader, timeout: float = 0.05) -> list[int]:
    return [struct.unpack_from("<Q", m.data)[0] for m in rd.recv_many(512, timeout=timeout)]


def _take_until(rd: xshm.StreamReader, last: int, timeout: float = 30) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1] < last:
        got.extend(_take(rd))
        assert time.monotonic() < deadline, f"{len(got)} received, last {got[-1:]}"
    return got


@pytest.fixture
def names(seg_name: str, status_cleanup: Any) -> tuple[str, str]:
    """(source, mirror) segment names; the mirror and both status records removed after."""
    dst = status_cleanup(seg_name + "-m")
    status_cleanup(f"bridge.export.{seg_name}")
    status_cleanup(f"bridge.mirror.{dst}")
    return seg_name, dst


def test_a_record_late_mirror_gets_the_current_one_then_follows(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    src_name, dst = names
    src = xshm.SharedMemoryManager.create(src_name, shape=(8,), message_capacity=32)
    try:
        for k in range(1, 4):
            src.publish(values=np.full(8, float(k)), message=f"m{k}", counter=k)
        with bridge.export(src_name, key=KEY, engine="redis", url=redis_server.url) as ex:
            wait_for(lambda: ex.stats[src_name]["source_seq"] == src.seq, what="the export")
            with bridge.mirror(KEY, into=dst, engine="redis", url=redis_server.url) as mi:
                mi.wait_ready(10)
                m = xshm.SharedMemoryManager.open(dst, readonly=True)
                first = m.read()  # the current record at once: no update needed
                assert first.counter == 3 and first.message == "m3"
                assert mi.source["seq"] == src.seq and mi.source["name"] == src_name
                assert mi.source["writer_pid"] == src.read().writer_pid
                for k in range(4, 2000):  # flat out: the mirror may skip, never goes back
                    src.publish(values=np.full(8, float(k)), message=f"m{k}", counter=k)
                seen = []
                deadline = time.monotonic() + 1.0  # within a second of the source's stop
                while (s := m.read()).counter != 1999 and time.monotonic() < deadline:
                    seen.append(s.counter)
                    assert np.all(s.values == float(s.counter)) and s.message == f"m{s.counter}"
                assert m.read().counter == 1999
                assert seen == sorted(seen)
                assert mi.stats["engine"] == "redis" and mi.stats["invalid"] == 0
                name = f"bridge.mirror.{dst}"
                st = wait_for(lambda: (x := status_values(name))["source_seq"] == src.seq and x)
                assert st["peers"] == 1
                # The exporter's record stream stays a few entries long: latest value.
                assert redis_server.client().xlen(STREAM) < 300
                m.close()
    finally:
        src.close()


@pytest.mark.parametrize("frames", [False, True])
def test_a_stream_arrives_whole_and_in_order_in_two_groups(
    redis_server: RedisServer, names: tuple[str, str], status_cleanup: Any, frames: bool
) -> None:
    """Two mirrors (two consumer groups) of a "block" stream each get every message, in
    order; the export counts both groups."""
    src_name, dst = names
    dst2 = status_cleanup(dst + "2")
    status_cleanup(f"bridge.mirror.{dst2}")
    kw: dict[str, Any] = {"dtype": "int64", "shape": (8,)} if frames else {"max_bytes": 64}
    src = xshm.Stream.create(src_name, capacity=256, **kw)
    url = redis_server.url
    try:
        with (
            bridge.export(src_name, key=KEY, engine="redis", url=url) as ex,
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as m1,
            bridge.mirror(KEY, into=dst2, engine="redis", url=url) as m2,
        ):
            m1.wait_ready(10)
            m2.wait_ready(10)
            s1, s2 = xshm.Stream.open(dst), xshm.Stream.open(dst2)
            assert (s1.dtype is not None) == frames and s1.capacity == 256
            with s1.reader(start="oldest") as r1, s2.reader(start="oldest") as r2:
                total = 5000
                for k in range(total):
                    src.send(np.full(8, k, dtype=np.int64) if frames else _payload(k), timeout=10)
                assert _take_until(r1, total - 1) == list(range(total))
                assert _take_until(r2, total - 1) == list(range(total))
            wait_for(lambda: ex.stats[src_name]["mirrors"] == 2, what="two groups")
            for mi in (m1, m2):
                st = mi.stats
                assert st["lost"] == 0 and st["duplicates"] == 0 and st["invalid"] == 0, st
            s1.close()
            s2.close()
    finally:
        src.close()


class _FailOnce:
    """A client whose next transaction (the mirror's XACK + place) fails as if the broker went
    away after the mirror committed: what a mirror killed between its commit and its
    acknowledgement leaves behind."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.armed = False
        self.fired = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        if transaction and self.armed:
            import redis

            def fail() -> None:
                self.armed = False
                self.fired += 1
                raise redis.ConnectionError("injected: gone between commit and XACK")

            pipe.execute = fail
        return pipe


@pytest.mark.parametrize("first", [True, False])
def test_a_mirror_that_committed_but_did_not_acknowledge_drops_the_redelivery(
    redis_server: RedisServer, names: tuple[str, str], first: bool
) -> None:
    """The entries Redis delivers again after a mirror committed them and lost its XACK are
    recognized by the local stream's head against the line its place records (anchored before
    the first commit, ``first``, or carried by the last XACK) and dropped: the reader gets
    every message once."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=1024, max_bytes=64)
    url = redis_server.url
    try:
        with (
            bridge.export(src_name, key=KEY, engine="redis", url=url),
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi,
        ):
            mi.wait_ready(10)
            fail = _FailOnce(mi._link.client)  # type: ignore[attr-defined]
            mi._link.client = fail  # type: ignore[attr-defined]
            s = xshm.Stream.open(dst)
            with s.reader(start="oldest") as rd:
                fail.armed = first
                for k in range(300):
                    src.send(_payload(k))
                assert _take_until(rd, 299) == list(range(300))
                fail.armed = not first
                for k in range(300, 1000):
                    src.send(_payload(k))
                assert _take_until(rd, 999) == list(range(300, 1000))
                time.sleep(0.3)
                assert _take(rd) == []  # nothing twice
            assert fail.fired == 1 and not fail.armed
            st = mi.stats  # what came again was below the place's line: dropped as duplicates
            assert st["lost"] == 0 and st["duplicates"] > 0, st
            pending = redis_server.client().xpending(STREAM, mi.group)  # type: ignore[attr-defined]
            assert pending["pending"] == 0
            s.close()
    finally:
        src.close()


@pytest.mark.parametrize("lost_ack", [False, True])
def test_a_group_destroyed_under_a_running_mirror_is_made_again(
    redis_server: RedisServer, names: tuple[str, str], lost_ack: bool
) -> None:
    """``XGROUP DESTROY`` (what the docs say to do with an abandoned group), here under a
    running mirror, and (``lost_ack``) right after it committed a batch whose XACK was lost, so
    the group that knew what was pending is gone too: the mirror makes its group again from
    the start of what Redis holds and drops by its recorded place what it has: every message
    once, the mirror still running."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
    url = redis_server.url
    r = redis_server.client()
    try:
        with (
            bridge.export(src_name, key=KEY, engine="redis", url=url),
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi,
        ):
            mi.wait_ready(10)
            fail = _FailOnce(mi._link.client)  # type: ignore[attr-defined]
            mi._link.client = fail  # type: ignore[attr-defined]
            s = xshm.Stream.open(dst)
            with s.reader(start="oldest") as rd:
                for k in range(500):
                    src.send(_payload(k))
                assert _take_until(rd, 499) == list(range(500))
                if lost_ack:
                    fail.armed = True
                    src.send(_payload(500))
                    wait_for(lambda: fail.fired == 1, what="the lost XACK")
                assert r.xgroup_destroy(STREAM, mi.group) == 1  # while it reconnects
                start = 501 if lost_ack else 500
                for k in range(start, 1000):
                    src.send(_payload(k))
                assert _take_until(rd, 999) == list(range(500, 1000))
                time.sleep(0.3)
                assert _take(rd) == []
            assert mi.running and mi.stats["lost"] == 0
            s.close()
    finally:
        src.close()


def test_a_mirror_restarted_after_its_source_was_recreated_takes_the_backlog_first(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    """A mirror away while its source sent 100 more messages, then was removed and made again
    (a new epoch) and sent 50: back, it commits the old source's backlog Redis kept for it,
    then the new source's from its first message."""
    src_name, dst = names
    url = redis_server.url
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
    try:
        with (
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi,
            bridge.export(src_name, key=KEY, engine="redis", url=url),
        ):
            mi.wait_ready(10)
            s = xshm.Stream.open(dst)
            rd = s.reader(start="oldest")
            for k in range(100):
                src.send(_payload(k))
            assert _take_until(rd, 99) == list(range(100))
        with bridge.export(src_name, key=KEY, engine="redis", url=url) as ex:
            for k in range(100, 200):  # the mirror is away: Redis keeps them for its group
                src.send(_payload(k))
            wait_for(lambda: ex.stats[src_name]["source_seq"] == 199, what="the backlog")
        src.unlink()
        src.close()
        src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
        with bridge.export(src_name, key=KEY, engine="redis", url=url) as ex:
            for k in range(1000, 1050):
                src.send(_payload(k))
            wait_for(lambda: ex.stats[src_name]["source_seq"] == 49, what="the new source")
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                got = _take_until(rd, 1049)
                assert got == [*range(100, 200), *range(1000, 1050)]
                assert mi.stats["invalid"] == 0 and mi.stats["lost"] == 0
        rd.close()
        s.close()
    finally:
        src.close()


def test_broker_replies_are_sorted_into_waited_out_and_fatal() -> None:
    """What the bridge waits out (the status says why; an operator can fix it) and what stops
    it: by class, by reply code, and by the code inside a pipeline's error."""
    import redis.exceptions as rx
    from xshm.bridge._redis import RedisLink, RedisOptions

    link = RedisLink(RedisOptions(url="redis://127.0.0.1:1/0"))  # never connects
    waited = [
        rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        rx.ReadOnlyError("You can't write against a read only replica."),
        rx.NoPermissionError("this user has no permissions to run the 'xadd' command"),
        rx.ClusterDownError("The cluster is down"),
        rx.MovedError("4062 127.0.0.1:7001"),
        rx.ConnectionError("Connection refused"),
        rx.RedisClusterException("Redis Cluster cannot be connected."),
        rx.ResponseError("UNBLOCKED force unblock from blocking operation"),
        rx.ResponseError(
            "Command # 1 (XADD {k} * e b'xshb') of pipeline caused error: WRONGTYPE Operation "
            "against a key holding the wrong kind of value"
        ),
    ]
    fatal = [
        rx.ResponseError("ERR syntax error"),
        rx.CrossSlotTransactionError("keys in request don't hash to the same slot"),
        rx.ResponseError("BUSYGROUP Consumer Group name already exists"),
    ]
    assert [link.waits_out(e) for e in waited] == [True] * len(waited)
    assert [link.waits_out(e) for e in fatal] == [False] * len(fatal)
    link.close()


def test_a_mirror_closed_and_reopened_resumes_at_its_place(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    """The consumer group keeps the mirror's place: what was sent while it was closed arrives
    when it returns, after what it had, once."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
    url = redis_server.url
    try:
        with bridge.export(src_name, key=KEY, engine="redis", url=url):
            s = None
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                s = xshm.Stream.open(dst)
                rd = s.reader(start="oldest")
                for k in range(500):
                    src.send(_payload(k))
                assert _take_until(rd, 499) == list(range(500))
            for k in range(500, 1500):  # the mirror is away: Redis holds them
                src.send(_payload(k))
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                assert _take_until(rd, 1499) == list(range(500, 1500))
                assert mi.stats["duplicates"] == 0 and mi.stats["lost"] == 0
            rd.close()
            s.close()
    finally:
        src.close()


def test_a_restarted_export_adds_only_what_redis_lacks(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    src_name, _ = names
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
    r = redis_server.client()
    try:
        for k in range(300):
            src.send(_payload(k))
        with bridge.export(src_name, key=KEY, engine="redis", url=redis_server.url) as ex:
            wait_for(lambda: ex.stats[src_name]["source_seq"] == 299, what="300 added")
        assert r.xlen(STREAM) == 300
        for k in range(300, 400):
            src.send(_payload(k))
        # From the oldest message the ring holds: the first 300 are in Redis already.
        with bridge.export(src_name, key=KEY, engine="redis", url=redis_server.url) as ex:
            wait_for(lambda: ex.stats[src_name]["source_seq"] == 399, what="400 added")
            assert ex.stats[src_name]["messages"] == 100
        assert r.xlen(STREAM) == 400
    finally:
        src.close()


def test_an_export_restarted_after_its_mirrors_consumed_everything_adds_nothing(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    """Under "block" the export trims what its mirrors consumed, but never its newest entry:
    restarted, it finds there where it was and adds nothing its mirror had."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64)
    url = redis_server.url
    r = redis_server.client()
    try:
        with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
            with bridge.export(src_name, key=KEY, engine="redis", url=url):
                mi.wait_ready(10)
                s = xshm.Stream.open(dst)
                with s.reader(start="oldest") as rd:
                    for k in range(300):
                        src.send(_payload(k))
                    assert _take_until(rd, 299) == list(range(300))
                wait_for(lambda: r.xlen(STREAM) == 1, what="trimmed to the newest entry")
            with bridge.export(src_name, key=KEY, engine="redis", url=url) as ex:
                time.sleep(0.5)  # its reader gives it the 300 the ring holds
                assert ex.stats[src_name]["messages"] == 0
            assert mi.stats["duplicates"] == 0
            s.close()
    finally:
        src.close()


def _fill(src: xshm.Stream) -> int:
    """Send until the stream is full for a second; how many went in."""
    sent = 0
    try:
        while True:
            src.send(_payload(sent), timeout=1.0)
            sent += 1
    except xshm.StreamFullError:
        return sent


def _send(src: xshm.Stream, seqs: range) -> None:
    for k in seqs:
        src.send(_payload(k), timeout=10)


def test_block_holds_the_writers_while_a_group_lags_and_loses_nothing(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    """Under "block" the export trims only what every group consumed and reads no further
    while ``max_entries`` are unconsumed: with the mirror away, the stream's writer waits (a
    ring later) instead of losing; back, the mirror gets everything."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=64, max_bytes=64)
    url = redis_server.url
    r = redis_server.client()
    try:
        with bridge.export(src_name, key=KEY, engine="redis", url=url, max_entries=200) as ex:
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)  # its group exists from now on
            s = xshm.Stream.open(dst)
            rd = s.reader(start="oldest")  # attached before anything is mirrored
            sent = _fill(src)
            assert 200 <= sent <= 200 + 64 + 512, sent  # Redis's 200, the ring, a batch
            assert r.xlen(STREAM) <= 200
            assert "waiting" in ex.stats[src_name]["state"]
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                t = threading.Thread(target=_send, args=(src, range(sent, sent + 500)))
                t.start()
                got = _take_until(rd, sent + 499)
                t.join()
                assert got == list(range(sent + 500))
                assert mi.stats["lost"] == 0
            rd.close()
            s.close()
            wait_for(lambda: r.xlen(STREAM) < 200, what="trimmed to what the group needs")
    finally:
        src.close()


def test_drop_oldest_trims_and_the_mirror_counts_the_gap(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=4096, max_bytes=64, backpressure="drop_oldest")
    url = redis_server.url
    try:
        with bridge.export(src_name, key=KEY, engine="redis", url=url, max_entries=100) as ex:
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                s = xshm.Stream.open(dst)
                rd = s.reader(start="oldest")
                src.send(_payload(0))
                assert _take_until(rd, 0) == [0]
            for k in range(1, 3001):  # the mirror is away; Redis keeps about the last 100
                src.send(_payload(k))
            wait_for(lambda: ex.stats[src_name]["source_seq"] == 3000, what="3000 added")
            with bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi:
                mi.wait_ready(10)
                got = _take_until(rd, 3000)
                assert got == sorted(got) and got[-1] == 3000
                st = wait_for(lambda: (x := mi.stats)["source_seq"] == 3000 and x)
                assert st["lost"] == 3000 - len(got) > 0 and st["gaps"] == 1, st
            rd.close()
            s.close()
    finally:
        src.close()


def test_malformed_foreign_and_oversized_entries_are_counted_and_dropped(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    """Entries added to the stream's Redis stream by someone else: not an envelope, no field,
    a record envelope, a batch of another layout, one of the right layout but another epoch,
    a message longer than the layout's max_bytes, a truncated one. Each is counted in
    ``invalid``; the mirror's readers get exactly the real messages."""
    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=1024, max_bytes=64)
    url = redis_server.url
    r = redis_server.client()
    layout = Layout.of_stream(1024, 64, "block", None, None)
    other = Layout.of_stream(1024, 128, "block", None, None)
    try:
        with (
            bridge.export(src_name, key=KEY, engine="redis", url=url),
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi,
        ):
            mi.wait_ready(10)
            s = xshm.Stream.open(dst)
            with s.reader(start="oldest") as rd:
                src.send(_payload(0))
                assert _take_until(rd, 0) == [0]
                epoch = mi._epoch
                good = encode_batch(layout.hash(), epoch, [(1, 0, 0, _payload(1))])
                bad = [
                    {"e": b"garbage"},
                    {"x": good},
                    {"e": encode_record(layout.hash(), epoch, 1, 0, 0, 0, b"", b"")},
                    {"e": encode_batch(other.hash(), epoch, [(1, 0, 0, _payload(1))])},
                    {"e": encode_batch(layout.hash(), epoch ^ 1, [(1, 0, 0, _payload(1))])},
                    {"e": encode_batch(layout.hash(), epoch, [(1, 0, 0, bytes(65))])},
                    {"e": good[:-1]},
                    {"e": good[:40]},
                ]
                for fields in bad:
                    r.xadd(STREAM, fields)
                for k in range(1, 100):
                    src.send(_payload(k))
                assert _take_until(rd, 99) == list(range(1, 100))
                time.sleep(0.2)
                assert _take(rd) == []
            st = wait_for(lambda: (x := mi.stats)["invalid"] == len(bad) and x)
            assert st["lost"] == 0 and st["duplicates"] == 0 and mi.running
            s.close()
    finally:
        src.close()


def test_a_forged_layout_reserves_nothing_and_a_layout_change_is_refused(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    from xshm.bridge._envelope import encode_layout

    _, dst = names
    r = redis_server.client()
    huge = Layout.of_stream(1 << 30, 1 << 30, "block", None, None)
    r.set(LAYOUT, encode_layout(huge, 5, "h", "n", 1))
    with bridge.mirror(KEY, into=dst, engine="redis", url=redis_server.url) as mi:
        wait_for(lambda: mi.stats["invalid"] >= 1, what="the forged layout refused")
        assert not mi._ready.is_set()
        with pytest.raises(FileNotFoundError):
            xshm.Stream.open(dst)
        small = Layout.of_stream(64, 64, "block", None, None)
        r.set(LAYOUT, encode_layout(small, 5, "h", "n", 1))
        mi.wait_ready(10)
        # A change of layout under the mirror's readers: refused, the mirror stops.
        changed = Layout.of_stream(128, 64, "block", None, None)
        r.set(LAYOUT, encode_layout(changed, 5, "h", "n", 1))
        r.xadd(STREAM, {"e": encode_batch(changed.hash(), 5, [(0, 0, 0, b"x")])})
        wait_for(lambda: not mi.running, what="the mirror to stop")
        assert isinstance(mi.error, xshm.LayoutError)
        with pytest.raises(xshm.LayoutError):
            mi.close()
    with xshm.Stream.open(dst) as s:
        assert s.capacity == 64  # untouched


def test_credentials_are_required_and_a_wrong_password_is_refused(
    tmp_path: Any, names: tuple[str, str], status_cleanup: Any
) -> None:
    """AUTH (requirepass) and an ACL user: a wrong password, or none, is refused at once
    with a PermissionError naming the server (its password never printed); the right ones
    work."""
    server = RedisServer(str(tmp_path), "--requirepass", "s3cret-pass")
    server.start()
    try:
        admin = server.client(f"redis://:s3cret-pass@127.0.0.1:{server.port}/0")
        admin.acl_setuser(
            "bridge", enabled=True, passwords=["+user-pass"], keys=["{test/*"], commands=["+@all"]
        )
        src_name, dst = names
        src = xshm.SharedMemoryManager.create(src_name, shape=(4,))
        try:
            base = f"127.0.0.1:{server.port}/0"
            for url in (
                f"redis://{base}",
                f"redis://:wrong-pass@{base}",
                f"redis://bridge:no@{base}",
            ):
                with pytest.raises(PermissionError, match="refused") as e:
                    bridge.export(src_name, key=KEY, engine="redis", url=url)
                assert "wrong-pass" not in str(e.value)
                with pytest.raises(PermissionError):
                    bridge.mirror(KEY, into=dst, engine="redis", url=url)
            src.publish(values=np.arange(4.0), message="auth", counter=7)
            good = f"redis://bridge:user-pass@{base}"
            with bridge.export(src_name, key=KEY, engine="redis", url=good) as ex:
                assert ex.stats[src_name]["url"] == f"redis://bridge:***@{base}"
                with bridge.mirror(KEY, into=dst, engine="redis", url=good) as mi:
                    mi.wait_ready(10)
                    with xshm.SharedMemoryManager.open(dst, readonly=True) as m:
                        assert m.read().counter == 7
        finally:
            src.close()
    finally:
        server.stop()


def test_a_refused_export_leaves_no_reader_on_its_stream(
    redis_server: RedisServer, seg_name: str
) -> None:
    """An export refused at its start (here: a URL option that is the bridge's own) must not
    leave its reader attached: a "block" stream's writer would wait for it forever."""
    src = xshm.Stream.create(seg_name, capacity=8, max_bytes=64)
    try:
        url = redis_server.url + "?decode_responses=true"
        with pytest.raises(xshm.ArgumentError, match="decode_responses"):
            bridge.export(seg_name, key=KEY, engine="redis", url=url)
        wrong = redis_server.url.replace("redis://", "redis://:wrong@")
        server_pass = redis_server.client()
        server_pass.config_set("requirepass", "right")
        with pytest.raises(PermissionError):
            bridge.export(seg_name, key=KEY, engine="redis", url=wrong)
        assert src.readers() == []
        for k in range(20):  # more than the ring: no reader holds the writer
            src.send(_payload(k), timeout=1.0)
    finally:
        src.close()


def test_close_does_not_hang_on_a_broker_that_stopped_answering(
    redis_server: RedisServer, names: tuple[str, str]
) -> None:
    import os
    import signal

    src_name, dst = names
    src = xshm.Stream.create(src_name, capacity=64, max_bytes=64)
    url = redis_server.url
    try:
        ex = bridge.export(src_name, key=KEY, engine="redis", url=url)
        mi = bridge.mirror(KEY, into=dst, engine="redis", url=url)
        mi.wait_ready(10)
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)  # connections open, nothing answers
        try:
            time.sleep(0.3)
            t = time.monotonic()
            mi.close()
            ex.close()
            assert time.monotonic() - t < 6.0
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
    finally:
        src.close()


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(xshm.ArgumentError, match="redis://"):
        bridge.mirror(KEY, into="x", engine="redis", url="http://example")
    with pytest.raises(xshm.ArgumentError, match="engine"):
        bridge.mirror(KEY, into="x", engine="kafka")
    with pytest.raises(xshm.ArgumentError, match="Redis's"):
        bridge.mirror(KEY, into="x", url="redis://127.0.0.1:1/0")
    with pytest.raises(xshm.ArgumentError, match="Zenoh's"):
        bridge.mirror(KEY, into="x", engine="redis", listen=["tcp/127.0.0.1:1"])
    with pytest.raises(xshm.ArgumentError, match="max_entries"):
        bridge.export("x", engine="redis", max_entries=0)
    with pytest.raises(xshm.ArgumentError, match="wildcards"):
        bridge.mirror("test/*", into="x", engine="redis")
    with pytest.raises(xshm.ArgumentError, match="over Redis"):
        bridge.mirror("}x/y", into="x", engine="redis")


def test_a_redis_cluster_carries_a_stream_and_a_record(
    tmp_path: Any, names: tuple[str, str], status_cleanup: Any
) -> None:
    """Three redis-server nodes made a Redis Cluster (no replicas); the export's client starts
    at one node, the mirrors' at another: each export's keys share a hash tag, so the mirror's
    MULTI (XACK + its place) stays in one slot, and the clients follow the cluster's
    redirections to the node that owns it."""
    import subprocess
    from pathlib import Path

    from xshm.bridge import RedisOptions

    nodes = []
    try:
        for i in range(3):
            d = Path(tmp_path) / f"node{i}"
            d.mkdir()
            # The cluster bus on a free port of its own (by default, port + 10000: out of
            # range for an ephemeral port)
            bus = ["--cluster-port", str(free_port()), "--cluster-node-timeout", "2000"]
            node = RedisServer(str(d), "--cluster-enabled", "yes", *bus)
            node.start()
            nodes.append(node)
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        made = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        first = nodes[0].client()
        wait_for(lambda: b"cluster_state:ok" in first.execute_command("CLUSTER", "INFO"))
        src_name, dst = names
        rec_name = status_cleanup(src_name + "-rec")
        rec_dst = status_cleanup(dst + "-rec")
        status_cleanup(f"bridge.export.{rec_name}")
        status_cleanup(f"bridge.mirror.{rec_dst}")
        src = xshm.Stream.create(src_name, capacity=1024, max_bytes=64)
        rec = xshm.SharedMemoryManager.create(rec_name, shape=(2,))
        try:
            rec.publish(values=np.array([1.0, 2.0]), message="clustered", counter=5)
            at0 = RedisOptions(url=nodes[0].url, cluster=True)
            at2 = RedisOptions(url=nodes[2].url, cluster=True)
            with (
                bridge.export([src_name, rec_name], prefix="test/cl", options=at0),
                bridge.mirror(f"test/cl/{src_name}", into=dst, options=at2) as ms,
                bridge.mirror(f"test/cl/{rec_name}", into=rec_dst, options=at2) as mr,
            ):
                ms.wait_ready(20)
                mr.wait_ready(20)
                with xshm.SharedMemoryManager.open(rec_dst, readonly=True) as m:
                    assert m.read().message == "clustered"
                s = xshm.Stream.open(dst)
                with s.reader(start="oldest") as rd:
                    for k in range(1000):
                        src.send(_payload(k), timeout=10)
                    assert _take_until(rd, 999) == list(range(1000))
                assert ms.stats["duplicates"] == 0 and ms.stats["invalid"] == 0
                s.close()
            k = f"test/cl/{src_name}"
            keys = (data_key(k), layout_key(k), mirrors_key(k))
            assert len({first.execute_command("CLUSTER", "KEYSLOT", x) for x in keys}) == 1
        finally:
            src.close()
            rec.close()
    finally:
        for node in nodes:
            node.stop()
