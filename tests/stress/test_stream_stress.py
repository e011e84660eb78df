"""The stream stress test, with its negative control. A writer process floods a ring of 8 slots
with 4 KiB messages whose 512 words all hold the message's counter, while this process reads.

The control is a naive ring in a plain shared file: slots and a `head` word, no commit word,
no re-check after the copy (the best such a reader can do is jump to the oldest slot when it
sees it was lapped). It must show torn messages (mixed words) or messages that are not the one
the reader took them for (overwritten between its look at `head` and its copy: lost and
duplicated without a trace) within a bounded time, which shows the checks can fail. It runs
until it has seen five of each, or NAIVE_SECONDS.

The same workload through an xshm "drop_oldest" stream is never torn or mixed up, its losses
are counted exactly (every gap in the sequence numbers is in `lost`; received + lost = sent
since it attached), and through a "block" stream nothing is lost at all.
XSHM_STREAM_ROUNDS scales the messages the stream readers take (default 30000); figures
printed."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np
import xshm

CTX = mp.get_context("spawn")
ROUNDS = int(os.environ.get("XSHM_STREAM_ROUNDS", "30000"))
CAP = 8
WORDS = 512  # 4 KiB a message
WAIT = 120
NAIVE_SECONDS = 20  # the control gives up (and fails the test) after this long


def _naive_writer(path: str, stop: Any) -> None:
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 64 + CAP * WORDS * 8)
    os.close(fd)
    head = np.ndarray((1,), np.uint64, mm, 0)
    ring = np.ndarray((CAP, WORDS), np.uint64, mm, 64)
    k = 0
    while not (k % 256 == 0 and stop.is_set()):
        ring[k % CAP] = k  # the copy, with nothing that tells a reader it is under way
        head[0] = k + 1
        k += 1
    del head, ring
    mm.close()


def _stream_writer(name: str, stop: Any, limit: int) -> None:
    with xshm.Stream.open(name, timeout=10) as s:
        frame = np.empty(WORDS, dtype=np.uint64)
        k = 0
        while k < limit and not (k % 256 == 0 and stop.is_set()):
            frame.fill(k)
            s.send(frame, timeout=WAIT)
            k += 1


def _run_naive(path: str) -> dict[str, int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 64 + CAP * WORDS * 8)
        mm = mmap.mmap(fd, 64 + CAP * WORDS * 8)
    finally:
        os.close(fd)
    head = np.ndarray((1,), np.uint64, mm, 0)
    ring = np.ndarray((CAP, WORDS), np.uint64, mm, 64)
    stop = CTX.Event()
    w = CTX.Process(target=_naive_writer, args=(path, stop))
    w.start()
    fig = {"taken": 0, "torn": 0, "mixed_up": 0, "lapped": 0}
    try:
        cursor = 0
        end = time.monotonic() + NAIVE_SECONDS
        while (fig["torn"] < 5 or fig["mixed_up"] < 5) and time.monotonic() < end:
            h = int(head[0])
            if cursor >= h:
                continue
            if h - cursor > CAP:  # lapped: skip to the oldest message the ring should hold
                fig["lapped"] += h - CAP - cursor
                cursor = h - CAP
            buf = ring[cursor % CAP].copy()
            fig["taken"] += 1
            if not (buf == buf[0]).all():
                fig["torn"] += 1
            elif int(buf[0]) != cursor:
                fig["mixed_up"] += 1  # taken for message `cursor`, but it is another one
            cursor += 1
    finally:
        stop.set()
        w.join(timeout=WAIT)
        if w.is_alive():
            w.kill()
            w.join(timeout=30)
        del head, ring
        mm.close()
        os.unlink(path)
    assert w.exitcode == 0
    return fig


def _run_stream(name: str, backpressure: str) -> dict[str, int]:
    with (
        xshm.Stream.create(
            name, CAP, dtype="uint64", shape=(WORDS,), backpressure=backpressure
        ) as s,
        s.reader("latest") as r,
    ):
        stop = CTX.Event()
        limit = ROUNDS if backpressure == "block" else 2**62
        w = CTX.Process(target=_stream_writer, args=(name, stop, limit))
        w.start()
        fig = {"taken": 0, "torn": 0, "mixed_up": 0, "backwards": 0, "seq_gaps": 0}
        try:
            offset = None  # seq - counter, the same for every message of the one writer
            expect = r.cursor
            while fig["taken"] < ROUNDS:
                m = r.recv(timeout=WAIT)
                fig["taken"] += 1
                if not (m.data == m.data[0]).all():
                    fig["torn"] += 1
                    continue
                if offset is None:
                    offset = m.seq - int(m.data[0])
                fig["mixed_up"] += m.seq - int(m.data[0]) != offset
                fig["backwards"] += m.seq < expect
                fig["seq_gaps"] += max(m.seq - expect, 0)
                expect = m.seq + 1
        finally:
            stop.set()
            w.join(timeout=WAIT)
            if w.is_alive():
                w.kill()
                w.join(timeout=30)
        assert w.exitcode == 0
        while (m := r.try_recv()) is not None:  # the rest: the writer has stopped
            fig["seq_gaps"] += m.seq - expect
            expect = m.seq + 1
        fig.update(received=r.received, lost=r.lost, sent=s.head, cursor=r.cursor)
        return fig


def test_a_naive_ring_tears_or_mixes_up_while_the_stream_never_does(seg_name: str) -> None:
    naive = _run_naive(f"/dev/shm/{seg_name}")
    print(f"naive ring: {naive}")
    assert naive["torn"] + naive["mixed_up"] > 0, (
        f"the naive ring never tore or mixed up a message in {NAIVE_SECONDS} s: "
        "this test could not catch a bug"
    )

    lossy = _run_stream(seg_name, "drop_oldest")
    xshm.unlink(seg_name)
    print(f"drop_oldest stream: {lossy}")
    assert lossy["torn"] == 0
    assert lossy["mixed_up"] == 0
    assert lossy["backwards"] == 0
    assert lossy["cursor"] == lossy["sent"]
    assert lossy["received"] + lossy["lost"] == lossy["sent"], "received + lost != sent"
    assert lossy["seq_gaps"] == lossy["lost"], "a gap not counted as lost, or a loss not a gap"

    lossless = _run_stream(seg_name, "block")
    print(f"block stream: {lossless}")
    assert lossless["torn"] == lossless["mixed_up"] == lossless["backwards"] == 0
    assert (lossless["received"], lossless["lost"], lossless["seq_gaps"]) == (ROUNDS, 0, 0)
    assert lossless["sent"] == ROUNDS
