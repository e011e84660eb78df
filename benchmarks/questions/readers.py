"""Readers: does the snapshot rate scale with readers? 1, 2, ... (up to the usable CPUs) reader
processes taking snapshots for a fixed time while a writer publishes at 1 kHz; the aggregate
snapshots/s, for the quickstart's `read()` + fields and for `read_into()` + fields."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import xshm

from benchmarks.common import CPUS, CTX, N, read_touched, touch
from benchmarks.peers.snapshot import _xshm_writer

APIS = ("read() + fields", "read_into() + fields")


def _rate_reader(name: str, api: str, seconds: float, go: Any, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True) as m:
        buf = np.empty(N)

        def read_into() -> Any:
            s = m.read_into(buf)
            return touch(s.counter, buf, s.message)

        fn = read_into if api == "read_into() + fields" else lambda: read_touched(m)
        out.put("ready")
        go.wait(60)  # all readers measure over the same interval
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(100):
                fn()
            n += 100
        out.put(n / seconds)


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    seconds = 0.5 if quick else 2.0
    name = f"xshm-bench-readers-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    stop = CTX.Event()
    w = CTX.Process(target=_xshm_writer, args=(name, stop, 0.0, 0.001))
    w.start()
    out: dict[str, Any] = {"writer": "1 kHz", "rows": {}}
    try:
        m.wait(0, timeout=30)
        for api in APIS:
            for k in range(1, CPUS + 1):
                q, go = CTX.Queue(), CTX.Event()
                ps = [
                    CTX.Process(target=_rate_reader, args=(name, api, seconds, go, q))
                    for _ in range(k)
                ]
                for p in ps:
                    p.start()
                for _ in ps:
                    q.get(timeout=60)
                go.set()
                rates = [q.get(timeout=60) for _ in ps]
                for p in ps:
                    p.join(timeout=60)
                out["rows"].setdefault(api, {})[str(k)] = sum(rates)
    finally:
        stop.set()
        w.join(timeout=30)
        m.unlink()
        m.close()
    return out
