"""Work-queue peers: 2 writer processes share `n` messages of `size` bytes between them, and a pool
of 2 worker processes takes them, each message by exactly one worker. xshm: a 'block' stream read
by a group of 2 (`s.reader(group=...)`); faster-fifo: one queue with 2 producers and 2 consumers,
as its users run a pool. One message per call on both sides.

Each worker reports how many messages it took and the monotonic times of its first and last; the
rate is all messages over the span from the first taken by any worker to the last taken by any
(process start-up is not in it). The round fails unless the workers took exactly `n` between
them (each exactly once: a duplicate or a loss would show in the sum). When the writers are done
the parent sends one stop message per worker; a worker leaves at the first it takes."""

from __future__ import annotations

import os
import queue
import time
from typing import Any, Callable

import xshm

from benchmarks.common import CTX
from benchmarks.peers.streams import CAPACITY, MissedMessages, _ff_queue

WRITERS = 2
WORKERS = 2
STOP = b"stop"
GROUP = "workers"

# (writer, worker, handle for the children, stop(handle), cleanup)
Pool = tuple[
    Callable[..., None], Callable[..., None], Any, Callable[[Any], None], Callable[[], None]
]


def _xshm_writer(name: str, n: int, size: int, ready: Any, go: Any) -> None:
    s = xshm.Stream.open(name, timeout=30)
    msg = b"x" * size
    send = s.send
    ready.release()
    go.wait(60)
    for _ in range(n):
        send(msg)


def _xshm_worker(name: str, ready: Any, out: Any) -> None:
    s = xshm.Stream.open(name, timeout=30)
    r = s.reader("oldest", group=GROUP)
    ready.release()
    recv = r.recv
    got, first, last = 0, 0, 0
    while True:
        m = recv(timeout=120)
        if m.data == STOP:
            break
        last = time.perf_counter_ns()
        if got == 0:
            first = last
        got += 1
    lost = r.lost
    r.close()
    out.put({"got": got, "first": first, "last": last, "lost": lost})


def _ff_writer(q: Any, n: int, size: int, ready: Any, go: Any) -> None:
    msg = b"x" * size
    put = q.put
    ready.release()
    go.wait(60)
    for _ in range(n):
        put(msg, block=True, timeout=60)


def _ff_worker(q: Any, ready: Any, out: Any) -> None:
    ready.release()
    get = q.get
    got, first, last = 0, 0, 0
    while True:
        m = get(block=True, timeout=120)
        if m == STOP:
            break
        last = time.perf_counter_ns()
        if got == 0:
            first = last
        got += 1
    out.put({"got": got, "first": first, "last": last, "lost": 0})


def xshm_pool(size: int) -> Pool:
    name = f"xshm-bench-wq-{os.getpid()}"
    s = xshm.Stream.create(name, capacity=CAPACITY, max_bytes=size, backpressure="block")

    def stop(_: Any) -> None:
        for _ in range(WORKERS):
            s.send(STOP, timeout=60)

    return _xshm_writer, _xshm_worker, s.name, stop, lambda: (s.unlink(), s.close())


def ff_pool(size: int) -> Pool:
    q = _ff_queue()

    def stop(_: Any) -> None:
        for _ in range(WORKERS):
            q.put(STOP, block=True, timeout=60)

    return _ff_writer, _ff_worker, q, stop, lambda: None


def _report(out: Any, workers: list[Any]) -> dict[str, Any]:
    """The next worker's report; an error as soon as a worker died without one."""
    end = time.monotonic() + 300
    while time.monotonic() < end:
        try:
            report: dict[str, Any] = out.get(timeout=0.5)
            return report
        except queue.Empty:
            failed = [p.exitcode for p in workers if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a worker ended with exit code {failed[0]}") from None
    raise TimeoutError("a worker reported nothing for 300 s")


def work_queue(setup: Callable[[int], Pool], n: int, size: int) -> dict[str, float]:
    """One round: messages per second through the pool, from the first taken to the last."""
    writer, worker, handle, stop, cleanup = setup(size)
    ready, go, out = CTX.Semaphore(0), CTX.Event(), CTX.Queue()
    workers = [CTX.Process(target=worker, args=(handle, ready, out)) for _ in range(WORKERS)]
    share = [n // WRITERS + (1 if k < n % WRITERS else 0) for k in range(WRITERS)]
    writers = [
        CTX.Process(target=writer, args=(handle, share[k], size, ready, go)) for k in range(WRITERS)
    ]
    try:
        for p in workers + writers:
            p.start()
        for _ in workers + writers:  # every process started and attached: then all go at once
            if not ready.acquire(timeout=60):
                raise TimeoutError("a worker or writer did not start")
        go.set()
        for p in writers:
            p.join(300)
            if p.exitcode != 0:
                raise RuntimeError(f"a writer ended with exit code {p.exitcode}")
        stop(handle)
        reports = [_report(out, workers) for _ in workers]
        for p in workers:
            p.join(60)
        got = sum(r["got"] for r in reports)
        if got != n:
            raise MissedMessages(f"the workers took {got} of {n} messages")
        span = max(r["last"] for r in reports) - min(r["first"] for r in reports if r["got"])
        return {
            "msgs_per_s": (n - 1) / (span / 1e9),
            "lost": float(sum(r["lost"] for r in reports)),
            "shares": float(
                min(r["got"] for r in reports) / max(1, max(r["got"] for r in reports))
            ),
        }
    finally:
        for p in workers + writers:
            if p.is_alive():
                p.kill()
                p.join()
        cleanup()
