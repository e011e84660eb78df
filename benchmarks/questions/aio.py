"""asyncio: how soon does an awaiting coroutine run after another process publishes? (issue 16)

One process publishes a timestamp (CLOCK_MONOTONIC ns) every 2 ms; a coroutine in this process's
event loop awaits it and takes `time.monotonic_ns()` minus the stamp once it runs again, having
read the stamp as a user would. Rows, interleaved rounds (round r runs every row once, in an order
rotated by r), each a fresh publisher process:
- `loop.add_reader` on a pipe (a FIFO) the publisher `os.write`s the stamp into: asyncio's own
  floor for "another process says something" (the callback `os.read`s it and resolves a future);
- `await m.wait_async(seq)`, then `m.read().counter` (the stamp);
- `await loop.run_in_executor(None, m.wait, seq)`, then `m.read().counter`: a thread of the
  default executor blocks in the wait, what users do without wait_async;
- `await r.recv_async()` on a stream (the stamp is the message);
- with uvloop installed, `wait_async` and `add_reader` again under uvloop's loop.
Ratios are medians of per-round ratios of the rows' medians."""

from __future__ import annotations

import asyncio
import os
import statistics
import struct
import tempfile
import time
from typing import Any, Callable

import numpy as np
import xshm

from benchmarks.common import CTX, percentiles

PERIOD = 0.002  # seconds between publishes: the waiter is asleep again long before the next
WARM = 20  # samples dropped at the start of each row (the loop's and the notifier's set-up)

PIPE = "asyncio add_reader on a pipe"
WAIT_ASYNC = "xshm wait_async"
EXECUTOR = "run_in_executor(None, m.wait)"
RECV_ASYNC = "xshm stream recv_async"
UV_PIPE = "uvloop add_reader on a pipe"
UV_WAIT_ASYNC = "xshm wait_async, uvloop"

API = {
    PIPE: "`loop.add_reader(fd, cb)`, cb `os.read`s 8 bytes and resolves a future",
    WAIT_ASYNC: "`seq = await m.wait_async(seq)`; `m.read().counter`",
    EXECUTOR: "`seq = await loop.run_in_executor(None, m.wait, seq)`; `m.read().counter`",
    RECV_ASYNC: "`await r.recv_async()` (the message's first int64)",
    UV_PIPE: "as the pipe row, on `uvloop.new_event_loop()`",
    UV_WAIT_ASYNC: "as the wait_async row, on `uvloop.new_event_loop()`",
}


def _publisher(kind: str, target: str, n: int, ready: Any, go: Any) -> None:
    """Sends `n` stamps, one every PERIOD, through the pipe, the record or the stream."""
    if kind == "pipe":
        fd = os.open(target, os.O_WRONLY)
        ready.release()
        go.wait(60)
        for _ in range(n):
            time.sleep(PERIOD)
            os.write(fd, struct.pack("=q", time.monotonic_ns()))
        os.close(fd)
    elif kind == "record":
        with xshm.SharedMemoryManager.open(target, timeout=30) as m:
            ready.release()
            go.wait(60)
            for _ in range(n):
                time.sleep(PERIOD)
                m.publish(counter=time.monotonic_ns())
    else:
        with xshm.Stream.open(target, timeout=30) as s:
            buf = np.zeros(1, dtype=np.int64)
            ready.release()
            go.wait(60)
            for _ in range(n):
                time.sleep(PERIOD)
                buf[0] = time.monotonic_ns()
                s.send(buf)


async def _pipe_waiter(fifo: str, n: int, started: Callable[[], None]) -> list[int]:
    loop = asyncio.get_running_loop()
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    got: list[asyncio.Future[int]] = []

    def readable() -> None:
        data = os.read(fd, 8)
        if len(data) == 8 and got and not got[-1].done():
            got[-1].set_result(struct.unpack("=q", data)[0])

    loop.add_reader(fd, readable)
    out = []
    try:
        started()
        for _ in range(n):
            got.append(loop.create_future())
            stamp = await got[-1]
            out.append(time.monotonic_ns() - stamp)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return out


async def _record_waiter(
    m: xshm.SharedMemoryManager, n: int, executor: bool, started: Callable[[], None]
) -> list[int]:
    loop = asyncio.get_running_loop()
    seq = m.seq
    out = []
    started()
    while seq < n:  # a record keeps the latest value: two publishes before a wake are one
        if executor:
            seq = await loop.run_in_executor(None, m.wait, seq)
        else:
            seq = await m.wait_async(seq)
        out.append(time.monotonic_ns() - m.read().counter)
    return out


async def _stream_waiter(r: xshm.StreamReader, n: int, started: Callable[[], None]) -> list[int]:
    out = []
    started()
    for _ in range(n):
        msg = await r.recv_async()
        out.append(time.monotonic_ns() - int(msg.data[0]))
    return out


def _new_loop(uv: bool) -> asyncio.AbstractEventLoop:
    if uv:
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def _one(row: str, n: int) -> list[int]:
    """One row's one-way times (ns) over `n` publishes, WARM dropped."""
    ready, go = CTX.Semaphore(0), CTX.Event()
    loop = _new_loop(row in (UV_PIPE, UV_WAIT_ASYNC))
    tag = f"xshm-bench-aio-{os.getpid()}"
    cleanup: list[Callable[[], None]] = []
    try:
        if row in (PIPE, UV_PIPE):
            d = tempfile.mkdtemp()
            target = os.path.join(d, "fifo")
            os.mkfifo(target, 0o600)
            cleanup += [lambda: os.rmdir(d), lambda: os.unlink(target)]
            kind = "pipe"
        elif row == RECV_ASYNC:
            s = xshm.Stream.create(tag, 64, dtype="int64", shape=(1,))
            r = s.reader()
            cleanup += [s.close, s.unlink, r.close]
            target, kind = tag, "stream"
        else:
            m = xshm.SharedMemoryManager.create(tag)
            cleanup += [m.close, m.unlink]
            target, kind = tag, "record"
        p = CTX.Process(target=_publisher, args=(kind, target, n + WARM, ready, go))
        p.start()
        cleanup.append(lambda: (p.kill(), p.join()) if p.is_alive() else None)

        def started() -> None:
            if not ready.acquire(timeout=60):
                raise TimeoutError("the publisher did not start")
            go.set()

        if kind == "pipe":
            coro = _pipe_waiter(target, n + WARM, started)
        elif kind == "stream":
            coro = _stream_waiter(r, n + WARM, started)
        else:
            coro = _record_waiter(m, n + WARM, row == EXECUTOR, started)
        got = loop.run_until_complete(asyncio.wait_for(coro, 120))
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"the {row} publisher ended with exit code {p.exitcode}")
        return got[WARM:]
    finally:
        loop.close()
        for fn in reversed(cleanup):
            fn()


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    rows = [PIPE, WAIT_ASYNC, EXECUTOR, RECV_ASYNC]
    try:
        import uvloop  # noqa: F401

        rows += [UV_PIPE, UV_WAIT_ASYNC]
    except ImportError:
        notes["aio"] = "uvloop is not installed: its rows were not measured"
    rounds, n = (2, 50) if quick else (8, 400)
    per_round: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    for k in range(rounds):
        for row in rows[k % len(rows) :] + rows[: k % len(rows)]:
            per_round[row].append(percentiles(_one(row, n)))
    out: dict[str, Any] = {"period_ms": PERIOD * 1e3, "samples": n, "rows": {}}
    for row, rs in per_round.items():
        out["rows"][row] = {
            "api": API[row],
            "p50_ns": statistics.median(r["p50_ns"] for r in rs),
            "p99_ns": statistics.median(r["p99_ns"] for r in rs),
            "p50_per_round": [r["p50_ns"] for r in rs],
            "rounds": len(rs),
        }
    return out
