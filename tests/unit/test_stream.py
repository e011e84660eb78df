"""The Python API contract of xshm.Stream and xshm.StreamReader, one process: properties and
reprs, context managers, closed and read-only handles, argument errors, byte and frame
messages, both backpressure policies with exact loss accounting, batches, iteration, and
the kinds of segment told apart. Concurrency here is threads; processes are in
tests/cross_process/test_streams.py."""

from __future__ import annotations

import gc
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import xshm


@pytest.fixture
def stream(seg_name: str) -> Iterator[xshm.Stream]:
    with xshm.Stream.create(seg_name, 4, max_bytes=16) as s:
        yield s


def test_create_properties_repr_and_header(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 8, max_bytes=100, max_readers=3) as s:
        assert s.name == "/" + seg_name
        assert s.capacity == 8
        assert s.max_bytes == 100
        assert s.dtype is None
        assert s.shape is None
        assert s.backpressure == "block"
        assert s.max_readers == 3
        assert s.readonly is False
        assert s.closed is False
        assert (s.head, s.dropped, s.abandoned) == (0, 0, 0)
        assert s.nbytes == os.stat(f"/dev/shm/{seg_name}").st_size
        assert s.nbytes >= 8 * 100
        assert stat.S_IMODE(os.stat(f"/dev/shm/{seg_name}").st_mode) == 0o600
        r = repr(s)
        assert r.startswith("<xshm.Stream ")
        for part in (f"/{seg_name}", "capacity=8", "max_bytes=100", "block", "head=0"):
            assert part in r, r
        s.send(b"x")
        assert "head=1" in repr(s)
        h = s.header()
        assert h["kind"] == "stream"
        assert h["capacity"] == 8
        assert h["max_bytes"] == 100
        assert h["max_readers"] == 3
        assert h["backpressure"] == "block"
        assert h["head"] == 1
        assert h["creator_pid"] == os.getpid()
        assert h["total_size"] == s.nbytes
        assert h["dropped"] == h["abandoned"] == h["recoveries"] == 0
        assert abs(h["created_ns"] / 1e9 - time.time()) < 600
    assert s.closed
    assert repr(s) == "<xshm.Stream (closed)>"


def test_create_with_mode_and_drop_oldest(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, backpressure="drop_oldest", mode=0o640) as s:
        assert s.backpressure == "drop_oldest"
        assert s.max_bytes == 1024  # the default
        assert "drop_oldest" in repr(s)
        assert stat.S_IMODE(os.stat(f"/dev/shm/{seg_name}").st_mode) == 0o640


def test_send_and_recv_message_fields(stream: xshm.Stream) -> None:
    with stream.reader() as r:
        assert r.closed is False
        assert (r.cursor, r.lag, r.lost, r.received) == (0, 0, 0, 0)
        assert stream.send(b"hello") == 0
        assert stream.send(bytearray(b"ba")) == 1
        assert stream.send(memoryview(b"xmvx")[1:3]) == 2
        assert stream.send(np.arange(3, dtype=np.uint8)) == 3
        assert r.lag == 4
        before = time.time()
        m = r.recv(timeout=5)
        assert isinstance(m, xshm.Message)
        assert (m.data, m.seq, m.writer_pid) == (b"hello", 0, os.getpid())
        assert abs(m.timestamp - before) < 60
        assert m.timestamp == pytest.approx(m.timestamp_ns / 1e9)
        assert "seq=0" in repr(m) and "b'hello'" in repr(m)
        with pytest.raises(AttributeError):
            m.seq = 5  # type: ignore[misc]
        assert [x.data for x in (r.recv(timeout=5), r.recv(timeout=5), r.recv(timeout=5))] == [
            b"ba",
            b"mv",
            b"\x00\x01\x02",
        ]
        assert (r.cursor, r.lag, r.received, r.lost) == (4, 0, 4, 0)
        assert f"/{stream.name[1:]}" in repr(r) and "cursor=4" in repr(r)
        assert r.try_recv() is None
    assert r.closed
    assert repr(r) == "<xshm.StreamReader (closed)>"


def test_empty_and_full_size_messages(stream: xshm.Stream) -> None:
    r = stream.reader()
    stream.send(b"")
    stream.send(b"y" * 16)
    assert r.recv(timeout=5).data == b""
    assert r.recv(timeout=5).data == b"y" * 16


def test_send_refuses_what_is_not_bytes_naming_the_problem(stream: xshm.Stream) -> None:
    with pytest.raises(TypeError, match=r"not str.*encode"):
        stream.send("text")
    with pytest.raises(TypeError, match="NoneType"):
        stream.send(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="C-contiguous"):
        stream.send(np.arange(8, dtype=np.uint8)[::2])
    with pytest.raises(TypeError, match="int"):
        stream.send(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not str"):
        stream.try_send("text")
    with pytest.raises(TypeError, match="timeout"):
        stream.send(b"x", timeout="soon")  # type: ignore[arg-type]
    assert stream.head == 0, "a refused send sent something"


def test_too_long_message_names_both_sizes(stream: xshm.Stream) -> None:
    with pytest.raises(xshm.MessageTooLongError, match=r"17 bytes.*at most 16") as info:
        stream.send(b"z" * 17)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match=r"17 bytes.*at most 16"):
        stream.try_send(b"z" * 17)
    assert stream.head == 0


def test_context_managers_and_closed_handles_raise_closed_error(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 4, max_bytes=8) as s:
        r = s.reader()
        s.send(b"kept")
    assert s.closed
    # The reader keeps the mapping after its stream handle is closed.
    assert r.recv(timeout=5).data == b"kept"
    for prop in ("name", "capacity", "max_bytes", "dtype", "shape", "backpressure", "head",
                 "dropped", "abandoned", "max_readers", "readonly", "nbytes"):  # fmt: skip
        with pytest.raises(xshm.ClosedError):
            getattr(s, prop)
    calls = [
        lambda: s.send(b"x"),
        lambda: s.try_send(b"x"),
        lambda: s.send_many([b"x"]),
        lambda: s.reader(),
        lambda: s.readers(),
        lambda: s.header(),
        lambda: s.unlink(),
    ]
    for call in calls:
        with pytest.raises(xshm.ClosedError):
            call()
    s.close()  # idempotent
    r.close()
    r.close()
    for prop in ("lost", "lag", "received", "cursor"):
        with pytest.raises(xshm.ClosedError):
            getattr(r, prop)
    for call in [
        lambda: r.recv(timeout=0),
        lambda: r.try_recv(),
        lambda: r.recv_many(3, timeout=0),
    ]:
        with pytest.raises(xshm.ClosedError):
            call()
    assert list(r) == []  # iteration of a closed reader stops at once
    assert issubclass(xshm.ClosedError, ValueError)


def test_readonly_handle_receives_but_cannot_send(stream: xshm.Stream) -> None:
    with xshm.Stream.open(stream.name, readonly=True) as ro:
        assert ro.readonly is True
        assert (ro.capacity, ro.max_bytes) == (4, 16)
        r = ro.reader("latest")
        for call in [
            lambda: ro.send(b"x"),
            lambda: ro.try_send(b"x"),
            lambda: ro.send_many([b"x"]),
        ]:
            with pytest.raises(xshm.ReadOnlyError, match="read-only"):
                call()
        assert isinstance(xshm.ReadOnlyError("x"), PermissionError)
        assert ro.head == 0
        stream.send(b"to the reader")
        assert r.recv(timeout=5).data == b"to the reader"
        r.close()


def test_reader_table_full_names_max_readers(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 4, max_readers=2) as s:
        a, b = s.reader(), s.reader()
        with pytest.raises(xshm.XshmError, match="max_readers") as info:
            s.reader()
        assert "all 2 reader entries" in str(info.value)
        assert len(s.readers()) == 2
        a.close()
        c = s.reader()  # the freed entry is taken again
        assert {d["pid"] for d in s.readers()} == {os.getpid()}
        assert all(d["alive"] for d in s.readers())
        b.close()
        c.close()
        assert s.readers() == []


def test_readers_lists_each_attached_reader(stream: xshm.Stream) -> None:
    stream.send(b"a")
    r = stream.reader("latest")
    stream.send(b"b")
    stream.send(b"c")
    r.recv(timeout=5)
    (d,) = stream.readers()
    assert (d["pid"], d["start"], d["cursor"], d["lag"], d["received"], d["lost"]) == (
        os.getpid(), 1, 2, 1, 1, 0
    )  # fmt: skip
    assert d["received"] + d["lost"] == d["cursor"] - d["start"]
    assert d["alive"] is True
    r.close()


def test_frames_round_trip_as_private_ndarray_copies(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="float32", shape=(2, 3)) as s:
        assert s.dtype == np.dtype("float32")
        assert s.shape == (2, 3)
        assert s.max_bytes == 24
        assert "frames float32(2, 3)" in repr(s)
        r = s.reader()
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        s.send(a)
        s.send(np.arange(6, dtype=np.float32).reshape(3, 2).T)  # right shape, not contiguous
        m = r.try_recv()  # taken with the GIL held, straight from the slot
        assert m is not None
        assert isinstance(m.data, np.ndarray)
        assert (m.data.dtype, m.data.shape) == (np.dtype("float32"), (2, 3))
        np.testing.assert_array_equal(m.data, a)
        # a private copy: its own 64-byte aligned buffer (its base a capsule that frees it)
        assert m.data.flags.writeable and m.data.ctypes.data % 64 == 0
        assert type(m.data.base).__name__ == "PyCapsule"
        m2 = r.recv(timeout=5)
        np.testing.assert_array_equal(m2.data, np.arange(6, dtype=np.float32).reshape(3, 2).T)
        a[:] = -1  # the sender's array is not shared ...
        m.data[:] = 99  # ... nor is the received one
        for k in range(2):  # overwrite both slots
            s.send(np.full((2, 3), k, dtype=np.float32), timeout=5)
        np.testing.assert_array_equal(m2.data, np.arange(6, dtype=np.float32).reshape(3, 2).T)
        got = [r.recv(timeout=5).data for _ in range(2)]
        assert [float(g[0, 0]) for g in got] == [0.0, 1.0]

        def late() -> None:
            time.sleep(0.05)
            s.send(np.full((2, 3), 7, dtype=np.float32))

        t = threading.Thread(target=late)
        t.start()
        waited = r.recv(timeout=10)  # copied out with the GIL released
        t.join()
        np.testing.assert_array_equal(waited.data, np.full((2, 3), 7, dtype=np.float32))
        assert waited.data.dtype == np.float32


def test_frames_refuse_wrong_shape_dtype_and_bytes_naming_both(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="int16", shape=4) as s:
        assert s.shape == (4,)
        with pytest.raises(
            xshm.ArgumentError, match=r"shape \(5,\).*carries frames of shape \(4,\)"
        ):
            s.send(np.zeros(5, dtype=np.int16))
        with pytest.raises(
            xshm.ArgumentError, match=r"shape \(2, 2\).*carries frames of shape \(4,\)"
        ):
            s.send(np.zeros((2, 2), dtype=np.int16))
        with pytest.raises(xshm.DtypeError, match=r"dtype int32.*carries frames of int16"):
            s.send(np.zeros(4, dtype=np.int32))
        with pytest.raises(
            TypeError,
            match=r"data must be a numpy array of dtype int16 and shape \(4,\).*not bytes",
        ):
            s.send(b"\x00" * 8)
        with pytest.raises(TypeError, match=r"items\[1\] must be a numpy array.*not bytes"):
            s.send_many([np.zeros(4, dtype=np.int16), b"\x00" * 8])
        assert s.head == 0, "a refused frame was sent"
        s.unlink()
    with pytest.raises(xshm.ArgumentError, match=r"max_bytes 10 does not match.*8 bytes"):
        xshm.Stream.create(seg_name, 2, dtype="int16", shape=4, max_bytes=10)
    with pytest.raises(xshm.ArgumentError, match="shape needs a dtype"):
        xshm.Stream.create(seg_name, 2, shape=4)
    with pytest.raises(xshm.DtypeError, match="unsupported dtype"):
        xshm.Stream.create(seg_name, 2, dtype="U4", shape=4)
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_block_full_raises_stream_full_error_and_try_send_is_false(stream: xshm.Stream) -> None:
    r = stream.reader("latest")
    for k in range(4):
        assert stream.try_send(bytes([k])) is True
    assert stream.try_send(b"no room") is False
    with pytest.raises(xshm.StreamFullError, match=rf"full.*pid {os.getpid()}") as info:
        stream.send(b"no room", timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, xshm.WaitTimeoutError)
    with pytest.raises(xshm.StreamFullError):
        stream.send(b"no room", timeout=0)
    assert stream.head == 4
    assert r.recv(timeout=5).data == b"\x00"
    assert stream.try_send(b"room") is True
    assert stream.head == 5

    def take_one_later() -> None:
        time.sleep(0.05)
        r.recv(timeout=5)

    t = threading.Thread(target=take_one_later)
    t.start()
    assert stream.send(b"waited", timeout=10) == 5  # a blocked send goes on when room frees
    t.join()
    assert stream.dropped == 0
    t = threading.Thread(target=lambda: (time.sleep(0.05), r.close()))
    t.start()
    assert stream.send(b"ungated", timeout=10) == 6  # ... or when the gating reader closes
    t.join()
    assert stream.dropped == 1, "seq 6 overwrote seq 2 with no reader attached"


def test_drop_oldest_never_blocks_and_counts_lost_exactly(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 4, max_bytes=8, backpressure="drop_oldest") as s:
        s.send(b"before")  # not counted: sent before the reader attached
        r = s.reader("latest")
        start = s.head
        for k in range(0, 74, 2):
            assert s.send(k.to_bytes(8, "little"), timeout=0) == start + k
            assert s.try_send((k + 1).to_bytes(8, "little")) is True
        sent = 74
        got = []
        while (m := r.try_recv()) is not None:
            got.append(m)
        assert r.received == len(got)
        assert r.received + r.lost == sent, (r.received, r.lost)
        assert r.lost > 0
        assert got, "a lapped reader got nothing of the last ring"
        assert [m.seq for m in got] == list(range(start + sent - len(got), start + sent))
        assert [m.data for m in got] == [(m.seq - start).to_bytes(8, "little") for m in got]
        assert got[-1].data == (73).to_bytes(8, "little")
        assert s.dropped == 0, "a reader was attached: its own lost counts, not dropped"
        # Once caught up, nothing more is lost.
        s.send(b"next")
        assert r.recv(timeout=5).data == b"next"
        assert r.received + r.lost == sent + 1


def test_block_without_readers_keeps_last_capacity_and_counts_dropped(stream: xshm.Stream) -> None:
    for k in range(10):
        assert stream.send(bytes([k]), timeout=0) == k  # nothing gates: never waits
    assert stream.dropped == 6
    assert stream.header()["dropped"] == 6
    r = stream.reader("oldest")
    assert r.cursor == 6
    assert [r.recv(timeout=5).data for _ in range(4)] == [bytes([k]) for k in range(6, 10)]
    assert (r.lost, r.received) == (0, 4)
    stream.send(b"x")
    assert stream.dropped == 6, "a message sent with a reader attached was counted as dropped"


def test_start_oldest_and_latest(stream: xshm.Stream) -> None:
    stream.send(b"0")
    stream.send(b"1")
    oldest = stream.reader("oldest")
    latest = stream.reader("latest")
    assert (oldest.cursor, latest.cursor) == (0, 2)
    assert (oldest.lag, latest.lag) == (2, 0)
    stream.send(b"2")
    assert [m.data for m in oldest.recv_many(10, timeout=5)] == [b"0", b"1", b"2"]
    assert [m.data for m in latest.recv_many(10, timeout=5)] == [b"2"]
    assert stream.reader().cursor == 0  # the default is oldest
    with pytest.raises(xshm.ArgumentError, match="'oldest' or 'latest', got 'newest'"):
        stream.reader("newest")
    with pytest.raises(TypeError, match="start"):
        stream.reader(0)  # type: ignore[arg-type]


def test_recv_many_semantics(stream: xshm.Stream) -> None:
    r = stream.reader()
    assert r.recv_many(5, timeout=0.01) == []
    assert r.recv_many(0, timeout=0) == []
    for k in range(3):
        stream.send(bytes([k]))
    two = r.recv_many(2, timeout=5)
    assert [(m.seq, m.data) for m in two] == [(0, b"\x00"), (1, b"\x01")]
    assert [m.seq for m in r.recv_many(5, timeout=5)] == [2]  # only what is there
    with pytest.raises(xshm.ArgumentError, match="max_n"):
        r.recv_many(-1)

    def later() -> None:
        time.sleep(0.05)
        stream.send_many([b"a", b"b"])

    t = threading.Thread(target=later)
    t.start()
    got = r.recv_many(5, timeout=10)  # waits for the first, then takes what is there
    t.join()
    assert 1 <= len(got) <= 2
    got += r.recv_many(5, timeout=0.01) if len(got) == 1 else []
    assert [m.data for m in got] == [b"a", b"b"]


def test_send_many_semantics(stream: xshm.Stream) -> None:
    r = stream.reader()
    assert stream.send_many([b"a", bytearray(b"b"), memoryview(b"c")]) == 2
    assert stream.send_many(iter([b"d"])) == 3  # any iterable
    assert [m.data for m in r.recv_many(10, timeout=5)] == [b"a", b"b", b"c", b"d"]
    with pytest.raises(xshm.ArgumentError, match="no messages"):
        stream.send_many([])
    # Every item is checked before any is sent.
    with pytest.raises(xshm.MessageTooLongError, match="17 bytes"):
        stream.send_many([b"ok", b"q" * 17])
    with pytest.raises(TypeError, match="not str"):
        stream.send_many([b"ok", "text"])
    assert stream.head == 4
    # More than there is room for: what fits goes, and the error says how many.
    with pytest.raises(xshm.StreamFullError, match=r"4 of the batch were sent"):
        stream.send_many([bytes([k]) for k in range(6)], timeout=0.05)
    assert stream.head == 8
    assert [m.data for m in r.recv_many(10, timeout=5)] == [bytes([k]) for k in range(4)]


def test_send_many_larger_than_capacity_with_a_concurrent_reader(stream: xshm.Stream) -> None:
    r = stream.reader("latest")
    items = [k.to_bytes(4, "little") * 4 for k in range(500)]
    got: list[xshm.Message] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            while len(got) < len(items):
                batch = r.recv_many(3, timeout=20)
                assert batch, "the reader waited 20 s for a message"
                got.extend(batch)
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    t = threading.Thread(target=consume)
    t.start()
    try:
        assert stream.send_many(items, timeout=30) == 499
    finally:
        t.join(timeout=60)
    assert not t.is_alive()
    assert not failure, failure
    assert [m.seq for m in got] == list(range(500))
    assert [m.data for m in got] == items
    assert (r.lost, r.received) == (0, 500)
    assert stream.dropped == 0


def test_iteration_yields_in_order(stream: xshm.Stream) -> None:
    r = stream.reader()
    assert iter(r) is r

    def send_later() -> None:
        for k in range(10):
            stream.send(bytes([k]), timeout=10)

    t = threading.Thread(target=send_later)
    t.start()
    seen = []
    for m in r:
        seen.append((m.seq, m.data))
        if m.seq == 9:
            break
    t.join()
    assert seen == [(k, bytes([k])) for k in range(10)]


def test_recv_timeout_raises_wait_timeout_error(stream: xshm.Stream) -> None:
    r = stream.reader()
    with pytest.raises(xshm.WaitTimeoutError, match="no message") as info:
        r.recv(timeout=0.02)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(xshm.WaitTimeoutError):
        r.recv(timeout=0)
    with pytest.raises(xshm.ArgumentError, match="spin"):
        r.recv(timeout=0.01, spin=-1)
    stream.send(b"late")
    assert r.recv(timeout=0.5, spin=0.001).data == b"late"


def test_one_reader_is_not_shared_by_two_threads(stream: xshm.Stream) -> None:
    r = stream.reader()
    started = threading.Event()

    def wait() -> None:
        started.set()
        r.recv(timeout=10)

    t = threading.Thread(target=wait)
    t.start()
    started.wait(10)
    deadline = time.monotonic() + 10
    err = None
    while err is None and time.monotonic() < deadline:  # until the thread is inside its wait
        try:
            r.try_recv()
            time.sleep(0.001)
        except ValueError as e:
            err = e
    stream.send(b"for the thread")
    t.join(timeout=30)
    assert err is not None and "another thread" in str(err)


def test_kinds_are_told_apart_by_name(seg_name: str) -> None:
    stream_kind = r"is a stream.*not a record.*Stream\.open"
    with xshm.Stream.create(seg_name, 4), pytest.raises(xshm.LayoutError, match=stream_kind):
        xshm.SharedMemoryManager.open(seg_name)
    xshm.unlink(seg_name)
    with xshm.SharedMemoryManager.create(seg_name):
        record_kind = r"is a record, not a stream.*SharedMemoryManager"
        with pytest.raises(xshm.LayoutError, match=record_kind):
            xshm.Stream.open(seg_name)
        with pytest.raises(xshm.LayoutError, match="is a record"):
            xshm.Stream.create(seg_name, 4, exist_ok=True)


def test_open_and_exist_ok(seg_name: str) -> None:
    with pytest.raises(FileNotFoundError):
        xshm.Stream.open(seg_name)
    with xshm.Stream.create(seg_name, 16, max_bytes=32) as s:
        with pytest.raises(FileExistsError, match="exist_ok"):
            xshm.Stream.create(seg_name, 16, max_bytes=32)
        with xshm.Stream.create(seg_name, 16, max_bytes=32, exist_ok=True) as same:
            assert same.nbytes == s.nbytes
            s.send(b"seen by both")
            assert same.reader().recv(timeout=5).data == b"seen by both"
        with pytest.raises(xshm.LayoutError, match=r"capacity 16 there, 24 asked"):
            xshm.Stream.create(seg_name, 24, max_bytes=32, exist_ok=True)
        with pytest.raises(xshm.LayoutError, match=r"max_bytes 32 there, 40 asked"):
            xshm.Stream.create(seg_name, 16, max_bytes=40, exist_ok=True)
        with pytest.raises(xshm.LayoutError, match=r"backpressure block there, drop_oldest asked"):
            xshm.Stream.create(seg_name, 16, 32, backpressure="drop_oldest", exist_ok=True)
        with xshm.Stream.open(seg_name, timeout=1) as o:
            assert (o.capacity, o.max_bytes, o.readonly) == (16, 32, False)


def test_open_waits_for_the_name_up_to_its_timeout(seg_name: str) -> None:
    t = threading.Timer(0.1, lambda: xshm.Stream.create(seg_name, 4).close())
    t.start()
    try:
        with xshm.Stream.open(seg_name, timeout=20) as s:
            assert s.capacity == 4
    finally:
        t.join()
    with pytest.raises(FileNotFoundError):
        xshm.Stream.open(seg_name + "-never", timeout=0.05)


def test_unlink(seg_name: str) -> None:
    s = xshm.Stream.create(seg_name, 4)
    r = s.reader()
    s.unlink()
    assert not os.path.exists(f"/dev/shm/{seg_name}")
    with pytest.raises(FileNotFoundError):
        xshm.Stream.open(seg_name)
    with pytest.raises(FileNotFoundError):
        s.unlink()
    s.send(b"still mapped")  # existing handles keep working
    assert r.recv(timeout=5).data == b"still mapped"
    r.close()
    s.close()
    with xshm.Stream.create(seg_name, 4):  # the name is free again
        xshm.unlink(seg_name)  # the package-level unlink knows streams
        assert not os.path.exists(f"/dev/shm/{seg_name}")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("/", "empty"),
        ("a/b", "contains '/'"),
        ("x" * 256, "256 bytes"),
        ("..", "not allowed"),
        ("nul\0byte", "NUL"),
    ],
)
def test_names_are_validated(name: str, why: str) -> None:
    with pytest.raises(xshm.ArgumentError, match=re.escape(why)):
        xshm.Stream.create(name, 4)
    with pytest.raises(xshm.ArgumentError, match=re.escape(why)):
        xshm.Stream.open(name)


def test_bad_create_arguments(seg_name: str) -> None:
    with pytest.raises(xshm.ArgumentError, match="capacity"):
        xshm.Stream.create(seg_name, 0)
    with pytest.raises(xshm.ArgumentError, match="capacity"):
        xshm.Stream.create(seg_name, -1)
    with pytest.raises(TypeError, match="capacity must be an int"):
        xshm.Stream.create(seg_name, 4.0)  # type: ignore[arg-type]
    with pytest.raises(xshm.ArgumentError, match="'block' or 'drop_oldest', got 'newest'"):
        xshm.Stream.create(seg_name, 4, backpressure="newest")
    with pytest.raises(xshm.ArgumentError, match="mode"):
        xshm.Stream.create(seg_name, 4, mode=0o1777)
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_limits_are_arguments_errors_naming_the_value(seg_name: str) -> None:
    with pytest.raises(xshm.ArgumentError, match=r"capacity must be 1 to 2\*\*30.*got 1073741825"):
        xshm.Stream.create(seg_name, 2**30 + 1)
    with pytest.raises(xshm.ArgumentError, match=r"max_bytes must be 1 to 2\*\*30.*got 0"):
        xshm.Stream.create(seg_name, 4, max_bytes=0)
    with pytest.raises(xshm.ArgumentError, match="max_readers must be 1 to 1024, got 0"):
        xshm.Stream.create(seg_name, 4, max_readers=0)
    with pytest.raises(xshm.ArgumentError, match="max_readers must be 1 to 1024, got 1025"):
        xshm.Stream.create(seg_name, 4, max_readers=1025)
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_max_readers_beyond_32_bits_is_named_as_given(seg_name: str) -> None:
    with pytest.raises(xshm.ArgumentError, match="max_readers must be 1 to 1024, got 4294967296"):
        xshm.Stream.create(seg_name, 4, max_readers=2**32)


def test_negative_or_nan_timeouts_are_refused(stream: xshm.Stream) -> None:
    r = stream.reader()
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(xshm.ArgumentError, match="timeout must be >= 0"):
            r.recv(timeout=bad)
        with pytest.raises(xshm.ArgumentError, match="timeout must be >= 0"):
            stream.send(b"x", timeout=bad)
    assert stream.head == 0


def test_exist_ok_tells_frames_apart_naming_both(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="float32", shape=(2, 3)):
        with pytest.raises(xshm.LayoutError, match=r"float32\(2, 3\) there, float32\(3, 2\) asked"):
            xshm.Stream.create(seg_name, 2, dtype="float32", shape=(3, 2), exist_ok=True)
        with pytest.raises(xshm.LayoutError, match=r"float32\(2, 3\) there, bytes asked"):
            xshm.Stream.create(seg_name, 2, max_bytes=24, exist_ok=True)
        with xshm.Stream.create(seg_name, 2, dtype="float32", shape=(2, 3), exist_ok=True) as same:
            assert same.shape == (2, 3)


def test_scalar_and_bool_frames(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="int32", shape=()) as s, s.reader() as r:
        assert (s.shape, s.max_bytes) == ((), 4)
        s.send(np.array(-5, dtype=np.int32))
        m = r.recv(timeout=5)
        assert m.data.shape == () and int(m.data) == -5
    xshm.unlink(seg_name)
    with xshm.Stream.create(seg_name, 2, dtype=bool, shape=3) as s, s.reader() as r:
        s.send(np.array([True, False, True]))
        assert r.recv(timeout=5).data.tolist() == [True, False, True]
        with pytest.raises(xshm.DtypeError, match=r"dtype >i4"):
            s.send(np.array([1, 0, 1], dtype=">i4"))
    xshm.unlink(seg_name)
    with pytest.raises(xshm.DtypeError, match="big-endian"):
        xshm.Stream.create(seg_name, 2, dtype=">i4", shape=3)


def test_send_many_from_a_failing_generator_sends_nothing(stream: xshm.Stream) -> None:
    def items() -> Iterator[bytes]:
        yield b"a"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        stream.send_many(items())
    assert stream.head == 0


def test_threads_share_one_handle_one_total_order(stream: xshm.Stream) -> None:
    r = stream.reader("latest")
    each, threads = 2000, 4
    errors: list[BaseException] = []

    def send(tid: int) -> None:
        try:
            for k in range(each):
                stream.send(tid.to_bytes(1, "little") + k.to_bytes(4, "little"), timeout=30)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    ts = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    next_k = [0] * threads
    try:
        for seq in range(each * threads):
            m = r.recv(timeout=30)
            assert m.seq == seq
            tid, k = m.data[0], int.from_bytes(m.data[1:], "little")
            assert k == next_k[tid], f"thread {tid}: message {k}, {next_k[tid]} expected"
            next_k[tid] += 1
    finally:
        for t in ts:
            t.join(timeout=60)
    assert not errors, errors
    assert next_k == [each] * threads
    assert (r.lost, stream.head) == (0, each * threads)


def test_ctrl_c_interrupts_blocked_waits_and_leaves_handles_usable(stream: xshm.Stream) -> None:
    r = stream.reader()

    def interrupt_soon() -> threading.Timer:
        t = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
        t.start()
        return t

    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        r.recv()  # no timeout: only the signal ends it
    t.join()
    stream.send(b"after")
    assert r.try_recv().data == b"after"  # not left "receiving in another thread"
    for k in range(4):
        stream.send(bytes([k]))
    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        stream.send(b"full")
    t.join()
    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        stream.send_many([b"full", b"too"])
    t.join()
    assert stream.head == 5, "an interrupted send sent something"
    assert [m.data for m in r.recv_many(9, timeout=0)] == [bytes([k]) for k in range(4)]
    t = interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        for _ in r:
            pass
    t.join()
    h = stream.header()
    assert (h["data_waiters"], h["space_waiters"]) == (0, 0), "an interrupted wait stayed counted"


# Holds a stream's robust mutex (the header's opaque mutex bytes, docs/LAYOUT.md Part II, the
# `mutex` row at offset 512) with pthread_mutex_lock until told to let go: a stand-in for a
# writer stopped while it holds it.
MUTEX_HOLDER = """
import ctypes, mmap, os, sys
fd = os.open("/dev/shm/" + sys.argv[1], os.O_RDWR)
mm = mmap.mmap(fd, os.fstat(fd).st_size)
libc = ctypes.CDLL(None)
mutex = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(mm, 512)))
assert libc.pthread_mutex_lock(mutex) == 0
print("held", flush=True)
sys.stdin.readline()
assert libc.pthread_mutex_unlock(mutex) == 0
"""


def test_ctrl_c_interrupts_open_and_reader_attach(stream: xshm.Stream, seg_name: str) -> None:
    """Stream.open(timeout=None) waits for the name for ever and reader() waits up to 10 s for
    the stream's mutex: both answer Ctrl-C, and leave nothing behind."""

    def interrupt_soon() -> threading.Timer:
        t = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
        t.start()
        return t

    never = seg_name + "-never"
    # Watchdog: should the signal not end the wait, the name appears and the open returns.
    watchdog = threading.Timer(30, lambda: xshm.Stream.create(never, 1).close())
    t = interrupt_soon()
    watchdog.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            xshm.Stream.open(never, timeout=None)  # only the signal ends it
    finally:
        watchdog.cancel()
        t.join()
        watchdog.join()
        if os.path.exists(f"/dev/shm/{never}"):
            xshm.unlink(never)
    with subprocess.Popen(
        [sys.executable, "-c", MUTEX_HOLDER, stream.name[1:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "held"
            t = interrupt_soon()
            with pytest.raises(KeyboardInterrupt):
                stream.reader()
            t.join()
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=60) == 0
    assert stream.readers() == [], "an interrupted attach left a reader entry"
    with stream.reader() as r:  # the mutex is free again, and the handle usable
        stream.send(b"after")
        assert r.recv(timeout=5).data == b"after"


CLOSE_WHILE_RECEIVING = """
import sys, threading, time, xshm
name, handle, how, closing = sys.argv[1:5]
s = xshm.Stream.create(name, 4)
r = s.reader()
if handle == "stream closed":
    s.close()  # the reader holds the last reference to the mapping
got = []
def wait():
    try:
        if how == "recv":
            got.append(repr(r.recv()))  # no timeout: only the close ends it
        elif how == "recv_many":
            got.append(repr(r.recv_many(8)))
        else:
            got.append("ended" if [m for m in r] == [] else "got messages")
    except Exception as e:
        got.append(type(e).__name__)
t = threading.Thread(target=wait)
t.start()
if handle == "stream open":  # until the thread sleeps in its wait, the GIL released
    while s.header()["data_waiters"] != 1:
        time.sleep(0.001)
else:
    time.sleep(0.2)
if closing == "close":
    r.close()
else:
    r.__exit__(None, None, None)
t.join()
print(got[0], r.closed)
if handle == "stream open":
    print(s.readers(), s.header()["data_waiters"])
"""


@pytest.mark.parametrize("closing", ["close", "exit"])
@pytest.mark.parametrize("how", ["recv", "recv_many", "iter"])
@pytest.mark.parametrize("handle", ["stream open", "stream closed"])
def test_closing_a_reader_ends_the_receive_waiting_in_another_thread(
    seg_name: str, handle: str, how: str, closing: str
) -> None:
    """A consumer thread blocked in recv()/recv_many()/iteration with no timeout is stopped by
    close() (or leaving the with block) from another thread: recv and recv_many raise
    ClosedError, a for loop just ends; the reader is detached, its sleep no longer counted, and
    the mapping was never pulled from under the waiting thread (a subprocess: a crash is seen
    as its exit status; its timeout is the watchdog of a close() that would wait forever)."""
    p = subprocess.run(
        [sys.executable, "-c", CLOSE_WHILE_RECEIVING, seg_name, handle, how, closing],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"exit {p.returncode} (-11 is SIGSEGV): {p.stdout} {p.stderr}"
    lines = p.stdout.splitlines()
    assert lines[0] == ("ended True" if how == "iter" else "ClosedError True"), p.stdout
    if handle == "stream open":
        assert lines[1] == "[] 0", p.stdout


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mapped(name: str) -> int:
    """How many of this process's mappings are of the segment `name` (unlinked or not)."""
    path = f"/dev/shm/{name}"
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip("\n").endswith((path, path + " (deleted)")))


def test_handles_and_readers_release_every_fd_mapping_and_name(seg_name: str) -> None:
    """Rounds of create, open (read-write and read-only), readers closed by their own thread,
    by another thread while it receives, left to the garbage collector, and outliving their
    Stream handles: after each round the name is gone and nothing maps the stream, and after
    all of them this process holds no more descriptors than before."""
    gc.collect()
    fds = _open_fds()
    for k in range(12):
        name = f"{seg_name}-{k}"
        s = xshm.Stream.create(name, 4, max_bytes=32)
        other = xshm.Stream.open(name)
        ro = xshm.Stream.open(name, readonly=True)
        r1, r2, r3, r4 = s.reader(), other.reader(), ro.reader(), s.reader()
        s.send(b"m")
        assert [r.recv(timeout=5).data for r in (r1, r2, r3, r4)] == [b"m"] * 4
        r1.close()
        outcome: list[str] = []

        def receive(r: xshm.StreamReader = r2, out: list[str] = outcome) -> None:
            try:
                r.recv()
            except xshm.ClosedError:
                out.append("closed")

        t = threading.Thread(target=receive)
        t.start()
        while s.header()["data_waiters"] != 1:  # until it sleeps in its wait
            time.sleep(0.001)
        r2.close()  # from this thread, while the other receives
        t.join(timeout=60)
        assert outcome == ["closed"]
        del r3  # never closed: the garbage collector detaches it
        gc.collect()
        assert len(s.readers()) == 1
        s.send(b"last")
        for handle in (s, other, ro):
            handle.close()
        assert _mapped(name) > 0, "the reader outliving its Stream handles keeps the mapping"
        assert r4.recv(timeout=5).data == b"last"
        xshm.unlink(name)
        assert not os.path.exists(f"/dev/shm/{name}")
        r4.close()
        assert _mapped(name) == 0, "a mapping outlived every handle and reader"
    del s, other, ro, r1, r2, r4, handle
    gc.collect()
    assert _open_fds() == fds, "descriptors leaked"


def test_writer_table_full_names_max_writers_and_a_closed_handle_frees_its_entry(
    seg_name: str,
) -> None:
    with xshm.Stream.create(seg_name, 4) as s:
        handles = [xshm.Stream.open(seg_name) for _ in range(s.header()["max_writers"])]
        try:
            for h in handles:
                h.send(b"x")  # a handle takes its writer entry at its first send
            with pytest.raises(xshm.XshmError, match="max_writers"):
                s.send(b"one too many")
            handles[0].close()
            assert s.send(b"in the freed entry") == len(handles)
        finally:
            for h in handles:
                h.close()


def test_handles_inherited_across_fork_are_refused_and_leave_the_parent_alone(
    stream: xshm.Stream,
) -> None:
    r = stream.reader()
    rd, wr = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork() with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through the pipe)
        code = 0
        try:
            for call in (lambda: stream.send(b"x"), lambda: r.try_recv(), lambda: stream.reader()):
                try:
                    call()
                    code |= 1
                except xshm.XshmError as e:
                    code |= 0 if "before a fork()" in str(e) else 2
            r.close()  # closing the inherited copies detaches nothing of the parent's
            stream.close()
        except BaseException:
            code |= 4
        os.write(wr, bytes([code]))
        os._exit(0)
    os.close(wr)
    try:
        code = os.read(rd, 1)
    finally:
        os.close(rd)
        os.waitpid(pid, 0)
    assert code == b"\x00", f"child saw {code!r}: 1 a call went through, 2 another error"
    for k in range(4):
        stream.send(bytes([k]))
    assert stream.try_send(b"y") is False, "the parent's reader no longer gates"
    assert [d["pid"] for d in stream.readers()] == [os.getpid()]
    assert r.recv(timeout=5).data == b"\x00"
