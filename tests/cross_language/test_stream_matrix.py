"""The cross-language stream matrix: the same end-to-end scenarios for every pair of writer and
reader languages (C++, Python, Rust). Each language's peer is a small program its own toolchain
builds: stream_peer.cpp (g++, against the header the installed package ships; its `write` and
`take` commands), stream_matrix_peer.py (the installed package) and
rust/xshm/examples/stream_peer.rs (cargo, the pure-Rust crate). They take the same commands and
print the same JSON lines. Every message carries its writer id, its counter and a CRC-32.

- order and no loss under block: two writers of the pair's writer language send through a ring
  much smaller than the traffic while a reader of its reader language takes every message:
  whole, in sequence order, each writer's counter in order, nothing lost or skipped;
- losses counted under drop_oldest: a writer sends flat out past a slow reader: what it takes
  is whole and in order, it lost some, and every number is accounted for (received + lost +
  skipped = cursor - start).

The pairs are every (writer, reader) of the three languages, each language with itself too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xshm
from peer_helpers import LANGS, PAIRS, ROOT, finish, line, start, stop

COUNT = int(os.environ.get("XSHM_STREAM_MESSAGES", "3000"))


@pytest.fixture(scope="session")
def stream_peers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("stream-peer")
    cxx = os.environ.get("CXX", "g++")
    assert shutil.which(cxx), f"{cxx} is needed for the cross-language tests"
    assert shutil.which("cargo"), "cargo is needed for the cross-language tests"
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]
    src = Path(__file__).with_name("stream_peer.cpp")
    exe = out / "stream_peer"
    subprocess.run([cxx, *flags, "-I", xshm.get_include(), str(src), "-o", str(exe)], check=True)
    subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "xshm", "--example", "stream_peer"],
        cwd=ROOT / "rust",
        env={k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"},
        check=True,
        timeout=900,
    )
    peers = {
        "cpp": [str(exe)],
        "python": [sys.executable, str(Path(__file__).with_name("stream_matrix_peer.py"))],
        "rust": [str(ROOT / "rust" / "target" / "release" / "examples" / "stream_peer")],
    }
    assert set(peers) == set(LANGS)
    return peers


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_order_and_no_loss_under_block(
    stream_peers: dict[str, list[str]], seg_name: str, writer: str, reader: str
) -> None:
    s = xshm.Stream.create(seg_name, 16, max_bytes=200)
    try:
        r = start(stream_peers[reader], "take", seg_name, 2 * COUNT, 0)
        writers: list[subprocess.Popen[str]] = []
        try:
            assert line(r) == {"ready": True}
            for wid in (1, 2):
                writers.append(start(stream_peers[writer], "write", seg_name, COUNT, wid))
            sent = [finish(w) for w in writers]
            got = finish(r)
        finally:
            for p in [r, *writers]:
                stop(p)
        assert [x["sent"] for x in sent] == [COUNT, COUNT]
        assert max(x["last_seq"] for x in sent) == 2 * COUNT - 1
        assert got["torn"] == 0 and got["disorder"] == 0, got
        assert (got["received"], got["lost"], got["skipped"]) == (2 * COUNT, 0, 0), got
        assert (got["start"], got["cursor"], got["writers"]) == (0, 2 * COUNT, 2), got
        assert s.head == 2 * COUNT and s.dropped == 0
    finally:
        s.close()


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_losses_counted_under_drop_oldest(
    stream_peers: dict[str, list[str]], seg_name: str, writer: str, reader: str
) -> None:
    s = xshm.Stream.create(seg_name, 8, max_bytes=200, backpressure="drop_oldest")
    try:
        r = start(stream_peers[reader], "take", seg_name, COUNT, 200)  # a slow reader
        w = None
        try:
            assert line(r) == {"ready": True}
            w = start(stream_peers[writer], "write", seg_name, COUNT, 3)
            sent = finish(w)
            got = finish(r)
        finally:
            for p in (r, w):
                if p is not None:
                    stop(p)
        assert sent["sent"] == COUNT and sent["last_seq"] == COUNT - 1
        assert got["torn"] == 0 and got["disorder"] == 0, got
        assert got["lost"] > 0, f"the slow {reader} reader lost nothing: {got}"
        assert got["received"] > 0, got
        assert got["received"] + got["lost"] + got["skipped"] == got["cursor"] - got["start"], got
        assert got["cursor"] == COUNT and s.head == COUNT, got
        assert s.dropped == 0, "a reader was attached: its losses count, not dropped"
    finally:
        s.close()
