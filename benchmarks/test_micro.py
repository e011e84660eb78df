"""Micro-benchmarks: one operation on the default record, xshm beside
multiprocessing.shared_memory + multiprocessing.Lock, in one process (uncontended). A read ends
in the fields a user touches (xshm._bench.touch), for xshm and the peer alike. Run by
`make bench`; the test command runs them once each as smoke tests (--benchmark-disable)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xshm
from xshm._bench import read_touched, touch  # a snapshot's fields, as every benchmark reads them

from .conftest import MESSAGE, N, ShmLockRecord

VALUES = np.arange(N, dtype=np.float64)


@pytest.mark.benchmark(group="read + fields")
def test_read_xshm(benchmark: Any, xshm_record: xshm.SharedMemoryManager) -> None:
    counter, _, length = benchmark(read_touched, xshm_record)
    assert (counter, length) == (1, len(MESSAGE))


@pytest.mark.benchmark(group="read + fields")
def test_read_shm_lock(benchmark: Any, shm_lock_record: ShmLockRecord) -> None:
    counter, _, length = benchmark(lambda: touch(*shm_lock_record.read()))
    assert (counter, length) == (1, len(MESSAGE))


@pytest.mark.benchmark(group="read_into + fields")
def test_read_into_xshm(benchmark: Any, xshm_record: xshm.SharedMemoryManager) -> None:
    out = np.empty(N)

    def read_into() -> Any:
        s = xshm_record.read_into(out)
        return touch(s.counter, out, s.message)

    benchmark(read_into)
    assert out[5] == 5.0


@pytest.mark.benchmark(group="read_into + fields")
def test_read_into_shm_lock(benchmark: Any, shm_lock_record: ShmLockRecord) -> None:
    out = np.empty(N)

    def read_into() -> Any:
        counter, message = shm_lock_record.read_into(out)
        return touch(counter, out, message)

    benchmark(read_into)
    assert out[5] == 5.0


@pytest.mark.benchmark(group="publish")
def test_publish_xshm(benchmark: Any, xshm_record: xshm.SharedMemoryManager) -> None:
    benchmark(xshm_record.publish, VALUES, MESSAGE, 2)
    assert xshm_record.read().counter == 2


@pytest.mark.benchmark(group="publish")
def test_publish_shm_lock(benchmark: Any, shm_lock_record: ShmLockRecord) -> None:
    benchmark(shm_lock_record.publish, VALUES, MESSAGE, 2)
    assert shm_lock_record.read()[0] == 2


@pytest.mark.benchmark(group="view")
def test_view_xshm(benchmark: Any, xshm_record: xshm.SharedMemoryManager) -> None:
    assert benchmark(lambda: xshm_record.live_values[5]) == 5.0


@pytest.mark.benchmark(group="view")
def test_view_shm_lock(benchmark: Any, shm_lock_record: ShmLockRecord) -> None:
    def peek() -> float:
        with shm_lock_record.lock:
            return float(shm_lock_record.values[5])

    assert benchmark(peek) == 5.0
