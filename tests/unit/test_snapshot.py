"""read()'s recycling: a snapshot nobody holds is filled again (a read is a copy into an
existing buffer), and a snapshot, array or view anybody still holds never changes."""

from __future__ import annotations

import gc
import threading

import numpy as np
import xshm


def _publish(m: xshm.SharedMemoryManager, k: int) -> None:
    m.publish(values=np.full(m.shape, float(k)), message=f"m{k}", counter=k)


def _same(snap: xshm.Snapshot, k: int, n: int) -> None:
    assert snap.values.tolist() == [float(k)] * n
    assert (snap.message, snap.counter) == (f"m{k}", k)


def test_a_held_snapshot_never_changes(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(8,)) as m:
        _publish(m, 1)
        held = m.read()
        seq = held.seq
        for k in range(2, 5):
            _publish(m, k)
            _same(m.read(), k, 8)
            _same(held, 1, 8)
            assert held.seq == seq


def test_held_arrays_and_views_never_change(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(8,)) as m:
        _publish(m, 1)
        values = m.read().values  # the snapshot goes, its array stays
        _publish(m, 2)
        _same(m.read(), 2, 8)
        assert values.tolist() == [1.0] * 8
        part = m.read().values[2:4]  # a slice outlives its array and snapshot
        raw = memoryview(m.read().values)
        grid = np.frombuffer(m.read().values, dtype=np.float64)
        for k in range(3, 6):
            _publish(m, k)
            _same(m.read(), k, 8)
        assert values.tolist() == [1.0] * 8
        assert part.tolist() == [2.0] * 2
        assert raw.tolist() == [2.0] * 8
        assert grid.tolist() == [2.0] * 8


def test_a_snapshot_nobody_holds_is_reused(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(8,)) as m:
        _publish(m, 1)
        first = id(m.read())
        address = m.read().values.__array_interface__["data"][0]
        _publish(m, 2)
        snap = m.read()
        assert id(snap) == first, "the same object, filled again"
        assert snap.values.__array_interface__["data"][0] == address, "the same buffer"
        _same(snap, 2, 8)
        assert address % 64 == 0, "values buffers are 64-byte aligned"
        assert m.read().message is m.read().message, "the same bytes: the same str"
        assert m.read().counter is m.read().counter, "the same counter: the same int"


def test_fields_follow_the_record(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(2,)) as m:
        for c, msg in [(2**64 - 1, "big"), (7, "seven"), (7, "seven again"), (2**40, "")]:
            m.publish(values=[1.0, float(c % 5)], message=msg, counter=c)
            s = m.read()
            into = m.read_into(np.empty(2))
            assert (s.counter, s.message, into.counter, into.message) == (c, msg, c, msg)
            assert s.values.tolist() == into.values.tolist() == [1.0, float(c % 5)]


def test_snapshots_of_several_threads_are_their_own(seg_name: str) -> None:
    """Large records release the GIL while they copy: each read has its own buffer."""
    n = 1 << 16
    with xshm.SharedMemoryManager.create(seg_name, shape=(n,)) as m:
        stop = threading.Event()
        bad: list[int] = []

        def reader() -> None:
            while not stop.is_set():
                s = m.read()
                v = s.values
                if not (v == s.counter).all():
                    bad.append(s.counter)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for k in range(1, 200):
            m.publish(values=np.full(n, float(k)), counter=k)
        stop.set()
        for t in threads:
            t.join()
        assert bad == []
        gc.collect()


def test_an_array_changed_in_place_is_not_recycled(seg_name: str) -> None:
    # A user who dropped the snapshot may have reshaped, retyped or frozen its array in place
    # first: the next read() must still hand out a fresh, writeable array of the segment's
    # shape and dtype.
    changes = [
        lambda v: setattr(v, "shape", (2, 4)),
        lambda v: setattr(v, "dtype", np.int64),
        lambda v: v.setflags(write=False),
    ]
    with xshm.SharedMemoryManager.create(seg_name, shape=(8,)) as m:
        for k, change in enumerate(changes, start=1):
            _publish(m, k)

            def drop_after_change(change: object = change) -> None:
                change(m.read().values)  # type: ignore[operator]

            drop_after_change()
            gc.collect()
            snap = m.read()
            assert snap.values.shape == (8,)
            assert snap.values.dtype == np.float64
            assert snap.values.flags.writeable
            _same(snap, k, 8)
