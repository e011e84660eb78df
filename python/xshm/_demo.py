"""The live demo (``xshm demo``): a producer and several consumers in separate processes share
one segment for a few seconds; every consumer checks every snapshot and measures how long after
each publish it held the record. Ends on its own and prints what it measured."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
from typing import Any, Callable, Optional

import numpy as np

from ._core import SharedMemoryManager
from .errors import WaitTimeoutError


def _producer(name: str, seconds: float, rate: float) -> None:
    with SharedMemoryManager.open(name) as m:
        buf = np.empty(m.shape)
        period = 1.0 / rate
        end = time.monotonic() + seconds
        next_t = time.monotonic()
        k = 0
        while time.monotonic() < end:
            k += 1
            buf.fill(k)
            m.publish(values=buf, message=f"tick {k}", counter=k)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _consumer(name: str, seconds: float, out: Any) -> None:
    with SharedMemoryManager.open(name, readonly=True, timeout=10) as m:
        latencies: list[float] = []
        torn = 0
        seq = m.seq
        end = time.monotonic() + seconds
        values = np.empty(m.shape)
        while time.monotonic() < end:
            try:
                seq = m.wait(seq, timeout=0.2)
            except WaitTimeoutError:
                continue
            snap = m.read_into(values)
            latencies.append((time.time_ns() - snap.timestamp_ns) / 1000.0)
            ok = bool((values == snap.counter).all()) and snap.message == f"tick {snap.counter}"
            torn += not ok
        out.put(
            {
                "consumer": f"python-{os.getpid()}",
                "updates": len(latencies),
                "torn": torn,
                "latency_us_p50": _pct(latencies, 0.5),
                "latency_us_p99": _pct(latencies, 0.99),
            }
        )


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return round(xs[int(p * (len(xs) - 1))], 1)


def _cpp_consumer() -> str | None:
    """The C++ example consumer, when it was built (cmake) or can be found on PATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (
        os.environ.get("XSHM_CPP_CONSUMER"),
        os.path.join(os.getcwd(), "build", "cpp", "xshm_consumer"),
        os.path.join(here, "..", "..", "build", "cpp", "xshm_consumer"),
        shutil.which("xshm_consumer"),
    ):
        if cand and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return None


def run(
    seconds: float = 3.0,
    consumers: int = 2,
    rate: float = 1000.0,
    progress: Optional[Callable[[int, float], None]] = None,
) -> dict[str, Any]:
    """Runs the demo and returns its figures (also printed by ``xshm demo``). ``progress`` is
    called about twice a second with the current sequence and the seconds elapsed."""
    name = f"xshm-demo-{os.getpid()}"
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    m = SharedMemoryManager.create(name)
    procs = [
        ctx.Process(target=_consumer, args=(name, seconds + 0.5, results)) for _ in range(consumers)
    ]
    cpp = _cpp_consumer()
    cpp_proc = None
    try:
        for p in procs:
            p.start()
        if cpp:
            cpp_proc = subprocess.Popen(
                [cpp, name, str(seconds + 0.5)], stdout=subprocess.PIPE, text=True
            )
        time.sleep(0.3)  # let the consumers attach
        producer = ctx.Process(target=_producer, args=(name, seconds, rate))
        producer.start()
        t0 = time.monotonic()
        while producer.is_alive():
            producer.join(timeout=0.5)
            if progress is not None:
                progress(m.seq, time.monotonic() - t0)
        figures = [results.get(timeout=seconds + 30) for _ in procs]
        producer.join(timeout=30)
        for p in procs:
            p.join(timeout=30)
        if cpp_proc is not None:
            out, _ = cpp_proc.communicate(timeout=30)
            figures.append(json.loads(out))
        published = m.seq
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if cpp_proc is not None and cpp_proc.poll() is None:
            cpp_proc.kill()
        m.unlink()
        m.close()
    return {
        "segment": "/" + name,
        "seconds": seconds,
        "published": published,
        "consumers": figures,
        "torn": sum(f["torn"] for f in figures),
        "latency_us_p50": statistics.median(f["latency_us_p50"] for f in figures),
        "cpp_consumer": cpp is not None,
    }
