"""The live demo (``xshm demo``): a producer and several consumers in separate processes share
one segment for a few seconds; every consumer checks every snapshot and measures how long after
each publish it held the record. Then a ping-pong measures the one-way latency the way the
benchmarks do. Then a stream: a producer sends numbered jobs to a work-queue group of workers
(each job to exactly one of them) while a monitor reads every one; each checks the order and
contents of what it got. Ends on its own and prints what it measured.

Record k (the same as cpp/examples/producer.cpp's, checked by cpp/examples/consumer.cpp):
counter k, message "tick k", values v[i] = |(i + k) % 32 - 16|, a wave that moves one step per
publish, so a snapshot mixing two publishes would show, and a sparkline of it shows the data
moving."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
from typing import Any, Callable, Optional

import numpy as np

from ._core import SharedMemoryManager, Stream
from .errors import WaitTimeoutError

PERIOD = 32  # the wave's period, in elements and in publishes


def wave(k: int, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The values of record k: |(i + k) % 32 - 16| for i in range(count)."""
    return np.abs((np.arange(count) + k) % PERIOD - PERIOD // 2)


def _producer(name: str, seconds: float, rate: float) -> None:
    with SharedMemoryManager.open(name) as m:
        count = math.prod(m.shape)
        period = 1.0 / rate
        end = time.monotonic() + seconds
        next_t = time.monotonic()
        k = 0
        while time.monotonic() < end:
            k += 1
            m.publish(values=wave(k, count).astype(m.dtype), message=f"tick {k}", counter=k)
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
        values = np.empty(m.shape, dtype=m.dtype)
        while time.monotonic() < end:
            try:
                seq = m.wait(seq, timeout=0.2)
            except WaitTimeoutError:
                continue
            snap = m.read_into(values)
            latencies.append((time.time_ns() - snap.timestamp_ns) / 1000.0)
            ok = np.array_equal(values.ravel(), wave(snap.counter, values.size))
            torn += not (ok and snap.message == f"tick {snap.counter}")
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


STREAM_JOBS = 20_000


def _job(k: int) -> bytes:
    """Job k: its number and a check value, so that a torn or mixed message would show."""
    return k.to_bytes(8, "little") + (k * 2654435761 % 2**32).to_bytes(4, "little")


def _job_number(data: bytes) -> Optional[int]:
    k = int.from_bytes(data[:8], "little")
    return k if len(data) == 12 and data == _job(k) else None


def _stream_worker(name: str, group: Optional[str], stops: int, out: Any) -> None:
    """A member of `group` (None: the monitor, which reads every job) until its `stops`-th stop
    message; checks every job's contents and that its numbers only grow."""
    with Stream.open(name, timeout=10) as s, s.reader("oldest", group=group) as r:
        got = bad = out_of_order = 0
        last = -1
        while stops > 0:
            m = r.recv(timeout=30)
            if m.data == b"stop":
                stops -= 1
                continue
            k = _job_number(m.data)
            if k is None:
                bad += 1
                continue
            out_of_order += k <= last
            last = k
            got += 1
        out.put(
            {
                "reader": f"{'worker' if group else 'monitor'} {os.getpid()}",
                "jobs": got,
                "bad": bad,
                "out_of_order": out_of_order,
                "lost": r.lost,
            }
        )


def _stream_part(workers: int, ctx: Any) -> dict[str, Any]:
    """The stream half of the demo: its figures."""
    name = f"xshm-demo-jobs-{os.getpid()}"
    s = Stream.create(name, capacity=1024, max_bytes=16)
    results: Any = ctx.Queue()
    s.reader(group="workers").close()  # the group exists before the first job: none goes by
    procs = [
        ctx.Process(target=_stream_worker, args=(name, "workers", 1, results))
        for _ in range(workers)
    ]
    procs.append(ctx.Process(target=_stream_worker, args=(name, None, workers, results)))
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 30
        while len(s.readers()) < len(procs) and time.monotonic() < deadline:
            time.sleep(0.005)
        t0 = time.perf_counter()
        for k in range(STREAM_JOBS):
            s.send(_job(k), timeout=30)
        for _ in range(workers):
            s.send(b"stop", timeout=30)  # each message to one worker: one stop each
        figures = [results.get(timeout=60) for _ in procs]  # the monitor sees every stop
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join(timeout=30)
        (group,) = s.groups()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        s.unlink()
        s.close()
    return {
        "stream": "/" + name,
        "jobs": STREAM_JOBS,
        "jobs_per_s": round(STREAM_JOBS / elapsed),
        "processes": len(procs) + 1,
        "cpus": os.cpu_count(),
        "readers": figures,
        "group": {k: group[k] for k in ("received", "lost", "skipped")},
    }


def _cpp_consumer() -> Optional[str]:
    """The C++ example consumer, when it was built (make demo, cmake) or is on PATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    cands = [os.environ.get("XSHM_CPP_CONSUMER")]
    for build in ("demo", "cpp"):
        cands.append(os.path.join(os.getcwd(), "build", build, "xshm_consumer"))
        cands.append(os.path.join(here, "..", "..", "build", build, "xshm_consumer"))
    cands.append(shutil.which("xshm_consumer"))
    for cand in cands:
        if cand and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return None


def run(
    seconds: float = 3.0,
    consumers: int = 2,
    rate: float = 1000.0,
    progress: Optional[Callable[[dict[str, Any]], None]] = None,
    pingpong_rounds: int = 2000,
) -> dict[str, Any]:
    """Runs the demo and returns its figures (also printed by ``xshm demo``). ``progress`` is
    called about twice a second with the record as it stands (seq, elapsed seconds, counter,
    message, values). ``pingpong_rounds`` = 0 skips the ping-pong."""
    from ._bench import _pingpong_xshm

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
                snap = m.read()
                progress(
                    {
                        "seq": snap.seq,
                        "elapsed": time.monotonic() - t0,
                        "counter": snap.counter,
                        "message": snap.message,
                        "values": snap.values,
                    }
                )
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
    stream = _stream_part(max(consumers, 1), ctx)
    pingpong = {}
    if pingpong_rounds:
        # The benchmark's way: two processes answer each other at once, so a reader is woken
        # the moment it sleeps (blocking) or never sleeps (spinning).
        pingpong = {
            "blocking_us": round(_pingpong_xshm(pingpong_rounds), 2),
            "spinning_us": round(_pingpong_xshm(pingpong_rounds, spin=0.1), 2),
        }
    return {
        "segment": "/" + name,
        "seconds": seconds,
        "rate": rate,
        "published": published,
        "consumers": figures,
        "torn": sum(f["torn"] for f in figures),
        "latency_us_p50": statistics.median(f["latency_us_p50"] for f in figures),
        "cpp_consumer": cpp is not None,
        "pingpong_one_way_us": pingpong,
        "stream": stream,
        "stream_errors": sum(r["bad"] + r["out_of_order"] + r["lost"] for r in stream["readers"]),
    }
