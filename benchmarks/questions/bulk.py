"""Bulk: what does a large array cost to write and to get into another process? 64 MiB of
float64 (8 MiB with --quick). Each figure is set against one in-process `np.copyto` of the same
array measured in the same round (this VM's memory bandwidth moves by a third between minutes):
- writing: `publish(values=src)`, an empty `with m.write()` block, and a block doing
  `np.copyto(rec.values, src)` (backup on, interleaved rounds, medians of 9); the default
  record's write block and publish, in process, uncontended;
- delivery to another process: the time until a waiting reader's zero-copy view is usable, and
  the reader's `read_into()` copy, with and without the backup record."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import xshm

from benchmarks.common import CTX, SPIN, N, per_call_ns


def _bulk_reader(name: str, rounds: int, mode: str, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True, timeout=30) as m:
        dst = np.empty(m.shape, dtype=m.dtype)
        seq = m.seq
        times = []
        for _ in range(rounds):
            seq = m.wait(seq, timeout=60, spin=SPIN)
            t_seen = time.monotonic_ns()
            if mode == "read_into":
                t0 = time.perf_counter_ns()
                m.read_into(dst)
                times.append((t_seen, time.perf_counter_ns() - t0))
            else:
                _ = m.values  # the zero-copy view: the data are usable in place now
                times.append((t_seen, 0))
        out.put(times)


def _timed(fn: Any) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def write_blocks(src: Any, rounds: int) -> dict[str, Any]:
    """The write paths on the big record, backup on, one round of each in turn."""
    name = f"xshm-bench-wb-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name, shape=src.shape, backup=True)
    dst = np.empty_like(src)

    def empty_block() -> None:
        with m.write():
            pass

    def copyto_block() -> None:
        with m.write() as rec:
            np.copyto(rec.values, src)

    ns: dict[str, list[int]] = {"copy": [], "publish": [], "empty": [], "copyto": []}
    try:
        m.publish(values=src)  # the pages are touched once before the rounds
        for _ in range(rounds):
            ns["copy"].append(_timed(lambda: np.copyto(dst, src)))
            ns["publish"].append(_timed(lambda: m.publish(values=src)))
            ns["empty"].append(_timed(empty_block))
            ns["copyto"].append(_timed(copyto_block))
    finally:
        m.unlink()
        m.close()
    med = {k: statistics.median(v) / 1e6 for k, v in ns.items()}
    return {
        "rounds": rounds,
        "in-process copy ms": med["copy"],
        "publish(values=src) ms": med["publish"],
        "empty write block ms": med["empty"],
        "write block np.copyto(rec.values, src) ms": med["copyto"],
        "empty write block / copy": statistics.median(
            e / c for e, c in zip(ns["empty"], ns["copy"])
        ),
        "np.copyto write block / publish": statistics.median(
            w / p for w, p in zip(ns["copyto"], ns["publish"])
        ),
    }


def default_record(seconds: float) -> dict[str, float]:
    """The default record, in process, uncontended: the quickstart's write block and publish."""
    name = f"xshm-bench-wd-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    buf = np.ones(N)

    def block() -> None:
        with m.write() as rec:  # the README quickstart's block
            rec.values[:10] = 0.0
            rec.counter += 1
            rec.message = "zeroed"

    try:
        m.publish(values=buf, message="calibrated", counter=1)
        w = per_call_ns(block, seconds)
        p = per_call_ns(lambda: m.publish(values=buf, message="calibrated", counter=1), seconds)
    finally:
        m.unlink()
        m.close()
    return {"write block ns": w, "publish ns": p, "write block / publish": w / p}


def delivery(src: Any, rounds: int) -> dict[str, Any]:
    size = src.nbytes
    dst = np.empty_like(src)
    out: dict[str, Any] = {}
    for backup in (False, True):
        name = f"xshm-bench-bulk-{os.getpid()}-{int(backup)}"
        m = xshm.SharedMemoryManager.create(name, shape=src.shape, backup=backup)
        try:
            for mode in ("view", "read_into"):
                q = CTX.Queue()
                r = CTX.Process(target=_bulk_reader, args=(name, rounds, mode, q))
                r.start()
                time.sleep(1.0)
                round_copy: list[int] = []
                starts, publish_ns = [], []
                for _ in range(rounds):
                    round_copy.append(_timed(lambda: np.copyto(dst, src)))
                    t0 = time.monotonic_ns()
                    publish_ns.append(_timed(lambda m=m: m.publish(values=src)))  # type: ignore[misc]
                    starts.append(t0)
                    time.sleep(0.3)
                seen = q.get(timeout=120)
                r.join(timeout=60)
                tag = f"backup={'on' if backup else 'off'}"
                delivers = [s[0] - t for s, t in zip(seen, starts)]
                out[f"publish ms ({tag})"] = statistics.median(publish_ns) / 1e6
                if mode == "view":
                    out[f"view delivery ms ({tag})"] = statistics.median(delivers) / 1e6
                    out[f"view delivery / copy ({tag})"] = statistics.median(
                        d / c for d, c in zip(delivers, round_copy)
                    )
                else:
                    rins = [s[1] for s in seen]
                    out[f"read_into ms ({tag})"] = statistics.median(rins) / 1e6
                    out[f"read_into GB/s ({tag})"] = size / statistics.median(rins)
                    out[f"read_into / copy bandwidth ({tag})"] = statistics.median(
                        c / r for r, c in zip(rins, round_copy)
                    )
                out.setdefault("in-process copy ms", []).extend(round_copy)
        finally:
            m.unlink()
            m.close()
    copies = out.pop("in-process copy ms")
    return {
        "in-process copy ms": statistics.median(copies) / 1e6,
        "in-process copy GB/s": size / statistics.median(copies),
        **out,
    }


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    size = (8 if quick else 64) * 1024 * 1024
    src = np.random.default_rng(1).random(size // 8)
    return {
        "bytes": size,
        "write": write_blocks(src, 3 if quick else 9),
        "default record": default_record(0.1 if quick else 1.0),
        "delivery": delivery(src, 3 if quick else 10),
    }
