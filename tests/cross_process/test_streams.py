"""Streams between (spawned) processes: one writer to many readers, many writers to one reader,
and a slow reader of a "drop_oldest" stream. Every message is checked: it carries its writer's
id and counter and a CRC of the rest (a torn or mixed payload fails it), sequence numbers only
grow, each writer's counter only grows, and each reader's received + lost equals what was sent
since it attached, with every gap in the sequence numbers counted in `lost` and nothing else.
XSHM_STREAM_MESSAGES scales the traffic (default 3000 per writer); XSHM_SEED repeats a run."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
import xshm

CTX = mp.get_context("spawn")
COUNT = int(os.environ.get("XSHM_STREAM_MESSAGES", "3000"))
WAIT = 120  # seconds any one step may take before the test calls it a hang
HEAD = struct.Struct("<IQ")  # writer id, that writer's counter
MAX_BYTES = 200


def _seed() -> int:
    seed = int(os.environ.get("XSHM_SEED") or random.randrange(2**32))
    print(f"seed={seed} (XSHM_SEED={seed} repeats it)")
    return seed


def make_payload(wid: int, k: int, rng: random.Random) -> bytes:
    body = HEAD.pack(wid, k) + rng.randbytes(rng.randrange(MAX_BYTES - HEAD.size - 4 + 1))
    return body + zlib.crc32(body).to_bytes(4, "little")


def parse_payload(data: bytes) -> tuple[int, int] | None:
    """(writer id, counter), or None when the payload is not one a writer sent whole."""
    if len(data) < HEAD.size + 4 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        return None
    wid, k = HEAD.unpack_from(data)
    return wid, k


class Tally:
    """What one reader saw, message by message."""

    def __init__(self, start: int, from_zero: bool) -> None:
        self.start = start
        self.prev_seq = start - 1
        self.from_zero = from_zero
        self.next_k: dict[int, int] = {}
        self.count: dict[int, int] = {}
        self.pids: dict[int, set[int]] = {}
        self.n = self.torn = self.backwards = self.seq_gaps = 0
        self.repeats = self.skipped = 0  # by a writer's own counter
        self.keys: list[tuple[int, int]] = []  # (writer id, counter) of every whole message
        self.digest = hashlib.sha256()

    def add(self, m: Any) -> None:
        self.n += 1
        if m.seq <= self.prev_seq:
            self.backwards += 1
        else:
            self.seq_gaps += m.seq - self.prev_seq - 1
        self.prev_seq = m.seq
        self.digest.update(m.seq.to_bytes(8, "little") + m.data)
        parsed = parse_payload(m.data)
        if parsed is None:
            self.torn += 1
            return
        wid, k = parsed
        self.keys.append((wid, k))
        self.pids.setdefault(wid, set()).add(m.writer_pid)
        self.count[wid] = self.count.get(wid, 0) + 1
        expect = self.next_k.get(wid, 0 if self.from_zero else k)
        if k < expect:
            self.repeats += 1
        else:
            self.skipped += k - expect
        self.next_k[wid] = k + 1

    def summary(self, r: Any) -> dict[str, Any]:
        return {
            "start": self.start,
            "cursor": r.cursor,
            "received": r.received,
            "lost": r.lost,
            "n": self.n,
            "torn": self.torn,
            "backwards": self.backwards,
            "seq_gaps": self.seq_gaps,
            "repeats": self.repeats,
            "skipped": self.skipped,
            "count": self.count,
            "pids": {w: sorted(p) for w, p in self.pids.items()},
            "digest": self.digest.hexdigest(),
            "keys": self.keys,
        }


def _reader(
    name: str,
    start: str,
    from_zero: bool,
    slow: bool,
    ready: Any,
    done: Any,
    out: Any,
    group: str | None = None,
) -> None:
    """Reads until the parent says every writer has exited and nothing is left to take."""
    with xshm.Stream.open(name, timeout=10) as s, s.reader(start, group=group) as r:
        tally = Tally(r.cursor, from_zero)
        ready.put(r.cursor)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            m = r.try_recv()
            if m is None:
                if done.is_set():
                    m = r.try_recv()  # everything was committed before `done` was set
                    if m is None:
                        break
                else:
                    try:
                        m = r.recv(timeout=0.05)
                    except xshm.WaitTimeoutError:
                        continue
            tally.add(m)
            if slow and tally.n % 25 == 0:
                time.sleep(0.002)
        out.put(tally.summary(r))


def _writer(name: str, wid: int, count: int, seed: int, go: Any, halfway: Any, resume: Any) -> None:
    """Sends `count` messages, through send, send_many batches and try_send, in order."""
    rng = random.Random(seed * 1000 + wid)
    with xshm.Stream.open(name, timeout=10) as s:
        assert go.wait(WAIT)
        k = 0
        while k < count:
            if halfway is not None and k >= count // 2 and not halfway.is_set():
                halfway.set()
                assert resume.wait(WAIT)
            how = rng.random()
            if how < 0.6:
                s.send(make_payload(wid, k, rng), timeout=WAIT)
                k += 1
            elif how < 0.85:
                n = min(rng.randint(2, 6), count - k)
                s.send_many([make_payload(wid, k + j, rng) for j in range(n)], timeout=WAIT)
                k += n
            else:
                p = make_payload(wid, k, rng)
                end = time.monotonic() + WAIT
                while not s.try_send(p):
                    assert time.monotonic() < end, "try_send found no room for WAIT seconds"
                    time.sleep(0)
                k += 1


class Run:
    """The processes of one test, killed and joined whatever happens."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.ready = CTX.Queue()
        self.out = CTX.Queue()
        self.done = CTX.Event()
        self.go = CTX.Event()

    def start(self, target: Any, *args: Any) -> Any:
        p = CTX.Process(target=target, args=args)
        p.start()
        self.procs.append(p)
        return p

    def reader(
        self, name: str, start: str, from_zero: bool, slow: bool = False, group: str | None = None
    ) -> int:
        """Starts a reader process; returns the cursor it attached at."""
        self.start(_reader, name, start, from_zero, slow, self.ready, self.done, self.out, group)
        return int(self.ready.get(timeout=WAIT))

    def finish(self, writers: list[Any], n_readers: int) -> list[dict[str, Any]]:
        for w in writers:
            w.join(timeout=WAIT)
            assert w.exitcode == 0, f"writer exited with {w.exitcode}"
        self.done.set()
        results = [self.out.get(timeout=WAIT) for _ in range(n_readers)]
        for p in self.procs:
            p.join(timeout=WAIT)
            assert p.exitcode == 0
        return results

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=30)


def check_reader(res: dict[str, Any], head: int) -> None:
    """What holds for every reader under either policy."""
    assert res["torn"] == 0, res
    assert res["backwards"] == 0, res
    assert res["repeats"] == 0, res
    assert res["n"] == res["received"], res
    assert res["cursor"] == head, res
    assert res["received"] + res["lost"] == head - res["start"], res
    assert res["seq_gaps"] == res["lost"], "a gap not counted as lost, or a loss not a gap"


def test_one_writer_broadcasts_every_message_to_every_reader(seg_name: str) -> None:
    seed = _seed()
    run = Run()
    halfway, resume = CTX.Event(), CTX.Event()
    try:
        with xshm.Stream.create(seg_name, 16, max_bytes=MAX_BYTES) as s:
            starts = [run.reader(seg_name, "latest", True) for _ in range(3)]
            assert starts == [0, 0, 0]
            w = run.start(_writer, seg_name, 1, COUNT, seed, run.go, halfway, resume)
            run.go.set()
            assert halfway.wait(WAIT)
            late = run.reader(seg_name, "latest", False)  # joins while the writer pauses
            resume.set()
            results = run.finish([w], 4)
            head = s.head
            print(f"head={head} late reader attached at {late} dropped={s.dropped}")
            assert head == COUNT
            assert s.dropped == 0
            assert s.readers() == []
            by_start = sorted(results, key=lambda r: r["start"])
            for res in by_start:
                check_reader(res, head)
                assert res["lost"] == 0, "a 'block' reader lost messages"
                assert res["skipped"] == 0
                assert res["pids"] == {1: [w.pid]}
            assert [r["received"] for r in by_start] == [COUNT, COUNT, COUNT, COUNT - late]
            assert COUNT // 2 <= late < COUNT
            assert len({r["digest"] for r in by_start[:3]}) == 1, "readers saw different streams"
    finally:
        run.close()


def test_many_writers_one_reader_one_total_order(seg_name: str) -> None:
    seed = _seed()
    run = Run()
    writers = 3
    try:
        with xshm.Stream.create(seg_name, 8, max_bytes=MAX_BYTES) as s:
            assert run.reader(seg_name, "latest", True) == 0
            ws = [
                run.start(_writer, seg_name, wid, COUNT, seed, run.go, None, None)
                for wid in range(writers)
            ]
            run.go.set()
            (res,) = run.finish(ws, 1)
            head = s.head
            assert head == writers * COUNT
            check_reader(res, head)
            assert res["lost"] == 0
            assert res["skipped"] == 0
            assert res["count"] == {wid: COUNT for wid in range(writers)}
            assert res["pids"] == {wid: [ws[wid].pid] for wid in range(writers)}
            assert s.dropped == 0
            assert s.abandoned == 0
    finally:
        run.close()


def test_a_group_of_workers_shares_the_messages_of_many_writers(seg_name: str) -> None:
    """3 writer processes, a group of 3 worker processes (one slow) and a broadcast reader: the
    workers take every message exactly once between them (no loss, no duplicate), each worker
    sees each writer's messages in their order, whole; the broadcast reader gets them all."""
    seed = _seed()
    run = Run()
    writers, workers = 3, 3
    try:
        with xshm.Stream.create(seg_name, 8, max_bytes=MAX_BYTES) as s:
            for k in range(workers):
                assert run.reader(seg_name, "latest", False, slow=k == 0, group="pool") == 0
            assert run.reader(seg_name, "latest", True) == 0
            ws = [
                run.start(_writer, seg_name, wid, COUNT, seed, run.go, None, None)
                for wid in range(writers)
            ]
            run.go.set()
            results = run.finish(ws, workers + 1)
            head = s.head
            assert head == writers * COUNT
            everyone = next(r for r in results if r["n"] == head)
            check_reader(everyone, head)
            pool = [r for r in results if r is not everyone]
            taken = [key for r in pool for key in r["keys"]]
            assert sorted(taken) == [(w, k) for w in range(writers) for k in range(COUNT)]
            for r in pool:
                assert (r["torn"], r["backwards"], r["repeats"], r["lost"]) == (0, 0, 0, 0), r
                assert r["n"] == r["received"] > 0, "a worker took nothing"
            (g,) = s.groups()
            assert (g["name"], g["cursor"], g["received"], g["lost"], g["skipped"]) == (
                "pool",
                head,
                head,
                0,
                0,
            )
            assert g["members"] == 0, "the workers left, yet the group counts members"
    finally:
        run.close()


def test_drop_oldest_slow_reader_loses_and_counts_exactly(seg_name: str) -> None:
    seed = _seed()
    run = Run()
    writers = 2
    try:
        with xshm.Stream.create(seg_name, 8, max_bytes=MAX_BYTES, backpressure="drop_oldest") as s:
            s.send(make_payload(9, 0, random.Random(0)))  # before any reader: not counted
            assert run.reader(seg_name, "latest", True, slow=True) == 1
            assert run.reader(seg_name, "latest", True) == 1
            ws = [
                run.start(_writer, seg_name, wid, COUNT, seed, run.go, None, None)
                for wid in range(writers)
            ]
            run.go.set()
            results = run.finish(ws, 2)
            head = s.head
            assert head == 1 + writers * COUNT
            for res in results:
                check_reader(res, head)
                assert res["skipped"] <= res["lost"]
                assert sum(res["count"].values()) == res["received"]
            slow = max(results, key=lambda r: r["lost"])
            print(f"losses: {[(r['received'], r['lost']) for r in results]}")
            assert slow["lost"] > 0, "the slow reader was never lapped: the test shows nothing"
            assert s.dropped == 0
    finally:
        run.close()


def _frame_writer(name: str, count: int) -> None:
    with xshm.Stream.open(name, timeout=10) as s:
        frame = np.empty(s.shape, dtype=s.dtype)
        for k in range(count):
            frame.fill(k)
            s.send(frame, timeout=WAIT)


def test_frames_cross_processes_whole(seg_name: str) -> None:
    run = Run()
    try:
        with (
            xshm.Stream.create(seg_name, 4, dtype="uint64", shape=(32, 32)) as s,
            s.reader("latest") as r,
        ):
            w = run.start(_frame_writer, seg_name, 1000)
            for k in range(1000):
                m = r.recv(timeout=WAIT)
                assert m.seq == k
                assert m.writer_pid == w.pid
                assert m.data.shape == (32, 32)
                assert m.data.dtype == np.uint64
                assert (m.data == k).all(), f"frame {k} is torn or out of order"
            w.join(timeout=WAIT)
            assert w.exitcode == 0
            assert r.lost == 0
    finally:
        run.close()


@pytest.mark.parametrize("backpressure", ["block", "drop_oldest"])
def test_readers_in_other_processes_are_listed_and_reaped_when_they_die(
    seg_name: str, backpressure: str
) -> None:
    run = Run()
    try:
        with xshm.Stream.create(seg_name, 4, backpressure=backpressure) as s:
            run.reader(seg_name, "latest", True)
            (info,) = s.readers()
            assert info["pid"] == run.procs[0].pid
            assert info["alive"] is True
            run.procs[0].kill()
            run.procs[0].join(timeout=WAIT)
            (info,) = s.readers()  # still listed until a writer needs its entry or its room
            assert info["alive"] is False
            for k in range(6):
                s.send(bytes([k]), timeout=WAIT)  # a dead reader never gates
            assert s.head == 6
            if backpressure == "block":  # the full ring made the writer look, and reap it
                assert s.readers() == []
                assert s.header()["reaped"] == 1
    finally:
        run.close()


def _racer(base: str, rounds: int, opener: bool, barrier: Any, out: Any) -> None:
    seen = []
    for r in range(rounds):
        barrier.wait(WAIT)
        name = f"{base}-{r}"
        if opener:
            s = xshm.Stream.open(name, timeout=WAIT)
        else:
            s = xshm.Stream.create(name, 8, max_bytes=32, exist_ok=True)
        with s:
            h = s.header()
            seen.append((h["created_ns"], h["creator_pid"], s.capacity, s.max_bytes))
            s.send(os.getpid().to_bytes(4, "little"), timeout=WAIT)
    out.put((os.getpid(), seen))


def test_racing_creators_with_exist_ok_and_an_opener_share_one_stream(seg_name: str) -> None:
    rounds, racers = 20, 4
    run = Run()
    names = [f"{seg_name}-{r}" for r in range(rounds)]
    try:
        barrier = CTX.Barrier(racers)
        for i in range(racers):
            run.start(_racer, seg_name, rounds, i == 0, barrier, run.out)
        results = dict(run.out.get(timeout=WAIT) for _ in range(racers))
        for p in run.procs:
            p.join(timeout=WAIT)
            assert p.exitcode == 0
        assert set(results) == {p.pid for p in run.procs}
        creators = [p.pid for p in run.procs[1:]]
        for r, name in enumerate(names):
            views = {seen[r] for seen in results.values()}
            assert len(views) == 1, f"round {r}: the racers saw different streams: {views}"
            ((_, creator, capacity, max_bytes),) = views
            assert creator in creators
            assert (capacity, max_bytes) == (8, 32)
            with xshm.Stream.open(name) as s, s.reader("oldest") as rd:
                senders = [int.from_bytes(m.data, "little") for m in rd.recv_many(8, timeout=5)]
                assert sorted(senders) == sorted(results), (
                    f"round {r}: a racer's message is missing"
                )
                assert s.head == racers
    finally:
        run.close()
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                xshm.unlink(name)
