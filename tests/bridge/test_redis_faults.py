"""Faults over Redis, across processes: the broker SIGKILLed mid-stream and restarted (its AOF
fsynced at every write: it loses nothing it acknowledged), a mirror SIGKILLed and restarted,
an export SIGKILLed and restarted. The bridges are ``xshm bridge`` processes; a producer in
this process sends a "block" stream 1000 messages a second, and this process reads the
mirror: every message arrives once, in order, and the bridges carry on by themselves."""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest
import xshm
from bridge_helpers import Procs, RedisServer, status_values, wait_for

KEY = "test/redis-faults"
TOTAL = 4000


def _produce(src: xshm.Stream, done: threading.Event) -> threading.Thread:
    def run() -> None:
        for k in range(TOTAL):
            src.send(struct.pack("<Q", k) * 8, timeout=60)
            time.sleep(0.001)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    return t


def _take(rd: xshm.StreamReader) -> list[int]:
    return [struct.unpack_from("<Q", m.data)[0] for m in rd.recv_many(512, timeout=0.05)]


def _run_with_fault(
    procs: Procs,
    seg_name: str,
    dst: str,
    server: RedisServer,
    fault: Callable[[Any, Any], None],
) -> dict[str, float]:
    """Export ``seg_name`` and mirror it into ``dst`` (two processes); at message 500 call
    ``fault(export_proc, mirror_proc)``; check that the reader got every message once, in
    order; return the mirror's status."""
    src = xshm.Stream.create(seg_name, capacity=4096, max_bytes=64)
    redis = ("--engine", "redis", "--url", server.url)
    ex = procs.bridge("export", seg_name, "--key", KEY, *redis)
    mi = procs.bridge("mirror", KEY, "--into", dst, *redis)
    mirror = wait_for(lambda: xshm.Stream.open(dst), what="the mirror stream")
    done = threading.Event()
    got: list[int] = []
    with mirror.reader(start="oldest") as rd:
        t = _produce(src, done)
        try:
            while len(got) < 500:
                got.extend(_take(rd))
            fault(ex, mi)
            deadline = time.monotonic() + 90
            while not (done.is_set() and got and got[-1] == TOTAL - 1):
                got.extend(_take(rd))
                assert time.monotonic() < deadline, f"{len(got)} received, last {got[-1:]}"
        finally:
            t.join()
        time.sleep(0.3)
        got.extend(_take(rd))
    assert got == list(range(TOTAL)), "lost, out of order or duplicated"
    name = f"bridge.mirror.{dst}"
    status: dict[str, float] = wait_for(
        lambda: (s := status_values(name))["source_seq"] == TOTAL - 1 and s
    )
    mirror.close()
    src.close()
    return status


@pytest.fixture
def names(seg_name: str, status_cleanup: Any) -> tuple[str, str]:
    dst = status_cleanup(seg_name + "-m")
    status_cleanup(f"bridge.export.{seg_name}")  # a killed bridge cannot remove its own
    status_cleanup(f"bridge.mirror.{dst}")
    return seg_name, dst


def test_the_broker_killed_and_restarted_mid_stream(
    procs: Procs, names: tuple[str, str], redis_server: RedisServer
) -> None:
    def fault(ex: Any, mi: Any) -> None:
        redis_server.kill()
        time.sleep(1.5)  # both bridges find the broker gone meanwhile
        redis_server.start()

    status = _run_with_fault(procs, *names, redis_server, fault)
    assert status["lost"] == 0, status  # an entry delivered again is dropped, never committed


def test_a_mirror_killed_and_restarted_mid_stream(
    procs: Procs, names: tuple[str, str], redis_server: RedisServer
) -> None:
    """Killed anywhere, even between its commit and its XACK: its group redelivers what it
    had not acknowledged, and the restarted mirror skips what its stream already has."""
    _, dst = names

    def fault(ex: Any, mi: Any) -> None:
        os.kill(mi.pid, signal.SIGKILL)
        mi.wait()
        time.sleep(0.5)
        procs.bridge("mirror", KEY, "--into", dst, "--engine", "redis", "--url", redis_server.url)

    _run_with_fault(procs, *names, redis_server, fault)


def test_an_export_killed_and_restarted_mid_stream(
    procs: Procs, names: tuple[str, str], redis_server: RedisServer
) -> None:
    """The restarted export reads from the oldest message its ring holds; it asks Redis for
    the newest entry of its source and adds only what follows: nothing twice in Redis."""
    src_name, _ = names

    def fault(ex: Any, mi: Any) -> None:
        os.kill(ex.pid, signal.SIGKILL)
        ex.wait()
        time.sleep(0.5)
        redis = ("--engine", "redis", "--url", redis_server.url)
        procs.bridge("export", src_name, "--key", KEY, *redis)

    status = _run_with_fault(procs, *names, redis_server, fault)
    assert status["duplicates"] == 0, status


def test_a_record_mirror_follows_across_a_broker_restart(
    procs: Procs, names: tuple[str, str], redis_server: RedisServer
) -> None:
    src_name, dst = names
    src = xshm.SharedMemoryManager.create(src_name, shape=(4,), message_capacity=16)
    redis = ("--engine", "redis", "--url", redis_server.url)
    try:
        src.publish(values=np.zeros(4), message="m0", counter=0)
        procs.bridge("export", src_name, "--key", KEY, *redis)
        procs.bridge("mirror", KEY, "--into", dst, *redis)
        m = wait_for(lambda: xshm.SharedMemoryManager.open(dst, readonly=True), what=dst)
        wait_for(lambda: m.read().message == "m0", what="the first record")
        redis_server.kill()
        src.publish(values=np.ones(4), message="m1", counter=1)  # while the broker is down
        time.sleep(1.0)
        redis_server.start()
        wait_for(lambda: m.read().message == "m1", timeout=30, what="the update made meanwhile")
        src.publish(values=np.full(4, 2.0), message="m2", counter=2)
        wait_for(lambda: m.read().message == "m2", timeout=10, what="the next update")
        assert np.all(m.read().values == 2.0)
        m.close()
    finally:
        src.close()
