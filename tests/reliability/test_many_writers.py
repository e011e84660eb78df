"""Several writers and readers at once, in separate processes: 4 writers (publish() and write()
blocks), 4 readers. Every snapshot must be internally consistent, each writer's counters must be
seen in order, and everything must finish (a watchdog bounds every join)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np
import xshm

CTX = mp.get_context("spawn")
WRITERS, READERS = 4, 4
PER_WRITER = int(os.environ.get("XSHM_MANY_WRITERS_PUBLISHES", "1500"))


def _writer(name: str, wid: int, n: int) -> None:
    with xshm.SharedMemoryManager.open(name, timeout=10) as m:
        buf = np.empty(m.shape, dtype=np.uint64)
        for k in range(1, n + 1):
            c = (wid << 32) | k
            if k % 2:
                buf.fill(c)
                m.publish(values=buf, message=str(c), counter=c)
            else:
                with m.write(timeout=30) as rec:
                    rec.values[:] = c
                    rec.counter = c
                    rec.message = str(c)


def _reader(name: str, stop: Any, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True, timeout=10) as m:
        last_k = [0] * (WRITERS + 1)
        reads = torn = out_of_order = 0
        last_seq = 0
        values = np.empty(m.shape, dtype=np.uint64)
        while not stop.is_set():
            snap = m.read_into(values)
            reads += 1
            if snap.seq == 0:
                continue
            c = snap.counter
            if not ((values == c).all() and snap.message == str(c)):
                torn += 1
                continue
            wid, k = c >> 32, c & 0xFFFFFFFF
            if k < last_k[wid] or snap.seq < last_seq:
                out_of_order += 1
            last_k[wid] = max(last_k[wid], k)
            last_seq = snap.seq
        out.put((reads, torn, out_of_order, sum(1 for k in last_k if k)))


def test_four_writers_four_readers(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(1024,), dtype="uint64") as m:
        stop, results = CTX.Event(), CTX.Queue()
        readers = [
            CTX.Process(target=_reader, args=(seg_name, stop, results)) for _ in range(READERS)
        ]
        writers = [
            CTX.Process(target=_writer, args=(seg_name, w, PER_WRITER))
            for w in range(1, WRITERS + 1)
        ]
        for p in readers + writers:
            p.start()
        t0 = time.monotonic()
        for p in writers:
            p.join(timeout=300)  # watchdog: a deadlock fails the test instead of hanging CI
        assert all(p.exitcode == 0 for p in writers), [p.exitcode for p in writers]
        elapsed = time.monotonic() - t0
        stop.set()
        figures = [results.get(timeout=60) for _ in readers]
        for p in readers:
            p.join(timeout=60)
        assert m.seq == WRITERS * PER_WRITER, "every publish counted once"
        reads = sum(f[0] for f in figures)
        torn = sum(f[1] for f in figures)
        disorder = sum(f[2] for f in figures)
        print(
            f"writers={WRITERS} readers={READERS} publishes={m.seq} reads={reads} torn={torn} "
            f"out_of_order={disorder} seconds={elapsed:.1f}"
        )
        assert torn == 0
        assert disorder == 0
        assert reads > 0
