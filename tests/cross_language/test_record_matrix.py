"""The cross-language record matrix: the same end-to-end scenarios for every pair of writer and
reader languages (C++, Python, Rust). Each language's peer is a small program its own toolchain
builds: record_peer.cpp (g++, against the header the installed package ships), record_peer.py
(the installed package) and rust/xshm/examples/record_peer.rs (cargo, the pure-Rust crate).
They take the same commands and print the same JSON line.

- consistent snapshots: a writer publishing flat out, a reader of another language reading;
  zero torn, never backwards, and the reader saw the record change;
- waits: a reader asleep on the futex is woken by every publish of a writer of another
  language;
- crash: a writer SIGKILLed mid-publish, then a writer of another language takes the lock,
  recovers the record (counted in `recoveries`) and publishes the next one.
"""

from __future__ import annotations

import os
import random
import signal

import pytest
import xshm
from peer_helpers import PAIRS, TIMEOUT, build_peers, finish, line, start, stop


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return build_peers(
        tmp_path_factory.mktemp("record-peer"), "record_peer.cpp", "record_peer.py", "record_peer"
    )


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_consistent_snapshots_under_a_writer_publishing_flat_out(
    peers: dict[str, list[str]], seg_name: str, writer: str, reader: str
) -> None:
    w = start(peers[writer], "publish", seg_name, 0, 512, 0)  # 4 KiB of values, until stopped
    try:
        assert line(w) == {"ready": True}
        got = finish(start(peers[reader], "read", seg_name, 20000))
    finally:
        stop(w)
    assert got["torn"] == 0, got
    assert got["regressions"] == 0, got
    assert got["distinct"] > 1, f"the {reader} reader never saw the {writer} writer publish: {got}"


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_waits_are_woken_across_languages(
    peers: dict[str, list[str]], seg_name: str, writer: str, reader: str
) -> None:
    count = 20
    xshm.SharedMemoryManager.create(seg_name, shape=(8,), dtype="uint64", message_capacity=64)
    waiter = start(peers[reader], "wait", seg_name, count, 10000)
    try:
        assert line(waiter) == {"ready": True}
        # 20 ms apart: the waiter is asleep on the futex when each publish comes.
        done = finish(start(peers[writer], "publish", seg_name, count, 8, 20000))
        got = finish(waiter)
    finally:
        stop(waiter)
    assert done == {"published": count, "last": count}
    assert got["timeouts"] == 0 and got["torn"] == 0, got
    assert got["last_seq"] == count, got
    assert got["woken"] >= count // 2, f"woken {got['woken']} times for {count} publishes"


@pytest.mark.parametrize(("victim", "survivor"), PAIRS)
def test_a_writer_killed_mid_publish_is_recovered_by_another_language(
    peers: dict[str, list[str]], seg_name: str, victim: str, survivor: str
) -> None:
    n = 1 << 16  # 512 KiB of values: a publish takes long, so a kill lands inside one
    m = xshm.SharedMemoryManager.create(seg_name, shape=(n,), dtype="uint64", message_capacity=64)
    rng = random.Random(f"{victim}-{survivor}")
    recovered = 0
    for _ in range(30):
        v = start(peers[victim], "publish", seg_name, 0, n, 0)
        try:
            assert line(v) == {"ready": True}
            m.wait(m.seq, timeout=TIMEOUT)  # it publishes
            # A moment later, somewhere in a publish (or between two).
            os.sched_yield()
            for _ in range(rng.randrange(1, 2000)):
                pass
            os.kill(v.pid, signal.SIGKILL)
        finally:
            stop(v)
        got = finish(start(peers[survivor], "recover", seg_name))
        assert got["whole"], f"{survivor} after a killed {victim}: {got}"
        recovered += got["recovered"]
        snap = m.read()  # and Python, a third reader, agrees
        assert (snap.values == snap.counter).all() and snap.message == f"k={snap.counter}"
        if recovered >= 2:
            break
    assert recovered >= 1, f"no kill of the {victim} writer landed while it held the lock"
    assert m.recoveries == recovered
    m.close()
