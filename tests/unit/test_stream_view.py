"""Zero-copy receives from Python: `with r.recv_view() as v:` gives v.data, a read-only numpy
array over the slot itself (its address lies inside the stream's mapping: a view that copied
would fail here); the reader moves past the message when the view is released; a held view
gates a 'block' writer; under 'drop_oldest' a lapping writer overwrites it, which the view says
and its release raises (OverwrittenError, never over the block's own exception); releasing
while arrays derived from the data exist raises BufferError and keeps the view held."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest
import xshm
from test_stream_claim import _inside


@pytest.fixture
def stream(seg_name: str) -> Iterator[xshm.Stream]:
    with xshm.Stream.create(seg_name, 2, max_bytes=32) as s:
        yield s
        s.unlink()


def test_a_view_reads_the_slot_in_place_and_the_release_takes_it(stream: xshm.Stream) -> None:
    r = stream.reader()
    stream.send(b"in place")
    with r.recv_view(timeout=5) as v:
        assert isinstance(v, xshm.MessageView)
        assert bytes(v.data) == b"in place" and v.data.dtype == np.uint8
        assert (v.seq, v.nbytes, v.held, v.overwritten) == (0, 8, True, False)
        assert _inside(v.data, stream.name[1:]), "the view's data is not in the stream's mapping"
        assert not v.data.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            v.data[0] = 1
        assert (r.cursor, r.received) == (0, 0), "taken before the release"
        with pytest.raises(ValueError, match="holds a view of message 0"):
            r.try_recv()
        data = v.data
    assert not v.held and (r.cursor, r.received) == (1, 1)
    assert not data.any(), "the released view's array still shows the slot"
    with pytest.raises(xshm.ClosedError, match="released"):
        v.data  # noqa: B018
    v.release()  # idempotent
    stream.send(b"next")
    assert r.recv(timeout=5).seq == 1


def test_a_held_view_gates_a_block_writer(stream: xshm.Stream) -> None:
    r = stream.reader()
    stream.send(b"a")
    v = r.recv_view(timeout=5)
    stream.send(b"b")
    with pytest.raises(xshm.StreamFullError):
        stream.send(b"c", timeout=0.05)
    assert bytes(v.data) == b"a", "the viewed slot was reused"
    v.release()
    stream.send(b"c", timeout=5)
    assert [m.seq for m in r.recv_many(4, timeout=5)] == [1, 2]


def test_a_drop_oldest_lap_overwrites_a_held_view(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, max_bytes=8, backpressure="drop_oldest") as s:
        r = s.reader()
        s.send(b"first")
        v = r.recv_view(timeout=5)
        for k in range(3):
            s.send(b"lap %d" % k)
        assert v.overwritten
        with pytest.raises(xshm.OverwrittenError, match="message 0 was overwritten"):
            v.release()
        assert (r.lost, r.received) == (1, 0)
        # With the block's own exception in flight, the overwrite is counted, not raised.
        s.send(b"again")

        def lapped_then_fail() -> None:
            with r.recv_view(timeout=5) as v2:
                for k in range(3):
                    s.send(b"lap %d" % k)
                assert v2.overwritten
                raise KeyError("the user's")

        with pytest.raises(KeyError, match="the user's"):
            lapped_then_fail()
        d = s.readers()[0]
        assert d["received"] + d["lost"] + d["skipped"] == d["cursor"] - d["start"]
        s.unlink()


def test_derived_arrays_keep_the_view_held(stream: xshm.Stream) -> None:
    r = stream.reader()
    stream.send(b"abcdef")
    v = r.recv_view(timeout=5)
    part = v.data[1:3]
    with pytest.raises(BufferError, match="1 array"):
        v.release()
    assert v.held and bytes(part) == b"bc"
    with pytest.raises(BufferError):
        v.__exit__(None, None, None)
    del part
    gc.collect()
    v.release()
    assert r.received == 1


def test_frame_views_timeouts_and_refusals(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="int16", shape=(2, 2)) as s:
        r = s.reader()
        member = s.reader(group="pool")
        with pytest.raises(xshm.WaitTimeoutError):
            r.recv_view(timeout=0.01)
        with pytest.raises(xshm.WaitTimeoutError):
            r.recv_view(timeout=0)
        s.send(np.arange(4, dtype=np.int16).reshape(2, 2))
        with r.recv_view(timeout=5) as v:
            assert (v.data.dtype, v.data.shape) == (np.dtype("int16"), (2, 2))
            assert v.data.tolist() == [[0, 1], [2, 3]]
        with pytest.raises(ValueError, match="group pool"):
            member.recv_view(timeout=0)
        with pytest.raises(TypeError, match=r"made by r\.recv_view"):
            xshm.MessageView()  # type: ignore[call-arg]
        s.send(np.zeros((2, 2), np.int16))
        v = r.recv_view(timeout=5)
        r.close()  # closed while held: the data stays mapped, the release moves nothing
        assert v.data.tolist() == [[0, 0], [0, 0]]
        v.release()
        member.close()
        s.unlink()


def test_a_view_held_across_its_readers_close_is_checked_at_release(stream: xshm.Stream) -> None:
    """Closed, the reader no longer holds 'block' writers back: they may reuse the viewed slot,
    and the release says so (OverwrittenError) instead of passing torn data for a message."""
    r = stream.reader()
    stream.send(b"original")
    v = r.recv_view(timeout=5)
    r.close()
    for k in range(3):
        stream.send(b"new %04d" % k, timeout=5)
    assert v.overwritten
    with pytest.raises(xshm.OverwrittenError, match="reader was closed"):
        v.release()
    r2 = stream.reader("latest")  # (at "oldest" it would hold the full ring: the send waits)
    stream.send(b"kept", timeout=5)
    v2 = r2.recv_view(timeout=5)
    r2.close()
    v2.release()  # not overwritten: nothing to say
