"""Producers and consumers in separate (spawned) processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
import xshm

CTX = mp.get_context("spawn")


def _producer(name: str, count: int) -> None:
    with xshm.SharedMemoryManager.open(name, timeout=10) as m:
        for k in range(1, count + 1):
            m.publish(values=np.full(m.shape, float(k)), message=f"tick {k}", counter=k)
            time.sleep(0.0005)


def _consumer(name: str, until: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    with xshm.SharedMemoryManager.open(name, readonly=True, timeout=10) as m:
        seen, bad, seq = 0, 0, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seq = m.wait(seq, timeout=5)
            snap = m.read()
            seen += 1
            same = bool((snap.values == snap.counter).all())
            bad += not (same and snap.message == f"tick {snap.counter}")
            if snap.counter >= until:
                break
        out.put((seen, bad, snap.counter))


def test_one_producer_many_consumers(seg_name: str) -> None:
    xshm.SharedMemoryManager.create(seg_name).close()
    q: mp.Queue = CTX.Queue()  # type: ignore[type-arg]
    consumers = [CTX.Process(target=_consumer, args=(seg_name, 300, q)) for _ in range(3)]
    for c in consumers:
        c.start()
    producer = CTX.Process(target=_producer, args=(seg_name, 300))
    producer.start()
    results = [q.get(timeout=60) for _ in consumers]
    producer.join(timeout=60)
    for c in consumers:
        c.join(timeout=60)
    assert producer.exitcode == 0
    for seen, bad, last in results:
        assert bad == 0
        assert seen > 10
        assert last == 300


def _write_block_then_die(name: str) -> None:
    m = xshm.SharedMemoryManager.open(name)
    with m.write() as rec:
        rec.values[:] = -1
        rec.counter = 666
        os.kill(os.getpid(), signal.SIGKILL)


def test_writer_killed_inside_write_block(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(8,)) as m:
        m.publish(values=np.full(8, 5.0), message="last good", counter=5)
        p = CTX.Process(target=_write_block_then_die, args=(seg_name,))
        p.start()
        p.join(timeout=30)
        assert p.exitcode == -signal.SIGKILL
        snap = m.read()
        assert (snap.counter, snap.message) == (5, "last good")
        assert snap.values.tolist() == [5.0] * 8
        with m.write(timeout=5) as rec:  # the next writer is not wedged
            rec.counter += 1
        assert m.read().counter == 6


def _publish_big_forever(name: str) -> None:
    m = xshm.SharedMemoryManager.open(name)
    k = m.read().counter
    buf = np.empty(m.shape)
    while True:
        k += 1
        buf.fill(k)
        m.publish(values=buf, message=str(k), counter=k)


@pytest.mark.parametrize("backup", [True, False])
def test_writer_killed_at_random_points(seg_name: str, backup: bool) -> None:
    seed = int(os.environ.get("XSHM_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"seed={seed} (XSHM_SEED={seed} repeats it)")
    rng = np.random.default_rng(seed)
    recovered_torn = 0
    with xshm.SharedMemoryManager.create(seg_name, shape=(200_000,), backup=backup) as m:
        m.publish(values=np.zeros(200_000), message="0", counter=0)
        for _ in range(8):
            p = CTX.Process(target=_publish_big_forever, args=(seg_name,))
            p.start()
            start = m.seq
            m.wait(start, timeout=30)
            time.sleep(float(rng.uniform(0, 0.02)))
            os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
            p.join(timeout=30)
            try:
                snap = m.read()
            except xshm.TornRecordError:
                assert not backup, "with a backup, reads never see a torn record"
                recovered_torn += 1
                k = m.seq + 1
                m.publish(values=np.full(200_000, float(k)), message=str(k), counter=k)
                snap = m.read()
            assert (snap.values == snap.counter).all(), "snapshot is torn"
            assert snap.message == str(snap.counter)
            assert snap.seq >= start
            m.publish(counter=snap.counter)  # the next writer recovers and goes on
    print(f"backup={backup}: 8 kills, torn records reported (no backup only): {recovered_torn}")


def _hold_lock(name: str, held: Any, release: Any) -> None:
    with xshm.SharedMemoryManager.open(name) as m, m.lock():
        held.set()
        release.wait(30)


def test_publish_waits_for_another_writer_with_the_gil_released_and_interruptibly(
    seg_name: str,
) -> None:
    m = xshm.SharedMemoryManager.create(seg_name)
    held, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(seg_name, held, release))
    holder.start()
    try:
        assert held.wait(30)
        ticks: list[float] = []
        stop = threading.Event()

        def tick() -> None:  # runs only while the main thread has let go of the GIL
            while not stop.is_set():
                ticks.append(time.monotonic())
                time.sleep(0.005)

        ticker = threading.Thread(target=tick)
        ticker.start()
        threading.Timer(0.3, release.set).start()
        t0 = time.monotonic()
        assert m.publish(counter=7) == 1  # waits until the other process leaves its lock() block
        waited = time.monotonic() - t0
        stop.set()
        ticker.join()
        assert waited >= 0.25
        assert len(ticks) >= 10, "the wait for the writer lock held the GIL"
        assert m.read().counter == 7
        holder.join(30)

        # The same wait is interrupted by Ctrl-C (SIGINT), having published nothing.
        held.clear()
        release.clear()
        holder = CTX.Process(target=_hold_lock, args=(seg_name, held, release))
        holder.start()
        assert held.wait(30)
        threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            m.publish(counter=8)
        assert m.seq == 1
    finally:
        release.set()
        holder.join(30)
        m.unlink()
        m.close()
