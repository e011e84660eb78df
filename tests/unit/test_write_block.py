"""`with m.write() as rec:` in place and staged: what readers see meanwhile, what an abort
restores, what the arrays handed out do after the block (read-only; derived views detached),
and the weaker in-place promise without a backup."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import random
import signal
from typing import Any

import numpy as np
import pytest
import xshm

N = 1000


def _published(m: xshm.SharedMemoryManager, v: float, msg: str, counter: int, seq: int) -> None:
    snap = m.read()
    assert snap.values.tolist() == [v] * N
    assert (snap.message, snap.counter, snap.seq, m.seq) == (msg, counter, seq, seq)


def test_in_place_writes_the_shared_record_while_readers_get_the_last_one(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        m.publish(values=np.full(N, 1.0), message="one", counter=1)
        with m.write() as rec:
            rec.values[: N // 2] = 2.0
            assert m.live_values[0] == 2.0, "in place: the live slot itself"
            _published(m, 1.0, "one", 1, 1)  # half written: the backup serves the readers
            rec.values[N // 2 :] = 2.0
            rec.counter, rec.message = 2, "two"
        _published(m, 2.0, "two", 2, 2)


@pytest.mark.parametrize("in_place", [None, True, False])
def test_a_block_that_raises_restores_everything(seg_name: str, in_place: bool | None) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        m.publish(values=np.full(N, 1.0), message="one", counter=1)

        def failing_block() -> None:
            with m.write(in_place=in_place) as rec:
                rec.values[:] = -7.0
                rec.counter, rec.message = 99, "never"
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_block()
        _published(m, 1.0, "one", 1, 1)
        assert m.live_values.tolist() == [1.0] * N, "the live slot was restored"
        with m.write() as rec:  # the mutex was released
            rec.counter = 2
        _published(m, 1.0, "one", 2, 2)


def test_a_block_entered_and_never_exited_is_aborted(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        m.publish(values=np.full(N, 1.0), counter=1)
        block = m.write()
        rec = block.__enter__()
        rec.values[:] = 5.0
        del block, rec
        gc.collect()
        _published(m, 1.0, "", 1, 1)
        assert m.live_values.tolist() == [1.0] * N
        m.publish(counter=2)  # the mutex was released


@pytest.mark.parametrize("in_place", [None, False])
def test_arrays_handed_out_are_read_only_after_the_block(
    seg_name: str, in_place: bool | None
) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        with m.write(in_place=in_place) as rec:
            v = rec.values
            v[:] = 3.0
            assert v.flags.writeable
        assert not v.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            v[0] = 9.0
        with pytest.raises(ValueError, match="WRITEABLE"):
            v.setflags(write=True)
        with pytest.raises(xshm.ArgumentError, match="ended"):
            _ = rec.values
        assert v.tolist() == [3.0] * N, "the values as the block left them"
        _published(m, 3.0, "", 0, 1)
        # A change after the block would be lost without a word: every setter refuses it.
        with pytest.raises(xshm.ArgumentError, match="ended"):
            rec.counter = 5
        with pytest.raises(xshm.ArgumentError, match="ended"):
            rec.message = "late"
        with pytest.raises(xshm.ArgumentError, match="ended"):
            rec.set_message("late")
        assert rec.counter == 0, "the counter the block published"
        _published(m, 3.0, "", 0, 1)


@pytest.mark.parametrize("in_place", [None, False])
def test_derived_views_outlive_the_block_detached(seg_name: str, in_place: bool | None) -> None:
    """numpy cannot revoke a derived view's writeable flag: a slice kept after the block stays
    writeable, but it no longer reaches the record: it shows the values as the block left them
    and a write through it stays private to this process."""
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        with m.write(in_place=in_place) as rec:
            rec.values[:] = 3.0
            part = rec.values[10:20]
            grid = rec.values.reshape(10, 100)
            raw = memoryview(rec.values)
        assert part.flags.writeable and grid.flags.writeable
        part[:] = 99.0
        grid[0, 0] = 98.0
        raw[500] = 97.0
        _published(m, 3.0, "", 0, 1)
        assert m.live_values.tolist() == [3.0] * N, "nothing reached the shared record"
        assert part.tolist() == [99.0] * 10 and grid[0, 0] == 98.0 and raw[500] == 97.0
        with m.write() as rec:  # the next block writes the record again
            rec.values[:] = 4.0
        _published(m, 4.0, "", 0, 2)
        assert part.tolist() == [99.0] * 10 and grid[0, 1] == 3.0, "detached from later blocks"
        part[:] = 0.0  # no fault, whenever it comes
        del part, grid, raw
        gc.collect()
        _published(m, 4.0, "", 0, 2)


def test_views_kept_past_a_close_inside_the_block_are_detached_too(seg_name: str) -> None:
    m = xshm.SharedMemoryManager.create(seg_name, shape=(N,))
    with m.write() as rec:
        part = rec.values[:4]
        part[:] = 5.0
        m.close()
    part[:] = 6.0
    with xshm.SharedMemoryManager.open(seg_name) as r:
        assert r.read().values[:4].tolist() == [5.0] * 4
        assert r.live_values[:4].tolist() == [5.0] * 4
    assert part.tolist() == [6.0] * 4


def test_views_dropped_inside_the_block_leave_the_window_shared(seg_name: str) -> None:
    """The common path: nothing outlives the block, so the next block reuses the same window
    (the same address) without mapping or copying anything."""
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        addresses = set()
        for k in range(3):
            with m.write() as rec:
                rec.values[:] = float(k)
                addresses.add(rec.values.__array_interface__["data"][0])
            _published(m, float(k), "", 0, k + 1)
        assert len(addresses) == 1


def test_without_a_backup_blocks_are_staged_by_default(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,), backup=False) as m:
        m.publish(values=np.full(N, 1.0), message="one", counter=1)
        with m.write() as rec:
            rec.values[:] = 2.0
            assert m.live_values[0] == 1.0, "staged: a private copy"
            _published(m, 1.0, "one", 1, 1)
        _published(m, 2.0, "one", 1, 2)


def test_in_place_without_a_backup_stalls_readers_and_an_abort_tears(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,), backup=False) as m:
        m.publish(values=np.full(N, 1.0), message="one", counter=1)
        r = xshm.SharedMemoryManager.open(seg_name, stall_timeout=0.02)
        with m.write(in_place=True) as rec:
            rec.values[:] = 2.0
            assert m.live_values[0] == 2.0
            with pytest.raises(xshm.TornRecordError, match="stalled"):
                r.read()
        _published(m, 2.0, "one", 1, 2)

        def failing_block() -> None:
            with m.write(in_place=True) as rec:
                rec.values[0] = 9.0
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_block()
        with pytest.raises(xshm.TornRecordError):
            r.read()
        with pytest.raises(xshm.TornRecordError), m.write():
            pass
        m.publish(values=np.full(N, 4.0), message="four", counter=4)
        _published(m, 4.0, "four", 4, 3)
        r.close()


# ---- a writer killed inside in-place blocks while a reader checks every snapshot ----


def _fill_blocks_then_die(name: str, base: int, blocks: int) -> None:
    m = xshm.SharedMemoryManager.open(name)
    for k in range(1, blocks + 2):
        with m.write() as rec:
            c = base + k
            rec.values[: N // 2] = c
            if k > blocks:
                os.kill(os.getpid(), signal.SIGKILL)  # half filled, the live slot odd
            rec.values[N // 2 :] = c
            rec.counter, rec.message = c, str(c)


def _check_snapshots(name: str, stop: Any, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True) as m:
        reads = bad = 0
        while not stop.is_set():
            snap = m.read()
            reads += 1
            same = bool((snap.values == snap.counter).all())
            bad += not (same and snap.message == str(snap.counter))
        out.put((reads, bad))


def test_readers_never_see_a_half_written_block_of_a_killed_writer(seg_name: str) -> None:
    seed = int(os.environ.get("XSHM_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    ctx = mp.get_context("fork")
    with xshm.SharedMemoryManager.create(seg_name, shape=(N,)) as m:
        m.publish(values=np.zeros(N), message="0", counter=0)
        stop, out = ctx.Event(), ctx.Queue()
        reader = ctx.Process(target=_check_snapshots, args=(seg_name, stop, out))
        reader.start()
        base = 0
        rounds = 10
        for _ in range(rounds):
            blocks = rng.randrange(100)
            p = ctx.Process(target=_fill_blocks_then_die, args=(seg_name, base, blocks))
            p.start()
            p.join(timeout=60)
            assert p.exitcode == -signal.SIGKILL
            base += blocks + 1
        with m.write(timeout=5) as rec:
            rec.values[:] = base
            rec.counter, rec.message = base, str(base)
        stop.set()
        reads, bad = out.get(timeout=60)
        reader.join(timeout=60)
        print(f"{rounds} writers killed inside a block, {reads} reads, {bad} inconsistent")
        assert bad == 0
        assert reads > 0
        assert m.recoveries == rounds
        _published(m, float(base), str(base), base, m.seq)
