"""Latency peers without a package of their own beyond the standard library, xshm and the peers
xshm bench shares: each set-up returns an echo process (not started), one ping-pong hop, the
clean-ups and a readiness event (or None)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import xshm
from xshm._bench import _peer_setup

from benchmarks.common import CTX, RECORD_BYTES, N

Hop = tuple[Any, Callable[[], None], list[Callable[[], None]], Any]


class _CppEcho:
    """benchmarks/cpp/pingpong's echo, with the start/join/is_alive/kill of a Process."""

    def __init__(self, args: list[str]) -> None:
        self.args, self.p = args, None

    def start(self) -> None:
        self.p = subprocess.Popen(self.args)

    def join(self, timeout: float) -> None:
        assert self.p is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=timeout)

    def is_alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> None:
        assert self.p is not None
        self.p.kill()
        self.p.wait()


def _xshm_echo(ping: str, pong: str, spin: float, total: int, quickstart: bool) -> None:
    a = xshm.SharedMemoryManager.open(ping, timeout=30)
    b = xshm.SharedMemoryManager.open(pong, timeout=30)
    buf = np.empty(N)
    seq = 0
    for _ in range(total):
        seq = a.wait(seq, timeout=60, spin=spin)
        if quickstart:
            s = a.read()
            b.publish(values=s.values, counter=s.counter)
        else:
            a.read_into(buf)
            b.publish(buf)


def _xshm_setup(spin: float, quickstart: bool = False, cpp_echo: bool = False) -> Any:
    def setup(total: int, cpp: Optional[Path]) -> Hop:
        tag = f"xshm-bench-lat-{os.getpid()}"
        a = xshm.SharedMemoryManager.create(tag + "-ping")
        b = xshm.SharedMemoryManager.create(tag + "-pong")
        p: Any
        if cpp_echo:
            assert cpp is not None
            mode = "spin" if spin else "block"
            p = _CppEcho([str(cpp), "echo", a.name, b.name, mode, str(total)])
        else:
            p = CTX.Process(target=_xshm_echo, args=(a.name, b.name, spin, total, quickstart))
        buf = np.ones(N)
        seq = k = 0

        def hop() -> None:
            nonlocal seq
            a.publish(buf)
            seq = b.wait(seq, timeout=30, spin=spin)
            b.read_into(buf)

        def hop_quickstart() -> None:
            nonlocal seq, k
            k += 1
            a.publish(values=buf, counter=k)
            seq = b.wait(seq, timeout=30, spin=spin)
            _ = b.read().counter

        return (
            p,
            hop_quickstart if quickstart else hop,
            [a.unlink, a.close, b.unlink, b.close],
            None,
        )

    return setup


def _poll_echo(ping: str, pong: str, total: int) -> None:
    a, b = shared_memory.SharedMemory(ping), shared_memory.SharedMemory(pong)
    assert a.buf is not None and b.buf is not None
    a_ctr, b_ctr = a.buf[:8].cast("Q"), b.buf[:8].cast("Q")
    a_val = np.ndarray((N,), np.float64, a.buf, 8)
    b_val = np.ndarray((N,), np.float64, b.buf, 8)
    for k in range(1, total + 1):
        while a_ctr[0] != k:
            pass
        b_val[:] = a_val
        b_ctr[0] = k
    del a_ctr, b_ctr, a_val, b_val
    a.close()
    b.close()


def _poll_setup(total: int, cpp: Optional[Path]) -> Hop:
    """A plain Python shared-memory poll: the initiator writes the values then the counter; the
    other side polls the counter in a Python loop, copies the values back, bumps its counter."""
    size = 8 + N * 8
    a = shared_memory.SharedMemory(create=True, size=size)
    b = shared_memory.SharedMemory(create=True, size=size)
    assert a.buf is not None and b.buf is not None
    a_ctr, b_ctr = a.buf[:8].cast("Q"), b.buf[:8].cast("Q")
    a_val = np.ndarray((N,), np.float64, a.buf, 8)
    b_val = np.ndarray((N,), np.float64, b.buf, 8)
    a_ctr[0] = b_ctr[0] = 0
    p = CTX.Process(target=_poll_echo, args=(a.name, b.name, total))
    buf = np.ones(N)
    k = 0

    def hop() -> None:
        nonlocal k
        k += 1
        a_val[:] = buf
        a_ctr[0] = k
        while b_ctr[0] != k:
            pass
        _ = b_val.copy()

    def close() -> None:
        nonlocal a_ctr, b_ctr, a_val, b_val
        del a_ctr, b_ctr, a_val, b_val  # the views go before the mappings they export
        for s in (a, b):
            s.close()
            s.unlink()

    return p, hop, [close], None


def _queue_echo(q_in: Any, q_out: Any, total: int) -> None:
    for _ in range(total):
        q_out.put(q_in.get())


def _queue_setup(total: int, cpp: Optional[Path]) -> Hop:
    q1, q2 = CTX.Queue(), CTX.Queue()
    payload = bytes(RECORD_BYTES)

    def hop() -> None:
        q1.put(payload)
        q2.get()

    return CTX.Process(target=_queue_echo, args=(q1, q2, total)), hop, [], None


def _shared_setup(label: str) -> Any:
    """A peer whose set-up xshm bench shares (xshm._bench._peer_setup)."""

    def setup(total: int, cpp: Optional[Path]) -> Hop:
        p, hop, cleanup = _peer_setup(label, total, bytes(RECORD_BYTES))
        return p, hop, cleanup, None

    return setup


def _posix_echo(tag: str, total: int) -> None:
    import mmap

    import posix_ipc

    s_ping, s_pong = posix_ipc.Semaphore(tag + "-ping"), posix_ipc.Semaphore(tag + "-pong")
    mem = posix_ipc.SharedMemory(tag + "-mem")
    buf = mmap.mmap(mem.fd, RECORD_BYTES)
    mem.close_fd()
    for _ in range(total):
        s_ping.acquire()
        data = buf[:RECORD_BYTES]
        buf[:RECORD_BYTES] = data
        s_pong.release()
    buf.close()


def _posix_setup(total: int, cpp: Optional[Path]) -> Hop:
    import mmap

    import posix_ipc

    tag = f"/xshm-bench-pi-{os.getpid()}"
    s_ping = posix_ipc.Semaphore(tag + "-ping", posix_ipc.O_CREX)
    s_pong = posix_ipc.Semaphore(tag + "-pong", posix_ipc.O_CREX)
    mem = posix_ipc.SharedMemory(tag + "-mem", posix_ipc.O_CREX, size=RECORD_BYTES)
    buf = mmap.mmap(mem.fd, RECORD_BYTES)
    mem.close_fd()
    payload = bytes(RECORD_BYTES)

    def hop() -> None:
        buf[:RECORD_BYTES] = payload
        s_ping.release()
        s_pong.acquire()
        _ = buf[:RECORD_BYTES]

    def close() -> None:
        buf.close()
        for s in (s_ping, s_pong):
            s.unlink()
        mem.unlink()

    return CTX.Process(target=_posix_echo, args=(tag, total)), hop, [close], None
