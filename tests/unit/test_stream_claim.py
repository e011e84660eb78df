"""Zero-copy sends from Python: `with s.claim(n) as buf:` hands out a numpy array over the slot
itself (its address lies inside the stream's mapping: a claim that staged and copied would fail
here), sends it when the block ends, drops it when the block raises (readers count the number
`skipped`), refuses to end while arrays derived from it exist (BufferError, the claim staying
open), and leaves the handed-out array reading zeros and refusing writes once it has ended."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest
import xshm


@pytest.fixture
def stream(seg_name: str) -> Iterator[xshm.Stream]:
    with xshm.Stream.create(seg_name, 4, max_bytes=64) as s:
        yield s
        s.unlink()


def _mappings(name: str) -> list[tuple[int, int]]:
    """This process's mappings of the segment `name`, as (start, end) address ranges."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip("\n").endswith(f"/dev/shm/{name}"):
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def _inside(a: np.ndarray, name: str) -> bool:
    lo = a.ctypes.data
    return any(start <= lo and lo + a.nbytes <= end for start, end in _mappings(name))


def _accounted(s: xshm.Stream) -> None:
    for d in s.readers():
        assert d["received"] + d["lost"] + d["skipped"] == d["cursor"] - d["start"], d


def test_claim_is_the_slot_itself_and_is_sent_when_the_block_ends(stream: xshm.Stream) -> None:
    r = stream.reader()
    with stream.claim(5) as buf:
        assert isinstance(buf, np.ndarray) and buf.dtype == np.uint8 and buf.shape == (5,)
        assert buf.flags.writeable
        assert _inside(buf, stream.name[1:]), "the claim's buffer is not in the stream's mapping"
        assert r.try_recv() is None, "sent before the block ended"
        buf[:] = np.frombuffer(b"hello", np.uint8)
    m = r.recv(timeout=5)
    assert (m.data, m.seq) == (b"hello", 0)
    assert not buf.flags.writeable and not buf.any(), "the ended claim's array still shows the slot"
    with pytest.raises(ValueError, match="read-only"):
        buf[0] = 1
    _accounted(stream)


def test_commit_fewer_bytes_than_claimed(stream: xshm.Stream) -> None:
    r = stream.reader()
    c = stream.claim()
    assert (c.nbytes, c.seq, c.open) == (64, 0, True)
    with c as buf:
        buf[:3] = 7
        c.commit(3)
        assert not c.open
    assert r.recv(timeout=5).data == b"\x07\x07\x07"
    with pytest.raises(xshm.ClosedError, match="has ended"):
        c.array  # noqa: B018
    c2 = stream.claim(8)
    with pytest.raises(ValueError, match="the claim has 8"):
        c2.commit(9)
    assert c2.open, "a refused commit ends the claim"
    c2.commit(0)
    assert r.recv(timeout=5).data == b""


def test_a_block_that_raises_sends_nothing_and_readers_skip_its_number(stream: xshm.Stream) -> None:
    r = stream.reader()

    def fill_then_fail() -> None:
        with stream.claim(4) as buf:
            buf[:] = 1
            raise KeyError("the user's")

    with pytest.raises(KeyError, match="the user's"):
        fill_then_fail()
    stream.send(b"after")
    m = r.recv(timeout=5)
    assert (m.data, m.seq) == (b"after", 1)
    assert (r.received, r.lost, r.skipped, r.cursor) == (1, 0, 1, 2)
    _accounted(stream)


def test_drop_and_a_forgotten_claim_send_nothing(stream: xshm.Stream) -> None:
    r = stream.reader()
    c = stream.claim(2)
    c.drop()
    c.drop()  # idempotent
    assert not c.open
    forgotten = stream.claim(2)
    forgotten.array[:] = 9
    del forgotten
    gc.collect()
    stream.send(b"x")
    assert r.recv(timeout=5).seq == 2
    assert r.skipped == 2


def test_derived_arrays_hold_the_claim_open(stream: xshm.Stream) -> None:
    """As memoryview.release(): ending a claim while a view of its buffer exists raises
    BufferError and leaves the claim open (its slot held, so the view never aliases another
    message); once the view is gone the claim ends."""
    r = stream.reader()
    c = stream.claim(8)
    views = []

    def keep_a_view(c: xshm.StreamClaim, fail: bool) -> None:
        with c as buf:
            buf[:] = 3
            views.append(buf[2:4].reshape(2, 1))
            if fail:
                raise ZeroDivisionError

    with pytest.raises(BufferError, match="1 array"):
        keep_a_view(c, fail=False)
    assert c.open and r.try_recv() is None
    view = views.pop()
    assert view.flags.writeable and (view == 3).all(), "the view lost the slot, the claim open"
    del view
    c.commit()
    assert r.recv(timeout=5).data == b"\x03" * 8
    # With the user's exception in flight nothing masks it: the claim stays open while the
    # derived array lives, until it is dropped, or every reference to it (the claim object
    # and the arrays) has gone.
    c = stream.claim(8)
    with pytest.raises(ZeroDivisionError):
        keep_a_view(c, fail=True)
    assert c.open
    with pytest.raises(BufferError):
        c.drop()
    del c
    gc.collect()
    assert r.try_recv() is None, "the claim ended while an array over its slot lived"
    views.clear()
    gc.collect()
    stream.send(b"next")
    m = r.recv(timeout=5)
    assert (m.data, m.seq, r.skipped) == (b"next", 2, 1)


def test_frame_claims_are_the_frame(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, dtype="float32", shape=(2, 3)) as s:
        r = s.reader()
        with s.claim() as frame:
            assert (frame.dtype, frame.shape) == (np.dtype("float32"), (2, 3))
            assert _inside(frame, seg_name)
            frame[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
        got = r.recv(timeout=5).data
        assert np.array_equal(got, np.arange(6, dtype=np.float32).reshape(2, 3))
        with pytest.raises(ValueError, match="one whole frame"):
            s.claim(4)
        c = s.claim()
        with pytest.raises(ValueError, match="sent whole"):
            c.commit(4)
        c.drop()
        s.unlink()


def test_try_claim_and_timeouts_on_a_full_block_stream(stream: xshm.Stream) -> None:
    r = stream.reader()
    for k in range(4):
        stream.send(bytes([k]))
    assert stream.try_claim(1) is None
    with pytest.raises(xshm.StreamFullError):
        stream.claim(1, timeout=0.05)
    with pytest.raises(xshm.StreamFullError):
        stream.claim(1, timeout=0)
    r.recv(timeout=5)
    c = stream.try_claim(1)
    assert c is not None and c.seq == 4
    c.drop()


def test_bad_claims_are_typed_errors(stream: xshm.Stream, seg_name: str) -> None:
    with pytest.raises(xshm.MessageTooLongError, match="64"):
        stream.claim(65)
    with pytest.raises(TypeError, match="nbytes must be an integer"):
        stream.claim("8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"made by s\.claim"):
        xshm.StreamClaim()  # type: ignore[call-arg]
    with xshm.Stream.open(seg_name, readonly=True) as ro, pytest.raises(xshm.ReadOnlyError):
        ro.claim(1)
    c = stream.claim(1)
    with pytest.raises(TypeError, match="nbytes must be an integer"):
        c.commit(1.5)  # type: ignore[arg-type]
    assert "open" in repr(c)
    c.drop()
    assert "ended" in repr(c)


def test_an_open_claim_holds_back_the_readers_behind_it(stream: xshm.Stream) -> None:
    r = stream.reader()
    c = stream.claim(1)
    stream.send(b"behind")
    assert r.try_recv() is None, "a reader passed an open claim"
    with c as buf:
        buf[0] = 65
    assert [m.data for m in r.recv_many(4, timeout=5)] == [b"A", b"behind"]


def test_an_ended_claim_reaches_the_slot_through_nothing(stream: xshm.Stream) -> None:
    """After the block, neither the array nor its base (buf.base) reaches the slot, and numpy
    refuses to make it writable again (a write would land in the read-only zeros)."""
    r = stream.reader()
    with stream.claim(8) as buf:
        buf[:] = ord("1")
    assert not buf.base.flags.writeable and not buf.base.any()
    with pytest.raises(ValueError, match="WRITEABLE"):
        buf.setflags(write=True)
    stream.send(b"22222222")
    assert [m.data for m in r.recv_many(4, timeout=5)] == [b"11111111", b"22222222"]
