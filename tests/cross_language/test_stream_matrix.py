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
  skipped = cursor - start);
- a writer killed holding a claim it never committed (a hole, 26.4): a reader of the pair's
  reader language judges the dead writer by the liveness lock another implementation took
  (23), counts the number lost once, and goes on;
- a work-queue group whose three members are a C++, a Python and a Rust process: each message
  to exactly one of them.

The pairs are every (writer, reader) of the three languages, each language with itself too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import xshm
from peer_helpers import LANGS, PAIRS, TIMEOUT, build_peers, finish, line, start, stop
from stream_matrix_peer import payload

COUNT = int(os.environ.get("XSHM_STREAM_MESSAGES", "3000"))


@pytest.fixture(scope="session")
def stream_peers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return build_peers(
        tmp_path_factory.mktemp("stream-peer"),
        "stream_peer.cpp",
        "stream_matrix_peer.py",
        "stream_peer",
    )


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


@pytest.mark.parametrize(("victim", "reader"), PAIRS)
def test_a_dead_writers_hole_is_judged_by_another_language(
    stream_peers: dict[str, list[str]], seg_name: str, victim: str, reader: str
) -> None:
    marker = 0xFFFFFFFF
    rng = random.Random(7)
    s = xshm.Stream.create(seg_name, 16, max_bytes=200)
    r = v = None
    try:
        r = start(stream_peers[reader], "drain", seg_name, 0, 0)
        assert line(r) == {"ready": True}
        v = start(stream_peers[victim], "hole", seg_name, 3, 4)
        assert line(v) == {"claimed": 3}  # messages 0, 1, 2 sent; 3 claimed, never committed
        # The reader waits at the hole and judges it every 10 ms: alive, by the lock the
        # victim's implementation holds, so nothing is abandoned while it lives.
        time.sleep(0.1)
        assert s.abandoned == 0, f"the {reader} reader judged a live {victim} writer dead"
        os.kill(v.pid, signal.SIGKILL)
        v.wait(timeout=TIMEOUT)
        for k in range(2):  # after the hole
            s.send(payload(5, k, s.max_bytes, rng), timeout=TIMEOUT)
        s.send(payload(marker, 0, s.max_bytes, rng), timeout=TIMEOUT)
        got = finish(r)
    finally:
        for p in (r, v):
            if p is not None:
                stop(p)
    try:
        assert got["torn"] == 0 and got["disorder"] == 0, got
        # The 3 messages, the 2 after the hole and the marker taken; the hole counted lost.
        assert (got["received"], got["lost"], got["skipped"]) == (6, 1, 0), got
        assert (got["start"], got["cursor"], got["writers"]) == (0, 7, 2), got
        assert (s.head, s.abandoned) == (7, 1), "the hole is abandoned once"
    finally:
        s.close()


def test_a_group_shared_by_three_languages_gives_each_message_to_one_member(
    stream_peers: dict[str, list[str]], seg_name: str
) -> None:
    """A work queue whose members are a C++, a Python and a Rust process: a block stream of 16
    slots, 3000 messages sent by this process, then one marker per member. Every message is
    taken by exactly one member, each member's share in order, none lost, and the group's
    counters agree (docs/LAYOUT.md 26.8)."""
    marker = 0xFFFFFFFF
    rng = random.Random(5)
    s = xshm.Stream.create(seg_name, 16, max_bytes=200)
    members: list[subprocess.Popen[str]] = []
    try:
        for lang in LANGS:
            members.append(start(stream_peers[lang], "member", seg_name, "work", 0))
            assert line(members[-1]) == {"ready": True}
        for k in range(COUNT):
            s.send(payload(1, k, s.max_bytes, rng), timeout=TIMEOUT)
        for _ in LANGS:
            s.send(payload(marker, 0, s.max_bytes, rng), timeout=TIMEOUT)
        got = {lang: finish(p) for lang, p in zip(LANGS, members)}
    finally:
        for p in members:
            stop(p)
        s.close()
    taken: list[int] = []
    for lang, g in got.items():
        assert g["torn"] == 0 and g["lost"] == 0, (lang, g)
        assert g["ks"] == sorted(g["ks"]), f"the {lang} member's share is out of order"
        assert g["received"] == len(g["ks"]) + 1, (lang, g)  # its share and its marker
        taken += g["ks"]
    assert sorted(taken) == list(range(COUNT)), "a message lost or given to two members"
    with xshm.Stream.open(seg_name) as again:
        (group,) = again.groups()
        assert (group["name"], group["received"], group["lost"]) == ("work", COUNT + 3, 0)
