"""Streams survive SIGKILL: writers killed at random instants while they send flat out, readers
killed while they read or while they gate a blocked "block" writer. A reader attached throughout
checks every message (its writer id and counter in a header, every word of the body holding
both: a torn or mixed payload fails it), sequence numbers only grow, each writer's counter has
no gap and no repeat, and what it lost is exactly what dead writers abandoned; each kill costs
at most one message; the writers that live go on. Victims are forked (as in
test_crash_campaign.py); the long-lived reader and writer are spawned.
XSHM_STREAM_ROUNDS kills per campaign (default 60); XSHM_SEED repeats a run; figures printed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest
import xshm

ROUNDS = int(os.environ.get("XSHM_STREAM_ROUNDS", "60"))
SPAWN = mp.get_context("spawn")
FORK = mp.get_context("fork")
HEAD = struct.Struct("<QQ")  # writer id, its counter
WORDS = (0, 8, 200, 500, 4000, 8000)  # bodies of 0 to 64 000 bytes
MAX_BYTES = HEAD.size + 8 * max(WORDS)
WAIT = 60
MAIN, OTHER = 1, 2  # writer ids of this process and of the writer that runs throughout


def _seed() -> int:
    seed = int(os.environ.get("XSHM_SEED") or random.randrange(2**32))
    print(f"seed={seed} (XSHM_SEED={seed} repeats it)")
    return seed


def payload(wid: int, k: int, words: int) -> bytes:
    return HEAD.pack(wid, k) + np.full(words, (wid << 40) | k, dtype=np.uint64).tobytes()


def parse(data: bytes) -> tuple[int, int] | None:
    """(writer id, counter), or None for a payload no writer sent whole."""
    if len(data) < HEAD.size or (len(data) - HEAD.size) % 8:
        return None
    wid, k = HEAD.unpack_from(data)
    words = np.frombuffer(data, dtype=np.uint64, offset=HEAD.size)
    return (wid, k) if bool((words == ((wid << 40) | k)).all()) else None


def fork_process(target: Any, *args: Any) -> Any:
    with warnings.catch_warnings():  # 3.12+ warns about fork() with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        p = FORK.Process(target=target, args=args)
        p.start()
    return p


def stop_all(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(timeout=30)


def _witness(name: str, ready: Any, done: Any, out: Any) -> None:
    """The reader attached throughout: takes every message until `done` and the end of the
    stream, checking each."""
    with xshm.Stream.open(name, timeout=10) as s, s.reader("latest") as r:
        start = expect = r.cursor
        ready.put(start)
        next_k: dict[int, int] = {}
        fig = {"torn": 0, "backwards": 0, "skipped": 0, "repeats": 0, "n": 0, "seq_gaps": 0}
        gaps: list[int] = []
        deadline = time.monotonic() + 10 * WAIT
        while time.monotonic() < deadline:
            m = r.try_recv()
            if m is None:
                if done.is_set() and r.cursor == s.head:
                    break
                try:
                    m = r.recv(timeout=0.05)  # waiting is also what judges a dead writer's hole
                except xshm.WaitTimeoutError:
                    continue
            fig["n"] += 1
            if m.seq < expect:
                fig["backwards"] += 1
            else:
                fig["seq_gaps"] += m.seq - expect
                if len(gaps) < 10_000:
                    gaps.extend(range(expect, m.seq))
            expect = m.seq + 1
            parsed = parse(m.data)
            if parsed is None:
                fig["torn"] += 1
                continue
            wid, k = parsed
            want = next_k.get(wid, k if wid > OTHER else 0)  # victims may start anywhere
            fig["skipped"] += max(k - want, 0)
            fig["repeats"] += k < want
            next_k[wid] = k + 1
        fig.update(start=start, cursor=r.cursor, received=r.received, lost=r.lost)
        out.put((fig, gaps))


def _writer(name: str, wid: int, stop: Any, acks: Any, seed: int, pause: float) -> None:
    """Sends until killed or told to stop; acks[0] = 1 + the seq of the last send that returned."""
    rng = random.Random(seed)
    s = xshm.Stream.open(name, timeout=10)
    k = 0
    while stop is None or not stop.is_set():
        seq = s.send(payload(wid, k, rng.choice(WORDS)), timeout=WAIT)
        if acks is not None:
            acks[0] = seq + 1
        k += 1
        if pause:
            time.sleep(pause)
    s.close()


def _witness_at(s: xshm.Stream, pid: int) -> dict[str, Any]:
    (entry,) = [e for e in s.readers() if e["pid"] == pid]
    return entry


@pytest.mark.parametrize("backpressure", ["block", "drop_oldest"])
def test_writers_killed_while_sending_cost_at_most_one_message_each(
    seg_name: str, backpressure: str
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    block = backpressure == "block"
    procs: list[Any] = []
    with xshm.Stream.create(seg_name, 32, max_bytes=MAX_BYTES, backpressure=backpressure) as s:
        ready, out, done, stop = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
        try:
            witness = SPAWN.Process(target=_witness, args=(seg_name, ready, done, out))
            witness.start()
            procs.append(witness)
            start = ready.get(timeout=WAIT)
            other = SPAWN.Process(target=_writer, args=(seg_name, OTHER, stop, None, seed, 0.001))
            other.start()
            procs.append(other)
            acks = FORK.Array("Q", 1, lock=False)
            kills = inside = holes = 0
            acked: list[int] = []
            main_k = 0
            t0 = time.monotonic()
            # ROUNDS kills, and more (up to 10 times as many) until one lands between a claim
            # and its commit: a campaign that never made a hole would show nothing.
            while kills < ROUNDS or (s.abandoned == 0 and kills < 10 * ROUNDS):
                before = s.abandoned
                acks[0] = 0
                victim = fork_process(_writer, seg_name, 100 + kills, None, acks, seed + kills, 0.0)
                procs.append(victim)
                time.sleep(rng.uniform(0.001, 0.03))
                inside += s.header()["owner_pid"] == victim.pid
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(timeout=WAIT)
                assert victim.exitcode == -signal.SIGKILL, "the victim died of something else"
                kills += 1
                if acks[0]:
                    acked.append(acks[0] - 1)
                # The next writer goes on (recovering the mutex if the victim died holding it).
                seq = s.send(payload(MAIN, main_k, rng.choice(WORDS)), timeout=WAIT)
                main_k += 1
                end = time.monotonic() + WAIT
                while _witness_at(s, witness.pid)["cursor"] <= seq:
                    assert time.monotonic() < end, f"kill {kills}: the reader is stuck before {seq}"
                    assert witness.is_alive()
                    time.sleep(0.001)
                grew = s.abandoned - before
                holes += grew
                assert grew <= 1, f"kill {kills}: one kill abandoned {grew} messages"
                if block:
                    assert _witness_at(s, witness.pid)["lost"] == s.abandoned, (
                        "the reader attached throughout lost other than what dead writers abandoned"
                    )
            stop.set()
            other.join(timeout=WAIT)
            assert other.exitcode == 0
            done.set()
            fig, gaps = out.get(timeout=10 * WAIT)
            witness.join(timeout=WAIT)
            assert witness.exitcode == 0
        finally:
            stop.set()
            done.set()
            stop_all(procs)
        header = s.header()
        print(
            f"stream writer kills ({backpressure}): seed={seed} kills={kills} "
            f"kills_holding_mutex={inside} abandoned={s.abandoned} recoveries="
            f"{header['recoveries']} reaped={header['reaped']} head={s.head} witness={fig} "
            f"seconds={time.monotonic() - t0:.1f}"
        )
        assert fig["torn"] == 0
        assert fig["backwards"] == 0
        assert fig["repeats"] == 0
        assert fig["n"] == fig["received"]
        assert fig["cursor"] == s.head
        assert fig["received"] + fig["lost"] == s.head - start
        assert fig["seq_gaps"] == fig["lost"], "a gap not counted as lost, or a loss not a gap"
        assert holes == s.abandoned
        assert 0 < s.abandoned <= kills, "no kill landed between a claim and its commit"
        assert main_k == kills
        if block:  # every loss is a dead writer's hole, and only a victim's last message
            assert fig["skipped"] == 0, "a writer that lived lost a message"
            assert fig["lost"] == s.abandoned == len(gaps)
            assert not set(acked) & set(gaps), "a message whose send had returned was lost"
        else:
            assert fig["lost"] >= s.abandoned
            assert fig["skipped"] <= fig["lost"]


def _blocked_reader(name: str, ready: Any) -> None:
    s = xshm.Stream.open(name, timeout=10)
    r = s.reader("latest")
    ready.put(r.cursor)
    time.sleep(3600)  # gates the writer until killed


def _blocked_writer(name: str, ready: Any) -> None:
    with xshm.Stream.open(name, timeout=10) as s:
        ready.put("sending")
        s.send(b"from another process")  # no timeout: only the reaping lets it go


@pytest.mark.parametrize("writer_in", ["thread", "process"])
def test_reader_killed_while_gating_a_blocked_writer_releases_it(
    seg_name: str, writer_in: str
) -> None:
    procs: list[Any] = []
    with xshm.Stream.create(seg_name, 4, max_bytes=64) as s:
        ready = SPAWN.Queue()
        try:
            gate = SPAWN.Process(target=_blocked_reader, args=(seg_name, ready))
            gate.start()
            procs.append(gate)
            assert ready.get(timeout=WAIT) == 0
            with s.reader("latest") as mine:  # a live reader besides: it loses nothing
                for k in range(4):
                    s.send(bytes([k]))
                with pytest.raises(xshm.StreamFullError, match=f"pid {gate.pid}"):
                    s.send(b"gated", timeout=0.05)
                assert [m.data for m in mine.recv_many(4, timeout=5)] == [
                    bytes([k]) for k in range(4)
                ]
                result: list[Any] = []
                if writer_in == "thread":
                    t = threading.Thread(
                        target=lambda: result.append(s.send(b"released", timeout=5))
                    )
                    t.start()
                else:
                    w = SPAWN.Process(target=_blocked_writer, args=(seg_name, ready))
                    w.start()
                    procs.append(w)
                    assert ready.get(timeout=WAIT) == "sending"
                end = time.monotonic() + WAIT
                while s.header()["space_waiters"] == 0:  # the writer sleeps on a full ring
                    assert time.monotonic() < end, "the writer never waited"
                    time.sleep(0.001)
                assert s.head == 4
                os.kill(gate.pid, signal.SIGKILL)
                gate.join(timeout=WAIT)
                if writer_in == "thread":
                    t.join(timeout=30)
                    assert not t.is_alive()
                    assert result == [4], "the blocked send did not return its seq"
                else:
                    w.join(timeout=30)
                    assert w.exitcode == 0, "the blocked writer process did not finish"
                m = mine.recv(timeout=5)
                assert m.seq == 4
                assert m.data in (b"released", b"from another process")
                assert mine.lost == 0
            assert s.readers() == []
            assert s.header()["reaped"] == 1
        finally:
            stop_all(procs)


def _reading_victim(name: str, attached: Any) -> None:
    s = xshm.Stream.open(name, timeout=10)
    r = s.reader("oldest")
    attached[0] = 1
    while True:
        m = r.recv(timeout=WAIT)
        parsed = parse(m.data)
        assert parsed is not None, "torn"


def test_readers_killed_while_reading_never_wedge_writers(seg_name: str) -> None:
    seed = _seed()
    rng = random.Random(seed)
    procs: list[Any] = []
    # Two reader entries: the witness's and one victim's. Each new victim needs the dead one's
    # entry reaped.
    with xshm.Stream.create(seg_name, 16, max_bytes=MAX_BYTES, max_readers=2) as s:
        ready, out, done, stop = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
        try:
            witness = SPAWN.Process(target=_witness, args=(seg_name, ready, done, out))
            witness.start()
            procs.append(witness)
            start = ready.get(timeout=WAIT)
            other = SPAWN.Process(target=_writer, args=(seg_name, OTHER, stop, None, seed, 0.0))
            other.start()
            procs.append(other)
            attached = FORK.Array("Q", 1, lock=False)
            t0 = time.monotonic()
            for rnd in range(ROUNDS):
                attached[0] = 0
                victim = fork_process(_reading_victim, seg_name, attached)
                procs.append(victim)
                end = time.monotonic() + WAIT
                while not attached[0]:
                    assert victim.is_alive(), f"round {rnd}: the reader could not attach"
                    assert time.monotonic() < end
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.001, 0.02))
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(timeout=WAIT)
                assert victim.exitcode == -signal.SIGKILL, "the reading victim failed a check"
                # The writer goes on past the dead reader's cursor: more than a ring further.
                target = s.head + 2 * s.capacity
                while s.head < target:
                    assert time.monotonic() < end, f"round {rnd}: the writer is wedged"
                    assert other.is_alive()
                    time.sleep(0.001)
            stop.set()
            other.join(timeout=WAIT)
            assert other.exitcode == 0
            done.set()
            fig, gaps = out.get(timeout=10 * WAIT)
            witness.join(timeout=WAIT)
        finally:
            stop.set()
            done.set()
            stop_all(procs)
        header = s.header()
        print(
            f"stream reader kills: seed={seed} rounds={ROUNDS} reaped={header['reaped']} "
            f"head={s.head} witness={fig} seconds={time.monotonic() - t0:.1f}"
        )
        assert (fig["torn"], fig["backwards"], fig["skipped"], fig["repeats"]) == (0, 0, 0, 0)
        assert (fig["lost"], gaps) == (0, [])
        assert fig["received"] == s.head - start
        assert s.abandoned == 0
        assert header["reaped"] >= ROUNDS - 1  # the last victim's entry may still be listed


def _flood_small(name: str) -> None:
    """Sends 3 KB messages flat out: each is copied with the stream mutex held."""
    s = xshm.Stream.open(name, timeout=10)
    k = 0
    while True:
        s.send(payload(OTHER, k, 380), timeout=WAIT)
        k += 1


def _stopped_holding_the_mutex(s: xshm.Stream, p: Any) -> int:
    """SIGSTOPs `p` at random until it stops holding the stream mutex; returns the tries."""
    end = time.monotonic() + WAIT
    tries = 0
    while time.monotonic() < end:
        tries += 1
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(0.002)  # the stop takes effect
        if s.header()["owner_pid"] == p.pid:
            return tries
        os.kill(p.pid, signal.SIGCONT)
        time.sleep(random.uniform(0, 0.002))
    raise AssertionError("the writer was never stopped holding the mutex")


def test_a_writer_stopped_holding_the_mutex_times_others_out_then_lets_them_go(
    seg_name: str,
) -> None:
    procs: list[Any] = []
    with xshm.Stream.create(seg_name, 64, max_bytes=MAX_BYTES, backpressure="drop_oldest") as s:
        try:
            p = SPAWN.Process(target=_flood_small, args=(seg_name,))
            p.start()
            procs.append(p)
            end = time.monotonic() + WAIT
            while s.head < 100:
                assert time.monotonic() < end and p.is_alive()
                time.sleep(0.001)
            r = s.reader("oldest")  # attached before the stop (attaching takes the mutex)
            tries = _stopped_holding_the_mutex(s, p)
            head = s.head
            assert s.try_send(b"now") is False  # never sleeps, never wedges
            with pytest.raises(xshm.StreamFullError, match="mutex stayed held") as info:
                s.send(b"soon", timeout=0.2)
            assert isinstance(info.value, TimeoutError)
            committed = []
            while (m := r.try_recv()) is not None:  # what was committed stays readable
                committed.append(m)
                assert parse(m.data) is not None
            assert committed, "nothing committed before the stop was readable"
            assert committed[-1].seq >= head - 2
            os.kill(p.pid, signal.SIGCONT)
            seq = s.send(b"after", timeout=WAIT)
            assert seq >= head
            print(f"stopped holding the mutex after {tries} tries at head {head}; sent {seq}")
            r.close()
        finally:
            stop_all(procs)


CLOSE_WHILE_ATTACHING = """
import os, signal, sys, threading, time, xshm
s = xshm.Stream.open(sys.argv[1])
got = []
def attach():
    try:
        got.append(type(s.reader()).__name__)
    except Exception as e:
        got.append(type(e).__name__)
t = threading.Thread(target=attach)
t.start()
time.sleep(0.3)  # the thread waits for the mutex, the GIL released
try:
    s.close()
    closed = "closed"
except ValueError as e:
    closed = "refused: " + str(e)
os.kill(int(sys.argv[2]), signal.SIGCONT)  # the mutex goes free
t.join()
print(closed, "/", got[0])
"""


def test_closing_a_stream_while_another_thread_attaches_a_reader_is_safe(seg_name: str) -> None:
    """Stream.reader() waits for the mutex with the GIL released; a close() from another thread
    meanwhile may be refused, fail the attach with ClosedError, or let it finish (a reader keeps
    the mapping, as readers of a closed handle do); it must never crash."""
    procs: list[Any] = []
    with xshm.Stream.create(seg_name, 64, max_bytes=MAX_BYTES) as s:
        try:
            p = SPAWN.Process(target=_flood_small, args=(seg_name,))
            p.start()
            procs.append(p)
            end = time.monotonic() + WAIT
            while s.head < 100:
                assert time.monotonic() < end and p.is_alive()
                time.sleep(0.001)
            _stopped_holding_the_mutex(s, p)
            child = subprocess.run(
                [sys.executable, "-c", CLOSE_WHILE_ATTACHING, seg_name, str(p.pid)],
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            os.kill(p.pid, signal.SIGCONT)
            out = child.stdout.strip()
            assert child.returncode == 0, f"exit {child.returncode} (-11 is SIGSEGV): {out}"
            closed, _, got = out.partition(" / ")
            assert (closed, got) in {("closed", "ClosedError"), ("closed", "StreamReader")} or (
                closed.startswith("refused") and got == "StreamReader"
            ), out
        finally:
            stop_all(procs)


def _flood_big(name: str) -> None:
    """Sends 64 KB messages flat out: each is copied after the mutex is released."""
    s = xshm.Stream.open(name, timeout=10)
    k = 0
    while True:
        s.send(payload(OTHER, k, max(WORDS)), timeout=WAIT)
        k += 1


def _drain(r: Any, fig: dict[str, int]) -> None:
    while (m := r.try_recv()) is not None:
        fig["n"] += 1
        fig["torn"] += parse(m.data) is None


def _stopped_mid_copy(s: xshm.Stream, r: Any, p: Any, fig: dict[str, int]) -> int:
    """SIGSTOPs `p` until it stops between a claim and its commit: the polling reader `r` then
    stays short of head. Returns the tries."""
    end = time.monotonic() + WAIT
    tries = 0
    while time.monotonic() < end:
        tries += 1
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(0.002)
        _drain(r, fig)
        if r.cursor < s.head:
            return tries
        os.kill(p.pid, signal.SIGCONT)
        time.sleep(random.uniform(0, 0.003))
    raise AssertionError("the writer was never stopped between a claim and its commit")


def test_a_polling_reader_waits_out_a_stopped_writer_and_skips_a_dead_ones_hole(
    seg_name: str,
) -> None:
    """A reader that only polls (try_recv) never skips the slot of a writer that is stopped but
    alive, and gets past the slot of one that died, counting it lost."""
    procs: list[Any] = []
    fig = {"n": 0, "torn": 0}
    with xshm.Stream.create(seg_name, 16, max_bytes=MAX_BYTES) as s, s.reader("latest") as r:
        try:
            p = SPAWN.Process(target=_flood_big, args=(seg_name,))
            p.start()
            procs.append(p)
            tries = _stopped_mid_copy(s, r, p, fig)
            hole = r.cursor
            end = time.monotonic() + 0.3
            while time.monotonic() < end:  # polled well past the hole check
                _drain(r, fig)
                time.sleep(0.005)
            assert (r.cursor, r.lost, s.abandoned) == (hole, 0, 0), (
                "a live writer's slot was skipped"
            )
            os.kill(p.pid, signal.SIGCONT)
            end = time.monotonic() + WAIT
            while r.cursor <= hole:
                assert time.monotonic() < end, "the resumed writer's message never came"
                _drain(r, fig)
            assert r.lost == 0

            tries += _stopped_mid_copy(s, r, p, fig)
            hole = r.cursor
            os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=WAIT)
            end = time.monotonic() + WAIT
            while r.cursor < s.head:
                assert time.monotonic() < end, f"the polling reader is stuck at {r.cursor}"
                _drain(r, fig)
                time.sleep(0.001)
            print(f"holes found after {tries} stops; figures {fig}; lost={r.lost}")
            assert r.cursor == s.head > hole
            assert (r.lost, s.abandoned) == (1, 1)
            assert fig["torn"] == 0
            assert fig["n"] == r.received
            s.send(b"after", timeout=WAIT)  # and a writer goes on
            assert r.try_recv().data == b"after"
        finally:
            stop_all(procs)
