"""The crash campaign from Python: writers in Python processes (publish() and write() blocks)
killed with SIGKILL at random instants while reader processes and another writer run.
XSHM_PY_CRASH_ROUNDS rounds (200 here; the long campaign: 2000). The C++ campaign
(cpp/tests/crash_campaign.cpp, run by ctest) does the same at larger scale. Figures printed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import warnings
from typing import Any

import numpy as np
import xshm

ROUNDS = int(os.environ.get("XSHM_PY_CRASH_ROUNDS", "200"))
N = 8192  # 64 KiB of values: a publish takes long enough to be hit mid-write


def _consistent(values: np.ndarray[Any, Any], message: str, counter: int) -> bool:
    return bool((values == counter).all()) and message == str(counter)


def _reader(name: str, stop: Any, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True) as m:
        values = np.empty(N, dtype=np.uint64)
        reads = torn = regressions = last = 0
        while not stop.is_set():
            snap = m.read_into(values)
            reads += 1
            if not _consistent(values, snap.message, snap.counter):
                torn += 1
            regressions += snap.seq < last
            last = snap.seq
        out.put((reads, torn, regressions))


def _writer(name: str, wid: int, acks: Any, slow: bool) -> None:
    m = xshm.SharedMemoryManager.open(name)
    buf = np.empty(N, dtype=np.uint64)
    k = 0
    while True:
        k += 1
        c = (wid << 32) | k
        if k % 2:
            buf.fill(c)
            seq = m.publish(values=buf, message=str(c), counter=c)
        else:
            block = m.write()
            with block as rec:
                rec.values[:] = c
                rec.counter = c
                rec.message = str(c)
            seq = block.seq
        if acks is not None:
            # This publish returned: it must never be lost. The counter first, then the seq that
            # names the pair: a kill between the two stores leaves the new counter beside the
            # previous seq, which the check passes over (the record is past that seq); the other
            # order left the new seq beside the previous counter, read as a lost publish.
            acks[1] = c
            acks[0] = seq
        if slow:
            time.sleep(0.0005)


def test_python_writers_killed_at_random_points(seg_name: str) -> None:
    seed = int(os.environ.get("XSHM_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    fork = mp.get_context("fork")
    spawn = mp.get_context("spawn")
    acks = fork.Array("Q", 2, lock=False)
    with xshm.SharedMemoryManager.create(
        seg_name, shape=(N,), dtype="uint64", message_capacity=32
    ) as m:
        m.publish(values=np.zeros(N, dtype=np.uint64), message="0", counter=0)  # consistent start
        stop, out = spawn.Event(), spawn.Queue()
        readers = [spawn.Process(target=_reader, args=(seg_name, stop, out)) for _ in range(2)]
        other = spawn.Process(target=_writer, args=(seg_name, 0xFFFF, None, True))
        for p in [*readers, other]:
            p.start()
        kills = lost = hangs = inside = 0
        recoveries0 = m.recoveries
        values = np.empty(N, dtype=np.uint64)
        t0 = time.monotonic()
        try:
            for rnd in range(1, ROUNDS + 1):
                acks[0] = acks[1] = 0
                with warnings.catch_warnings():  # 3.12+ warns about fork() with threads
                    warnings.simplefilter("ignore", DeprecationWarning)
                    victim = fork.Process(target=_writer, args=(seg_name, rnd, acks, False))
                    victim.start()
                time.sleep(rng.uniform(0.002, 0.02))
                holding = m.owner_pid == victim.pid
                os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
                victim.join(timeout=30)
                kills += 1
                inside += holding
                snap = m.read_into(values)  # never waits
                assert _consistent(values, snap.message, snap.counter)
                acked_seq, acked_counter = acks[0], acks[1]
                if acked_seq and (snap.seq < acked_seq or m.seq < acked_seq):
                    lost += 1
                if acked_seq and snap.seq == acked_seq and snap.counter != acked_counter:
                    lost += 1
                try:
                    with m.write(timeout=5):
                        pass  # the mutex is healthy; this republishes the record unchanged
                except xshm.WaitTimeoutError:
                    hangs += 1
        finally:
            stop.set()
            other.kill()
            other.join(timeout=30)
        figures = [out.get(timeout=60) for _ in readers]
        for p in readers:
            p.join(timeout=60)
        reads = sum(f[0] for f in figures)
        torn = sum(f[1] for f in figures)
        regressions = sum(f[2] for f in figures)
        recoveries = m.recoveries - recoveries0
        print(
            f"crash campaign (Python): seed={seed} rounds={ROUNDS} kills={kills} "
            f"kills_holding_mutex={inside} recoveries={recoveries} reads={reads} torn={torn} "
            f"hangs={hangs} lost={lost} seq_regressions={regressions} "
            f"seconds={time.monotonic() - t0:.1f}"
        )
        assert torn == 0
        assert hangs == 0
        assert lost == 0
        assert regressions == 0
        assert reads > 0
        assert recoveries > 0, "no kill landed while the mutex was held: the campaign missed"
