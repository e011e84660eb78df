"""``xshm bench``: a quick side-by-side of xshm and what users would otherwise use, in one run.
The full benchmark suite lives in benchmarks/ of the source tree; this is the smoke-sized,
installed-package version of it."""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import os
import statistics
import struct
import time
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any, Callable, Optional

import numpy as np

from ._core import SharedMemoryManager

N = 100


def touch(counter: int, values: Any, message: str) -> tuple[int, Any, int]:
    """What a user does with a snapshot, at the least: takes its counter, reads a value of its
    array and looks at its message. Every snapshot row, of `xshm bench` and of benchmarks/ (xshm
    and each peer), ends in this call, so the rows compare the same work: a read is not done
    until its fields are in hand."""
    return counter, values[-1], len(message)


def read_touched(m: SharedMemoryManager) -> tuple[int, Any, int]:
    """The quickstart's snapshot: `read()`, then its fields."""
    s = m.read()
    return touch(s.counter, s.values, s.message)


def _per_call_us(fn: Callable[[], Any], calls: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs)


class _ShmLock:
    """The peer: multiprocessing.shared_memory + a Lock holding the same record, laid out by
    hand. Created by one process; another attaches with the creator's name and lock."""

    def __init__(self, name: Optional[str] = None, lock: Any = None) -> None:
        self.shm = shared_memory.SharedMemory(name, create=name is None, size=16 + N * 8 + 256)
        self.owner = name is None
        assert self.shm.buf is not None
        self.buf: memoryview = self.shm.buf
        self.lock = lock if lock is not None else mp.get_context("spawn").Lock()
        self.values = np.ndarray((N,), dtype=np.float64, buffer=self.buf, offset=16)

    def publish(self, values: Any, message: str, counter: int) -> None:
        data = message.encode()
        with self.lock:
            self.values[:] = values
            struct.pack_into("<QI", self.buf, 0, counter, len(data))
            self.buf[16 + N * 8 : 16 + N * 8 + len(data)] = data

    def read(self) -> tuple[int, Any, str]:
        with self.lock:
            counter, n = struct.unpack_from("<QI", self.buf, 0)
            return (
                counter,
                self.values.copy(),
                bytes(self.buf[16 + N * 8 : 16 + N * 8 + n]).decode(),
            )

    def close(self) -> None:
        del self.values
        del self.buf
        self.shm.close()
        if self.owner:
            self.shm.unlink()


def _xshm_echo(ping: str, pong: str, rounds: int, spin: float) -> None:
    with SharedMemoryManager.open(ping, timeout=10) as a, SharedMemoryManager.open(pong) as b:
        seq = 0
        for i in range(rounds):
            seq = a.wait(seq, timeout=10, spin=spin)
            b.publish(counter=i)


def _pipe_echo(conn: Any, rounds: int) -> None:
    for _ in range(rounds):
        conn.send_bytes(conn.recv_bytes())


@contextlib.contextmanager
def _echo_running(
    p: Any, cleanup: list[Callable[[], None]], join_timeout: float = 10
) -> Iterator[None]:
    """Runs the echo process `p` for the ping-pong in the block: started on entry, joined when
    the block ends normally, killed if still alive either way, then `cleanup` in order."""
    p.start()
    try:
        yield
        p.join(timeout=join_timeout)
    finally:
        if p.is_alive():
            p.kill()
        for c in cleanup:
            c()


def _pingpong_xshm(rounds: int, spin: float = 0.0) -> float:
    tag = f"xshm-bench-{os.getpid()}-{int(spin > 0)}"
    a = SharedMemoryManager.create(tag + "-ping")
    b = SharedMemoryManager.create(tag + "-pong")
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_xshm_echo, args=(a.name, b.name, rounds, spin))
    times = []
    with _echo_running(p, [a.unlink, a.close, b.unlink, b.close]):
        time.sleep(0.2)
        seq = 0
        for i in range(rounds):
            t0 = time.perf_counter()
            a.publish(counter=i)
            seq = b.wait(seq, timeout=10, spin=spin)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / 2 * 1e6


def _ffifo_echo(q_in: Any, q_out: Any, rounds: int) -> None:
    for _ in range(rounds):
        q_out.put(q_in.get(timeout=10), timeout=10)


def _zmq_echo(addr_in: str, addr_out: str, rounds: int) -> None:
    import zmq  # type: ignore[import-not-found,unused-ignore]

    ctx = zmq.Context()
    rx, tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    rx.connect(addr_in)
    tx.connect(addr_out)
    for _ in range(rounds):
        tx.send(rx.recv())
    rx.close(linger=0)
    tx.close(linger=0)
    ctx.term()


PEER_LABELS = ("multiprocessing.Pipe", "faster-fifo", "pyzmq (ipc)")
# label: (the module it imports, the package that installs it); None: the standard library.
PEER_PACKAGES: dict[str, tuple[Optional[str], Optional[str]]] = {
    "multiprocessing.Pipe": (None, None),
    "faster-fifo": ("faster_fifo", "faster-fifo"),
    "pyzmq (ipc)": ("zmq", "pyzmq"),
}


def _peer_setup(
    label: str, total: int, payload: bytes
) -> tuple[Any, Callable[[], None], list[Callable[[], None]]]:
    """An echo process (not started), one ping-pong hop, and the clean-ups, for a peer of
    PEER_LABELS moving `payload` back and forth `total` times. Shared with benchmarks/run.py."""
    ctx = mp.get_context("spawn")
    cleanup: list[Callable[[], None]] = []
    if label == "multiprocessing.Pipe":
        here, there = ctx.Pipe()
        p = ctx.Process(target=_pipe_echo, args=(there, total))

        def hop() -> None:
            here.send_bytes(payload)
            here.recv_bytes()
    elif label == "faster-fifo":
        import faster_fifo  # type: ignore[import-not-found,unused-ignore]

        q1, q2 = faster_fifo.Queue(), faster_fifo.Queue()
        p = ctx.Process(target=_ffifo_echo, args=(q1, q2, total))

        def hop() -> None:
            q1.put(payload, timeout=30)
            q2.get(timeout=30)
    elif label == "pyzmq (ipc)":
        import zmq  # type: ignore[import-not-found,unused-ignore]

        zctx = zmq.Context()
        tag = f"ipc:///tmp/xshm-bench-zmq-{os.getpid()}"
        tx, rx = zctx.socket(zmq.PAIR), zctx.socket(zmq.PAIR)
        tx.bind(tag + "-a")
        rx.bind(tag + "-b")
        p = ctx.Process(target=_zmq_echo, args=(tag + "-a", tag + "-b", total))

        def hop() -> None:
            tx.send(payload)
            rx.recv()

        def close() -> None:
            tx.close(linger=0)
            rx.close(linger=0)
            zctx.term()

        cleanup.append(close)
    else:
        raise ValueError(label)
    return p, hop, cleanup


def _pingpong_peer(label: str, rounds: int) -> float:
    """Median one-way latency (us) of a record-sized ping-pong through a peer of PEER_LABELS."""
    p, hop, cleanup = _peer_setup(label, rounds, bytes(N * 8 + 64))
    times = []
    with _echo_running(p, cleanup):
        for _ in range(rounds):
            t0 = time.perf_counter()
            hop()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / 2 * 1e6


def run(quick: bool = True) -> list[dict[str, Any]]:
    """Measures and returns rows: what, xshm time, peer, peer time (microseconds)."""
    calls = 20_000 if quick else 200_000
    rounds = 2_000 if quick else 20_000
    rows: list[dict[str, Any]] = []
    name = f"xshm-bench-{os.getpid()}"
    values = np.arange(N, dtype=np.float64)
    m = SharedMemoryManager.create(name)
    peer = _ShmLock()
    try:
        m.publish(values=values, message="bench", counter=1)
        peer.publish(values, "bench", 1)
        rows.append(
            {
                "what": "snapshot + fields",
                "xshm_us": _per_call_us(lambda: read_touched(m), calls),
                "peer": "shared_memory+Lock",
                "peer_us": _per_call_us(lambda: touch(*peer.read()), calls),
            }
        )
        rows.append(
            {
                "what": "publish",
                "xshm_us": _per_call_us(lambda: m.publish(values, "bench", 2), calls),
                "peer": "shared_memory+Lock",
                "peer_us": _per_call_us(lambda: peer.publish(values, "bench", 2), calls),
            }
        )
    finally:
        m.unlink()
        m.close()
        peer.close()
    x_lat = _pingpong_xshm(rounds)
    pipe = _pingpong_peer("multiprocessing.Pipe", rounds)
    rows.append(
        {
            "what": "one-way latency",
            "xshm_us": x_lat,
            "peer": "multiprocessing.Pipe",
            "peer_us": pipe,
        }
    )
    rows.append(
        {
            "what": "one-way, spinning",
            "xshm_us": _pingpong_xshm(rounds, spin=0.1),
            "peer": "multiprocessing.Pipe",
            "peer_us": pipe,
        }
    )
    for label in ("faster-fifo", "pyzmq (ipc)"):
        mod = PEER_PACKAGES[label][0]
        if mod is not None and importlib.util.find_spec(mod) is None:
            rows.append({"what": "one-way latency", "peer": label, "skipped": "not installed"})
        else:
            rows.append(
                {
                    "what": "one-way latency",
                    "xshm_us": x_lat,
                    "peer": label,
                    "peer_us": _pingpong_peer(label, rounds),
                }
            )
    return rows
