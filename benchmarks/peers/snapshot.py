"""Snapshot peers: the writer processes (the same loop for every peer: values all k, message "k",
counter k, paced to a rate or flat out) and the reader sessions the snapshot question measures."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import xshm
from xshm._bench import _ShmLock

from benchmarks.common import CTX, N, read_touched, touch


@dataclass
class Snapshot:
    read: Callable[[], Any]
    counter: Callable[[], int]
    consistent: Callable[[], bool]


def _pacer(rate: float) -> Callable[[int], None]:
    """After publish k, spins until k / rate seconds have passed (rate 0: returns at once)."""
    if not rate:
        return lambda k: None
    t0 = time.perf_counter()

    def pace(k: int) -> None:
        due = t0 + k / rate
        while time.perf_counter() < due:
            pass

    return pace


def _publish_loop(
    publish: Callable[[Any, str, int], Any], stop: Any, rate: float, pause: float = 0.0
) -> None:
    """The one writer loop of every snapshot row: record k (values all k, message "k",
    counter k), paced to `rate` a second (0: flat out), until stopped."""
    buf = np.empty(N)
    pace = _pacer(rate)
    k = 0
    while not stop.is_set():
        k += 1
        buf.fill(k)
        publish(buf, str(k), k)
        pace(k)
        if pause:
            time.sleep(pause)


def _xshm_writer(name: str, stop: Any, rate: float = 0.0, pause: float = 0.0) -> None:
    """Publishes records with xshm's publish() until stopped."""
    with xshm.SharedMemoryManager.open(name) as m:

        def publish(values: Any, message: str, counter: int) -> Any:
            return m.publish(values=values, message=message, counter=counter)

        _publish_loop(publish, stop, rate, pause)


def _lock_writer(shm_name: str, lock: Any, stop: Any, rate: float) -> None:
    """The peer's writer: the same loop, under the peer's Lock."""
    peer = _ShmLock(shm_name, lock)
    try:
        _publish_loop(peer.publish, stop, rate)
    finally:
        peer.close()


def _until(ready: Callable[[], bool], timeout: float = 30.0) -> None:
    """Sleeps in 1 ms steps until ready(); a writer that never starts is an error, not a hang."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the writer did not publish within {timeout} s")
        time.sleep(0.001)


def _whole(counter: int, values: Any, message: str) -> bool:
    return bool((values == counter).all()) and message == str(counter)


@contextlib.contextmanager
def _xshm_session(kind: str, rate: float) -> Iterator[Snapshot]:
    name = f"xshm-bench-snap-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    stop = CTX.Event()
    w = CTX.Process(target=_xshm_writer, args=(name, stop, rate))
    w.start()
    buf = np.empty(N)

    def read_into() -> Any:
        s = m.read_into(buf)
        return touch(s.counter, buf, s.message)

    def consistent() -> bool:
        s = m.read()
        return _whole(s.counter, s.values, s.message)

    read = {"read": lambda: read_touched(m), "read_into": read_into, "read only": m.read}[kind]
    try:
        m.wait(0, timeout=30)
        yield Snapshot(read, lambda: m.read().counter, consistent)
    finally:
        stop.set()
        w.join(timeout=30)
        m.unlink()
        m.close()


@contextlib.contextmanager
def _lock_session(rate: float) -> Iterator[Snapshot]:
    peer = _ShmLock()
    stop = CTX.Event()
    w = CTX.Process(target=_lock_writer, args=(peer.shm.name, peer.lock, stop, rate))
    w.start()
    try:
        _until(lambda: peer.read()[0] != 0)
        yield Snapshot(
            lambda: touch(*peer.read()), lambda: peer.read()[0], lambda: _whole(*peer.read())
        )
    finally:
        stop.set()
        w.join(timeout=30)
        peer.close()
