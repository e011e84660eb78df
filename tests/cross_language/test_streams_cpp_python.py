"""Streams between C++ and Python: tests/cross_language/stream_peer.cpp is compiled here against
the header the installed package ships (xshm.get_include()), with -Wall -Wextra -Werror, and
sends to and receives from Python. Each message carries its writer id, its counter and a CRC-32
of the rest; both sides check order, integrity and writer_pid, and a CRC chained over every
payload shows both languages saw the same bytes in the same order. XSHM_STREAM_MESSAGES scales
the traffic (default 3000)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import xshm
from stream_matrix_peer import parse, payload

COUNT = int(os.environ.get("XSHM_STREAM_MESSAGES", "3000"))
WAIT = 120
MAX_BYTES = 200


@pytest.fixture(scope="session")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = os.environ.get("CXX", "g++")
    assert shutil.which(cxx), f"{cxx} is needed for the cross-language tests"
    exe = tmp_path_factory.mktemp("stream-peer") / "stream_peer"
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]
    src = Path(__file__).with_name("stream_peer.cpp")
    subprocess.run([cxx, *flags, "-I", xshm.get_include(), str(src), "-o", str(exe)], check=True)
    return exe


def start_peer(peer: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(peer), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def summary(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = p.communicate(timeout=WAIT)
    assert p.returncode == 0, f"stream_peer exited {p.returncode}: {out} {err}"
    return json.loads(out)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def wait_attached(s: xshm.Stream, pids: set[int], procs: list[subprocess.Popen[str]]) -> None:
    """Until every one of `pids` has a reader attached (the peer attaches at 'latest')."""
    deadline = time.monotonic() + WAIT
    while not pids <= {r["pid"] for r in s.readers()}:
        assert all(p.poll() is None for p in procs), "a peer exited before attaching"
        assert time.monotonic() < deadline, "the C++ reader never attached"
        time.sleep(0.005)


def python_sends(s: xshm.Stream, wid: int, count: int, seed: int) -> int:
    """Sends `count` messages (send and send_many); returns the chained CRC of the payloads."""
    rng = random.Random(seed)
    chain = k = 0
    while k < count:
        n = min(count - k, rng.choice([1, 1, 1, 4]))
        batch = [payload(wid, k + j, MAX_BYTES, rng) for j in range(n)]
        if n == 1:
            s.send(batch[0], timeout=WAIT)
        else:
            s.send_many(batch, timeout=WAIT)
        for p in batch:
            chain = zlib.crc32(p, chain)
        k += n
    return chain


def test_cpp_sends_python_receives(peer: Path, seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 8, max_bytes=MAX_BYTES) as s, s.reader("latest") as r:
        p = start_peer(peer, "send", seg_name, str(COUNT), "7")
        try:
            for k in range(COUNT):
                m = r.recv(timeout=WAIT)
                assert m.seq == k
                assert parse(m.data) == (7, k), f"message {k} is torn or out of order"
                assert m.writer_pid == p.pid
                assert len(m.data) <= MAX_BYTES
            fig = summary(p)
        finally:
            stop([p])
        assert fig == {
            "mode": "send",
            "sent": COUNT,
            "first_seq": 0,
            "last_seq": COUNT - 1,
            "batches": fig["batches"],
            "pid": p.pid,
        }
        assert fig["batches"] > 0, "the peer never used send_many"
        assert (r.received, r.lost) == (COUNT, 0)
        assert r.try_recv() is None
        assert (s.head, s.dropped, s.abandoned) == (COUNT, 0, 0)


def test_python_sends_cpp_receives(peer: Path, seg_name: str) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    with xshm.Stream.create(seg_name, 8, max_bytes=MAX_BYTES) as s:
        p = start_peer(peer, "recv", seg_name, str(COUNT))
        try:
            wait_attached(s, {p.pid}, [p])
            chain = python_sends(s, 3, COUNT, seed)
            fig = summary(p)
        finally:
            stop([p])
        print(fig)
        assert (fig["received"], fig["lost"], fig["torn"], fig["disorder"]) == (COUNT, 0, 0, 0)
        assert (fig["start"], fig["cursor"], fig["seq_gaps"]) == (0, COUNT, 0)
        assert fig["writers"] == 1
        assert fig["writer_pids"] == [os.getpid()]
        assert fig["crc_chain"] == chain, "C++ received other bytes than Python sent"
        assert s.readers() == [], "the C++ reader did not detach on exit"


def test_cpp_and_python_writers_into_readers_of_both_languages(peer: Path, seg_name: str) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    procs: list[subprocess.Popen[str]] = []
    total = 3 * COUNT
    with xshm.Stream.create(seg_name, 16, max_bytes=MAX_BYTES) as s, s.reader("latest") as r:
        try:
            cpp_reader = start_peer(peer, "recv", seg_name, str(total))
            procs.append(cpp_reader)
            wait_attached(s, {cpp_reader.pid}, procs)
            senders = [start_peer(peer, "send", seg_name, str(COUNT), str(w)) for w in (1, 2)]
            procs += senders
            py = threading.Thread(target=python_sends, args=(s, 0, COUNT, seed))
            py.start()
            next_k = {0: 0, 1: 0, 2: 0}
            pids: dict[int, int] = {}
            chain = 0
            try:
                for seq in range(total):
                    m = r.recv(timeout=WAIT)
                    assert m.seq == seq
                    parsed = parse(m.data)
                    assert parsed is not None, f"message {seq} is torn"
                    wid, k = parsed
                    assert k == next_k[wid], f"writer {wid}: counter {k}, {next_k[wid]} expected"
                    next_k[wid] += 1
                    assert pids.setdefault(wid, m.writer_pid) == m.writer_pid
                    chain = zlib.crc32(m.data, chain)
            finally:
                py.join(timeout=WAIT)
            figs = [summary(p) for p in procs]
        finally:
            stop(procs)
        assert not py.is_alive()
        assert next_k == {0: COUNT, 1: COUNT, 2: COUNT}
        assert pids == {0: os.getpid(), 1: senders[0].pid, 2: senders[1].pid}
        cpp = figs[0]
        assert (cpp["received"], cpp["lost"], cpp["torn"], cpp["disorder"]) == (total, 0, 0, 0)
        assert cpp["writers"] == 3
        assert sorted(cpp["writer_pids"]) == sorted(pids.values())
        assert cpp["crc_chain"] == chain, "the C++ and Python readers saw different streams"
        assert [f["sent"] for f in figs[1:]] == [COUNT, COUNT]
        assert (r.lost, s.head, s.abandoned) == (0, total, 0)
