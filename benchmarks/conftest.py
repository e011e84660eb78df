"""Fixtures for the micro-benchmarks: an xshm segment and its peer, a
multiprocessing.shared_memory block guarded by a multiprocessing.Lock, holding the same record
(100 float64, a counter and a 256-byte message)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from multiprocessing import Lock, shared_memory
from typing import Any

import numpy as np
import pytest
import xshm

N = 100
MSG_CAP = 256
MESSAGE = "the quick brown fox jumps over the lazy dog"


class ShmLockRecord:
    """The peer: the record laid out by hand in a SharedMemory block, one Lock for everything."""

    HEAD = struct.Struct("<QI")  # counter, message length

    def __init__(self) -> None:
        self.shm = shared_memory.SharedMemory(create=True, size=16 + N * 8 + MSG_CAP)
        self.lock = Lock()
        self.values = np.ndarray((N,), dtype=np.float64, buffer=self.shm.buf, offset=16)
        self.counter = 0

    def publish(self, values: np.ndarray[Any, Any], message: str, counter: int) -> None:
        data = message.encode()
        with self.lock:
            self.values[:] = values
            self.HEAD.pack_into(self.shm.buf, 0, counter, len(data))
            self.shm.buf[16 + N * 8 : 16 + N * 8 + len(data)] = data

    def read(self) -> tuple[int, np.ndarray[Any, Any], str]:
        with self.lock:
            counter, length = self.HEAD.unpack_from(self.shm.buf, 0)
            values = self.values.copy()
            msg = bytes(self.shm.buf[16 + N * 8 : 16 + N * 8 + length]).decode()
        return counter, values, msg

    def read_into(self, out: np.ndarray[Any, Any]) -> tuple[int, str]:
        with self.lock:
            counter, length = self.HEAD.unpack_from(self.shm.buf, 0)
            out[:] = self.values
            msg = bytes(self.shm.buf[16 + N * 8 : 16 + N * 8 + length]).decode()
        return counter, msg

    def close(self) -> None:
        del self.values
        self.shm.close()
        self.shm.unlink()


@pytest.fixture
def xshm_record() -> Iterator[xshm.SharedMemoryManager]:
    name = f"xshm-bench-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name, shape=(N,), message_capacity=MSG_CAP)
    m.publish(values=np.arange(N, dtype=np.float64), message=MESSAGE, counter=1)
    yield m
    m.unlink()
    m.close()


@pytest.fixture
def shm_lock_record() -> Iterator[ShmLockRecord]:
    r = ShmLockRecord()
    r.publish(np.arange(N, dtype=np.float64), MESSAGE, 1)
    yield r
    r.close()
