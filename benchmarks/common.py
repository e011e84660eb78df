"""What every question of the benchmarks shares: the record they move, the one definition of
"a snapshot read with its fields touched" (xshm._bench.touch, which `xshm bench` uses too), the
machine's CPUs, and the statistics (percentiles of one round, medians over rounds)."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xshm
from xshm._bench import N, read_touched, touch

__all__ = [
    "CPUS",
    "CTX",
    "ONE_CPU_NOTE",
    "RECORD_BYTES",
    "ROOT",
    "SPIN",
    "N",
    "machine",
    "median_ratio",
    "per_call_ns",
    "percentiles",
    "pooled",
    "read_touched",
    "touch",
]

ROOT = Path(__file__).resolve().parents[1]
RECORD_BYTES = N * 8 + 64  # the default record: 100 float64 + a message
SPIN = 0.1  # seconds a spinning waiter polls before it sleeps
FAST_WAKE_NS = 10_000  # a one-way hop under this took the fast wake-up (2-3 us, not 20-25 us)
CTX = mp.get_context("spawn")
# The CPUs this process may run on (taskset, cgroup cpusets), which can be fewer than the
# machine has. A spinning ping-pong needs two: on one, each hop waits for the scheduler to
# preempt the spinner (milliseconds), which measures the scheduler and takes many minutes.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
ONE_CPU_NOTE = f"skipped: a spinning ping-pong needs two CPUs; this run may use {CPUS}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable cpus": CPUS,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "xshm": xshm.__version__,
    }


def percentiles(one_way_ns: list[float]) -> dict[str, float]:
    """One round's percentiles, and the share of hops that took the fast wake-up."""
    a = np.sort(np.asarray(one_way_ns))
    return {
        "p50_ns": float(np.percentile(a, 50)),
        "p99_ns": float(np.percentile(a, 99)),
        "p999_ns": float(np.percentile(a, 99.9)),
        "fast_share": float(np.mean(a < FAST_WAKE_NS)),
    }


def pooled(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Medians over rounds of each round's figures."""
    keys = [k for k in ("p50_ns", "p99_ns", "p999_ns", "fast_share") if all(k in r for r in rounds)]
    out = {k: statistics.median(r[k] for r in rounds) for k in keys}
    out["rounds"] = len(rounds)
    return out


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a/b, each round's a against the same round's b."""
    return statistics.median(x / y for x, y in zip(a, b))


def per_call_ns(fn: Callable[[], Any], seconds: float, batch: int = 200) -> float:
    """Median of the per-call means of batches of `batch` calls, run for about `seconds`."""
    means = []
    end = time.perf_counter() + seconds
    while len(means) < 5 or time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        means.append((time.perf_counter_ns() - t0) / batch)
    return statistics.median(means)
