"""Frames: how fast do large frames go from one process to another through a stream? 4 MiB
float32 frames (1024 x 1024; 1 MiB with --quick), a 'block' stream of 4 slots, one writer
process and one reader process. Each round sets the end-to-end bandwidth against one in-process
`np.copyto` of the frame measured in the same round (this VM's memory bandwidth moves by a third
between minutes), into a ring of 4 frames as the stream's 4 slots are: the same copy, the same
footprint, one process. (Copying into the same destination every time, also shown, measures the
cache: 4 MiB stays in this CPU's L3, and that row runs ~1.7x faster than either.)
- zero-copy: the writer fills each frame in place (`with s.claim() as buf: np.copyto(buf, src)`,
  then stamps the frame's number in its first and last value), the reader reads it in place
  (`with r.recv_view() as v:` and checks both stamps): the writer's fill is the only copy;
- copying, for comparison: `s.send(frame)` / `r.recv()` (the send copies into the slot, the
  receive into a new array).
End to end: frames * bytes over the span from the reader's frame WARM (two laps of the ring: the
first touches of each mapping's pages, a page fault per 4 KiB, are start-up) to its last."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import xshm

from benchmarks.common import CTX

SLOTS = 4
WARM = 2 * SLOTS
ZERO_COPY = "xshm claim / recv_view"
COPYING = "xshm send / recv"
RING_COPY = "in-process copy, ring of 4 frames"
HOT_COPY = "in-process copy, same destination"


def _writer(name: str, n: int, mode: str, ready: Any, go: Any) -> None:
    with xshm.Stream.open(name, timeout=30) as s:
        src = np.random.default_rng(1).random(s.shape, dtype=np.float32)
        ready.release()
        go.wait(60)
        for k in range(n):
            if mode == "zero-copy":
                with s.claim(timeout=60) as buf:
                    np.copyto(buf, src)
                    buf.flat[0] = buf.flat[-1] = k
            else:
                src.flat[0] = src.flat[-1] = k
                s.send(src, timeout=60)


def _reader(name: str, n: int, mode: str, ready: Any, out: Any) -> None:
    with xshm.Stream.open(name, timeout=30) as s, s.reader("latest") as r:
        ready.release()
        first = last = 0
        bad = 0
        for k in range(n):
            if mode == "zero-copy":
                with r.recv_view(timeout=60) as v:
                    bad += v.data.flat[0] != k or v.data.flat[-1] != k
            else:
                m = r.recv(timeout=60)
                bad += m.data.flat[0] != k or m.data.flat[-1] != k
            last = time.perf_counter_ns()
            if k == WARM:
                first = last
        out.put({"ns": last - first, "bad": int(bad), "lost": r.lost})


def _one(shape: tuple[int, int], n: int, mode: str) -> dict[str, float]:
    name = f"xshm-bench-frames-{os.getpid()}"
    s = xshm.Stream.create(name, SLOTS, dtype="float32", shape=shape)
    ready, go, out = CTX.Semaphore(0), CTX.Event(), CTX.Queue()
    procs = [
        CTX.Process(target=_reader, args=(name, n, mode, ready, out)),
        CTX.Process(target=_writer, args=(name, n, mode, ready, go)),
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise TimeoutError("the frame writer or reader did not start")
        go.set()
        r = out.get(timeout=300)
        for p in procs:
            p.join(60)
            if p.exitcode != 0:
                raise RuntimeError(f"a frame process ended with exit code {p.exitcode}")
        if r["bad"] or r["lost"]:
            raise RuntimeError(f"{r['bad']} frames with wrong stamps, {r['lost']} lost")
        nbytes = s.max_bytes
        timed = n - 1 - WARM
        return {"gb_s": timed * nbytes / r["ns"], "frames_s": timed / (r["ns"] / 1e9)}
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        s.unlink()
        s.close()


def _copy_gb_s(shape: tuple[int, int], frames: int) -> float:
    """One in-process copy of a frame into the next of `frames` destinations, GB/s (median)."""
    src = np.random.default_rng(2).random(shape, dtype=np.float32)
    dsts = [np.zeros_like(src) for _ in range(frames)]  # touched: no page faults in the timing
    times = []
    for k in range(41):
        t0 = time.perf_counter_ns()
        np.copyto(dsts[k % frames], src)
        times.append(time.perf_counter_ns() - t0)
    return src.nbytes / statistics.median(times[frames:])


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    shape = (512, 512) if quick else (1024, 1024)
    rounds, n = (1, 40) if quick else (5, 300)
    per_round: dict[str, list[float]] = {RING_COPY: [], HOT_COPY: [], ZERO_COPY: [], COPYING: []}
    frames_s: dict[str, list[float]] = {ZERO_COPY: [], COPYING: []}
    for r in range(rounds):
        per_round[RING_COPY].append(_copy_gb_s(shape, SLOTS))
        per_round[HOT_COPY].append(_copy_gb_s(shape, 1))
        for label in (ZERO_COPY, COPYING) if r % 2 == 0 else (COPYING, ZERO_COPY):
            got = _one(shape, n, "zero-copy" if label == ZERO_COPY else "copying")
            per_round[label].append(got["gb_s"])
            frames_s[label].append(got["frames_s"])
    return {
        "bytes": shape[0] * shape[1] * 4,
        "frames": n,
        "rows": {
            label: {
                "gb_s": statistics.median(xs),
                "per_round": xs,
                "frames_s": statistics.median(frames_s[label]) if label in frames_s else None,
                "rounds": len(xs),
            }
            for label, xs in per_round.items()
        },
    }
