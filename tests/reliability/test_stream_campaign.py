"""The crash campaign for streams: rounds of writers and readers in spawned processes, SIGKILLed
at random instants, alternating "block" and "drop_oldest". Each round makes a small ring with
2-3 writers (send, send_many, try_send, claims committed whole or shorter, claims dropped), a
plain receiver (recv, recv_many), a view reader (recv_view, holding views a short random time),
a group of 2 members and a survivor that is never killed. A killer SIGKILLs writers, readers and
members at random instants (mid-send, mid-claim, holding a view, taking for the group) and may
start replacements. Every message carries its writer's id and counter and a CRC; every reader
logs what it got to its own file line by line (so a killed one's log is good up to its death).
Each round checks: no hang (every wait has a deadline), nothing torn, nothing duplicated (in a
reader, and across the group's members, killed ones included), each writer's order, and
received + lost + skipped = cursor - start for the survivor, every reader that finished and the
group; under "block" the survivor loses only what killed writers had in flight and every send
that returned reaches it. XSHM_PY_STREAM_CRASH_ROUNDS rounds (50 here; the long campaign: 2000);
XSHM_SEED repeats a run. The targeted kills are in test_stream_crashes.py. Figures printed."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xshm

ROUNDS = int(os.environ.get("XSHM_PY_STREAM_CRASH_ROUNDS", "50"))
SPAWN = mp.get_context("spawn")
WAIT = 30  # seconds any one step may take before the campaign calls it a hang
HEAD = struct.Struct("<IQ")  # writer id, that writer's counter
MAX_BYTES = 200
MIN_BYTES = HEAD.size + 4  # the head and the CRC
PER_WRITER = 300  # operations per writer
GROUP = "pool"

# The control block every process of a round shares: a RawArray (no lock a killed process could
# leave held). Words 0 and 1: go, done. Then per process slot: its phase, the messages of the
# operation it has in flight, the messages whose send returned, the claims it dropped.
GO, DONE = 0, 1
PHASE, INFLIGHT, ACKED, DROPS = range(4)
SLOTS = 40
PHASES = [
    "starting",
    "attached",
    "send",
    "send_many",
    "try_send",
    "claim",
    "filling a claim",
    "committing a claim",
    "dropping a claim",
    "receiving",
    "holding a view",
    "taking for the group",
    "finished",
]
STARTING, ATTACHED, SEND, SEND_MANY, TRY_SEND, CLAIM, FILLING, COMMITTING, DROPPING = range(9)
RECEIVING, HOLDING_VIEW, TAKING, FINISHED = range(9, 13)


# Where the killer aims, by victim kind (an empty set: wherever the victim is).
AIM = 0.05
AIMS: dict[str, list[set[int]]] = {
    "writer": [set(), {SEND, SEND_MANY, TRY_SEND}, {CLAIM, COMMITTING, DROPPING}, {FILLING}],
    "plain": [set()],
    "view": [set(), {HOLDING_VIEW}],
    "member": [set()],
}


def at(slot: int, what: int) -> int:
    return 2 + 4 * slot + what


def make_payload(wid: int, k: int, rng: random.Random, size: int | None = None) -> bytes:
    size = rng.randrange(MIN_BYTES, MAX_BYTES + 1) if size is None else size
    body = HEAD.pack(wid, k) + rng.randbytes(size - MIN_BYTES)
    return body + zlib.crc32(body).to_bytes(4, "little")


def parse_payload(data: bytes) -> tuple[int, int] | None:
    """(writer id, counter), or None when the payload is not one a writer sent whole."""
    if len(data) < MIN_BYTES or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        return None
    wid, k = HEAD.unpack_from(data)
    return wid, k


# ---------------------------------------------------------------------------------------------
# The processes


def _writer(name: str, slot: int, ctrl: Any, seed: int) -> None:
    """PER_WRITER operations, writer id `slot`: send, send_many, try_send, claims (committed
    whole or shorter, or dropped). A dropped claim takes no counter: the counters a writer sends
    are 0, 1, 2, ... with no gap."""
    rng = random.Random(seed)
    s = xshm.Stream.open(name, timeout=10)
    ctrl[at(slot, PHASE)] = ATTACHED
    end = time.monotonic() + WAIT
    while not ctrl[GO]:
        assert time.monotonic() < end, "never told to go"
        time.sleep(0.001)
    k = 0
    for _ in range(PER_WRITER):
        how = rng.random()
        if how < 0.3:
            ctrl[at(slot, INFLIGHT)], ctrl[at(slot, PHASE)] = 1, SEND
            s.send(make_payload(slot, k, rng), timeout=WAIT)
            k += 1
        elif how < 0.5:
            n = rng.randint(2, 4)
            ctrl[at(slot, INFLIGHT)], ctrl[at(slot, PHASE)] = n, SEND_MANY
            s.send_many([make_payload(slot, k + j, rng) for j in range(n)], timeout=WAIT)
            k += n
        elif how < 0.6:
            p = make_payload(slot, k, rng)
            ctrl[at(slot, INFLIGHT)], ctrl[at(slot, PHASE)] = 1, TRY_SEND
            give_up = time.monotonic() + WAIT
            while not s.try_send(p):
                assert time.monotonic() < give_up, "try_send found no room for WAIT seconds"
                time.sleep(0.0002)
            k += 1
        else:
            size = rng.randrange(MIN_BYTES, MAX_BYTES + 1)
            nbytes = rng.choice([size, MAX_BYTES])  # the same, or claimed long, committed short
            ctrl[at(slot, INFLIGHT)], ctrl[at(slot, PHASE)] = 1, CLAIM
            c = s.claim(nbytes, timeout=WAIT)
            ctrl[at(slot, PHASE)] = FILLING  # a kill from here to COMMITTING leaves a hole
            with c as buf:
                if rng.random() < 0.25:
                    buf[: nbytes // 2] = 0xEE  # half written, then withdrawn: nothing is sent
                    ctrl[at(slot, PHASE)] = DROPPING
                    c.drop()
                    ctrl[at(slot, DROPS)] += 1
                else:
                    buf[:size] = np.frombuffer(make_payload(slot, k, rng, size), dtype=np.uint8)
                    if rng.random() < 0.3:
                        time.sleep(rng.uniform(0, 0.003))  # an open claim holds the ring back
                    ctrl[at(slot, PHASE)] = COMMITTING
                    c.commit(None if size == nbytes else size)
                    k += 1
        ctrl[at(slot, ACKED)] = k  # every message up to k has been sent (its call returned)
        ctrl[at(slot, INFLIGHT)], ctrl[at(slot, PHASE)] = 0, ATTACHED
        if rng.random() < 0.3:
            time.sleep(0.001)  # pacing, so that the traffic lasts long enough to be hit
    ctrl[at(slot, PHASE)] = FINISHED
    s.close()


class Log:
    """A reader's log: one line per message, one write each (a kill leaves at most one partial
    line, which the parser drops)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode())

    def message(self, seq: int, data: bytes) -> None:
        parsed = parse_payload(data)
        self.line(f"{seq} T" if parsed is None else f"{seq} {parsed[0]} {parsed[1]}")


def _group_cursor(s: xshm.Stream) -> int:
    (g,) = [g for g in s.groups() if g["name"] == GROUP]
    return int(g["cursor"])


def _reader(name: str, slot: int, ctrl: Any, kind: str, start: str, seed: int, path: str) -> None:
    """kind: 'plain' (recv, recv_many), 'view' (recv_view) or 'member' (recv, recv_many in the
    group). Reads until told `done` and caught up with head; logs "S start", each message
    ("seq wid k", "seq T" torn, "seq O" a view overwritten while held) and "E" with its counters."""
    rng = random.Random(seed)
    log = Log(path)
    s = xshm.Stream.open(name, timeout=10)
    r = s.reader(start, group=GROUP if kind == "member" else None)
    log.line(f"S {r.cursor}")
    ctrl[at(slot, PHASE)] = ATTACHED
    end = time.monotonic() + 4 * WAIT
    while True:
        assert time.monotonic() < end, "the reader never caught up"
        done = ctrl[DONE]
        got = False
        if kind == "view":
            ctrl[at(slot, PHASE)] = RECEIVING
            seq = -1
            try:
                with r.recv_view(timeout=0.02) as v:
                    ctrl[at(slot, PHASE)] = HOLDING_VIEW
                    seq, data = v.seq, v.data.tobytes()
                    if rng.random() < 0.2:
                        time.sleep(rng.uniform(0, 0.002))
                log.message(seq, data)
                got = True
            except xshm.WaitTimeoutError:
                pass
            except xshm.OverwrittenError:
                log.line(f"{seq} O")  # counted lost by the reader, not received
                got = True
        else:
            ctrl[at(slot, PHASE)] = TAKING if kind == "member" else RECEIVING
            if rng.random() < 0.3:
                ms = r.recv_many(rng.randint(2, 8), timeout=0.02)
            else:
                try:
                    ms = [r.recv(timeout=0.02)]
                except xshm.WaitTimeoutError:
                    ms = []
            for m in ms:
                log.message(m.seq, m.data)
            got = bool(ms)
        if done and not got:
            caught_up = (_group_cursor(s) if kind == "member" else r.cursor) >= s.head
            if caught_up:
                break
    log.line(f"E {r.received} {r.lost} {r.skipped} {r.cursor}")
    ctrl[at(slot, PHASE)] = FINISHED
    r.close()
    s.close()


# ---------------------------------------------------------------------------------------------
# The checker


class Tally:
    """What one reader (or a whole group) got, message by message: torn payloads, duplicates
    (by writer id and counter), each writer's order, and sequence numbers that went backwards or
    were stepped over."""

    def __init__(self, start: int) -> None:
        self.prev_seq = start - 1
        self.next_k: dict[int, int] = {}
        self.keys: set[tuple[int, int]] = set()
        self.n = self.torn = self.duplicates = self.order = self.backwards = 0
        self.seq_gaps = self.counter_gaps = self.overwritten = 0

    def step(self, seq: int) -> None:
        if seq <= self.prev_seq:
            self.backwards += 1
        else:
            self.seq_gaps += seq - self.prev_seq - 1
            self.prev_seq = seq

    def add(self, seq: int, key: tuple[int, int] | None) -> None:
        """One message received: its (writer id, counter), None if it was torn."""
        self.step(seq)
        self.n += 1
        if key is None:
            self.torn += 1
            return
        if key in self.keys:
            self.duplicates += 1
            return
        self.keys.add(key)
        wid, k = key
        expect = self.next_k.get(wid)
        if expect is not None and k < expect:
            self.order += 1
        else:
            self.counter_gaps += 0 if expect is None else k - expect
            self.next_k[wid] = k + 1

    def end(self, cursor: int) -> None:
        """The reader stopped at `cursor`: what it stepped over after its last message counts."""
        self.seq_gaps += max(cursor - self.prev_seq - 1, 0)
        self.prev_seq = max(self.prev_seq, cursor - 1)

    def feed(self, seq: int, data: bytes) -> None:
        self.add(seq, parse_payload(data))


@dataclass
class Report:
    """One reader's log, parsed: its start, what it got (in order), and its final counters if
    it finished (received, lost, skipped, cursor)."""

    start: int | None = None
    got: list[tuple[int, tuple[int, int] | str | None]] = field(default_factory=list)
    end: tuple[int, int, int, int] | None = None


def read_log(path: Path) -> Report:
    rep = Report()
    if not path.exists():
        return rep
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a last line without its newline was cut by a kill
    for line in lines:
        f = line.split()
        if f[0] == "S":
            rep.start = int(f[1])
        elif f[0] == "E":
            a, b, c, d = (int(x) for x in f[1:])
            rep.end = (a, b, c, d)
        elif f[1] in ("T", "O"):
            rep.got.append((int(f[0]), None if f[1] == "T" else "O"))
        else:
            rep.got.append((int(f[0]), (int(f[1]), int(f[2]))))
    return rep


def tally_of(rep: Report, start: int) -> Tally:
    t = Tally(start)
    for seq, key in rep.got:
        if key == "O":
            t.step(seq)
            t.overwritten += 1
        else:
            t.add(seq, key if isinstance(key, tuple) else None)
    return t


def test_the_checker_catches_torn_duplicated_reordered_and_missing_messages(
    tmp_path: Path,
) -> None:
    """The negative control: the campaign's checks count what they must, so a campaign that
    passes shows the stream, not a checker that sees nothing."""
    rng = random.Random(0)
    good = [make_payload(1, k, rng) for k in range(4)]
    t = Tally(10)
    t.feed(10, good[0])
    t.feed(11, good[1])
    t.feed(12, good[1])  # the same message twice
    bad = bytearray(good[2])
    bad[HEAD.size] ^= 1  # one bit of the body flipped: the CRC no longer matches
    t.feed(13, bytes(bad))
    t.feed(16, good[3])  # seq 14 and 15 never came; counter 2 missing
    t.feed(15, good[0])  # backwards, and a duplicate
    t.feed(17, make_payload(2, 5, rng))
    t.feed(18, make_payload(2, 4, rng))  # writer 2 out of order
    assert (t.n, t.torn, t.duplicates, t.backwards, t.order) == (8, 1, 2, 1, 1)
    assert (t.seq_gaps, t.counter_gaps) == (2, 1)
    assert parse_payload(good[0][:-1]) is None  # cut short
    assert parse_payload(b"") is None

    path = tmp_path / "log"
    log = Log(str(path))
    log.line("S 3")
    log.message(3, good[0])
    log.message(4, bytes(bad))
    log.line("5 O")
    log.message(6, good[0])
    log.line("E 3 1 0 7")
    os.write(log.fd, b"7 1 ")  # a kill in the middle of a line
    os.close(log.fd)
    rep = read_log(path)
    assert rep.start == 3 and rep.end == (3, 1, 0, 7)
    t = tally_of(rep, 3)
    assert (t.n, t.torn, t.duplicates, t.overwritten, t.seq_gaps) == (3, 1, 1, 1, 0)


# ---------------------------------------------------------------------------------------------
# The campaign


@dataclass
class Proc:
    p: Any
    slot: int
    kind: str  # writer, survivor, plain, view, member
    killed: bool = False
    inflight_at_kill: int = 0
    phase_at_kill: int = STARTING


@dataclass
class Figures:
    rounds: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    replacements: int = 0
    messages: int = 0
    received: int = 0
    lost: int = 0
    skipped: int = 0
    abandoned: int = 0
    dropped_claims: int = 0
    overwritten_views: int = 0
    group_received: int = 0
    group_lost: int = 0
    hangs: int = 0
    corrupt: int = 0
    duplicates: int = 0
    order: int = 0


class Round:
    """One round's stream and processes; every process is killed and joined whatever happens."""

    def __init__(self, name: str, logs: Path, ctrl: Any, rnd: int, seed: int) -> None:
        self.name, self.logs, self.ctrl, self.rnd, self.seed = name, logs, ctrl, rnd, seed
        self.procs: list[Proc] = []
        for i in range(len(ctrl)):
            ctrl[i] = 0

    def log_path(self, slot: int) -> Path:
        return self.logs / f"{self.rnd}-{slot}.log"

    def start(self, kind: str, start: str = "latest") -> Proc:
        slot = len(self.procs)
        assert slot < SLOTS
        seed = self.seed * 1_000_003 + self.rnd * 101 + slot
        if kind == "writer":
            args: tuple[Any, ...] = (self.name, slot, self.ctrl, seed)
            p = SPAWN.Process(target=_writer, args=args)
        else:
            reader_kind = "plain" if kind == "survivor" else kind
            args = (self.name, slot, self.ctrl, reader_kind, start, seed, str(self.log_path(slot)))
            p = SPAWN.Process(target=_reader, args=args)
        p.start()
        proc = Proc(p, slot, kind)
        self.procs.append(proc)
        return proc

    def phase(self, proc: Proc) -> str:
        return PHASES[int(self.ctrl[at(proc.slot, PHASE)])]

    def where(self, procs: list[Proc]) -> str:
        return ", ".join(f"{x.kind} {x.slot} (pid {x.p.pid}) in {self.phase(x)}" for x in procs)

    def wait_for(self, procs: list[Proc], what: str, cond: Any) -> None:
        end = time.monotonic() + WAIT
        while True:
            waiting = [x for x in procs if not cond(x)]
            if not waiting:
                return
            # (cond again: it may have come true since, as the process exited)
            dead = [x for x in waiting if not x.p.is_alive() and not x.killed and not cond(x)]
            if dead:
                codes = ", ".join(f"exit {x.p.exitcode}" for x in dead)
                raise Failure(f"{what}: {self.where(dead)} died ({codes})")
            if time.monotonic() > end:
                raise Hang(f"{what}: after {WAIT} s still waiting for {self.where(waiting)}")
            time.sleep(0.001)

    def kill(self, proc: Proc, aim: set[int]) -> str | None:
        """SIGKILLs `proc` once it is in one of the phases `aim` (at once if empty; anyway
        after AIM seconds): where in that phase is left to chance. The victim is stopped first
        and its phase read while it is stopped, so the phase is where the kill landed (read
        before a bare SIGKILL, it may be a step behind: a claim seen open, then committed).
        None if it exited first (a writer that finished)."""
        end = time.monotonic() + AIM
        while aim and self.ctrl[at(proc.slot, PHASE)] not in aim and time.monotonic() < end:
            pass
        try:
            os.kill(proc.p.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        end = time.monotonic() + WAIT
        while proc.p.is_alive() and not stopped(proc.p.pid):
            if time.monotonic() > end:
                raise Hang(f"{proc.kind} {proc.slot} (pid {proc.p.pid}) never stopped")
        if not proc.p.is_alive():
            return None
        phase = int(self.ctrl[at(proc.slot, PHASE)])
        proc.inflight_at_kill = self.ctrl[at(proc.slot, INFLIGHT)]
        os.kill(proc.p.pid, signal.SIGKILL)
        proc.p.join(timeout=WAIT)
        proc.killed = True
        proc.phase_at_kill = phase
        return PHASES[phase]

    def close(self) -> None:
        for x in self.procs:
            if x.p.is_alive():
                x.p.kill()
            x.p.join(timeout=WAIT)
        for x in self.procs:
            with contextlib.suppress(FileNotFoundError):
                self.log_path(x.slot).unlink()


def stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/PID/stat), or gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in "Tt"
    except FileNotFoundError:
        return True


class Hang(Exception):
    pass


class Failure(Exception):
    pass


def live(procs: list[Proc], kind: str) -> list[Proc]:
    return [x for x in procs if x.kind == kind and not x.killed and x.p.is_alive()]


def run_round(
    rnd: int, name: str, backpressure: str, logs: Path, ctrl: Any, seed: int, fig: Figures
) -> list[str]:
    """One round; returns what went wrong (empty: nothing)."""
    rng = random.Random(seed * 7919 + rnd)
    block = backpressure == "block"
    capacity = rng.choice([8, 12, 16])
    problems: list[str] = []
    with xshm.Stream.create(
        name, capacity, max_bytes=MAX_BYTES, backpressure=backpressure, max_readers=16, max_groups=2
    ) as s:
        run = Round(name, logs, ctrl, rnd, seed)
        try:
            survivor = run.start("survivor")
            readers = [run.start("plain"), run.start("view"), run.start("member")]
            readers.append(run.start("member"))
            writers = [run.start("writer") for _ in range(rng.randint(2, 3))]
            run.wait_for(
                [survivor, *readers, *writers],
                "attaching",
                lambda x: ctrl[at(x.slot, PHASE)] != STARTING,
            )
            ctrl[GO] = 1
            kills = rng.randint(2, 5)
            while kills and any(
                x.p.is_alive() for x in run.procs if x.kind == "writer" and not x.killed
            ):
                time.sleep(rng.uniform(0.005, 0.15))
                kind = rng.choices(["writer", "plain", "view", "member"], [4, 2, 2, 3])[0]
                victims = [x for x in live(run.procs, kind) if ctrl[at(x.slot, PHASE)] != FINISHED]
                if kind == "member" and block:
                    # A group with no member gates nothing: under "block" one member is kept
                    # attached, so the group's losses stay bounded by the kills.
                    attached = [x for x in victims if ctrl[at(x.slot, PHASE)] != STARTING]
                    victims = attached if len(attached) >= 2 else []
                if not victims:
                    continue
                victim = rng.choice(victims)
                phase = run.kill(victim, rng.choice(AIMS[kind]))
                if phase is None:
                    continue
                key = f"{victim.kind}: {phase}"
                fig.kills[key] = fig.kills.get(key, 0) + 1
                kills -= 1
                if rng.random() < 0.5:
                    run.start(victim.kind, rng.choice(["oldest", "latest"]))
                    fig.replacements += 1
            writers = [x for x in run.procs if x.kind == "writer"]
            run.wait_for(
                writers,
                "writers finishing",
                lambda x: x.killed or ctrl[at(x.slot, PHASE)] == FINISHED,
            )
            ctrl[DONE] = 1
            everyone = [x for x in run.procs if not x.killed]
            run.wait_for(everyone, "readers draining", lambda x: not x.p.is_alive())
            for x in everyone:
                if x.p.exitcode != 0:
                    problems.append(f"{x.kind} {x.slot} exited with {x.p.exitcode}")
            problems += check_round(run, s, block, fig)
        except Hang as e:
            fig.hangs += 1
            problems.append(f"hang: {e}")
        except Failure as e:
            problems.append(str(e))
        finally:
            run.close()
            s.unlink()
    return [f"round {rnd} ({backpressure}, capacity {capacity}): {p}" for p in problems]


def drain_group(s: xshm.Stream) -> Report:
    """Joins the group from this process and takes what is left (recovering the group's mutex
    if its last holder died), so that the group's counters can be checked."""
    rep = Report()
    with s.reader("latest", group=GROUP) as r:
        end = time.monotonic() + WAIT
        while True:
            m = r.try_recv()
            if m is not None:
                parsed = parse_payload(m.data)
                rep.got.append((m.seq, parsed))
                continue
            if _group_cursor(s) >= s.head:
                break
            if time.monotonic() > end:
                raise Hang(f"draining the group: stuck at {_group_cursor(s)} of {s.head}")
            with contextlib.suppress(xshm.WaitTimeoutError):
                m = r.recv(timeout=0.02)
                rep.got.append((m.seq, parse_payload(m.data)))
    return rep


def check_round(run: Round, s: xshm.Stream, block: bool, fig: Figures) -> list[str]:
    problems: list[str] = []
    ctrl = run.ctrl
    head = s.head
    writers = [x for x in run.procs if x.kind == "writer"]
    killed_writers = [x for x in writers if x.killed]
    in_flight = sum(x.inflight_at_kill for x in killed_writers)
    holes = sum(x.phase_at_kill == FILLING for x in killed_writers)  # each left one, for sure
    drops = sum(ctrl[at(x.slot, DROPS)] for x in writers)
    fig.rounds += 1
    fig.messages += head
    fig.abandoned += s.abandoned
    fig.dropped_claims += drops
    if s.abandoned > in_flight:
        problems.append(f"abandoned {s.abandoned} > {in_flight} in flight in killed writers")

    def common(who: str, t: Tally) -> None:
        fig.corrupt += t.torn
        fig.duplicates += t.duplicates
        fig.order += t.order + t.backwards
        if any((t.torn, t.duplicates, t.order, t.backwards)):
            problems.append(
                f"{who}: torn {t.torn} duplicates {t.duplicates} order {t.order} "
                f"backwards {t.backwards}"
            )

    group_keys: list[tuple[int, int]] = []  # what the members got, killed ones included
    group_seqs: list[int] = []
    for x in run.procs:
        if x.kind == "writer":
            continue
        rep = read_log(run.log_path(x.slot))
        who = f"{x.kind} {x.slot}" + (" (killed)" if x.killed else "")
        if rep.start is None:
            continue  # killed before it attached
        t = tally_of(rep, rep.start)
        common(who, t)
        if x.kind == "member":  # each member's own order was checked above
            group_seqs += [seq for seq, _ in rep.got]
            group_keys += [key for _, key in rep.got if isinstance(key, tuple)]
            continue
        if x.killed:
            continue
        if rep.end is None:
            problems.append(f"{who}: finished without its counters")
            continue
        received, lost, skipped, cursor = rep.end
        t.end(cursor)
        fig.overwritten_views += t.overwritten
        if x.kind == "survivor":
            fig.received += received
            fig.lost += lost
            fig.skipped += skipped
        if (t.n, cursor) != (received, head) or received + lost + skipped != cursor - rep.start:
            problems.append(
                f"{who}: logged {t.n}, received {received} lost {lost} skipped {skipped}, "
                f"cursor {cursor} start {rep.start} head {head}"
            )
        if t.seq_gaps + t.overwritten != lost + skipped:
            problems.append(f"{who}: {t.seq_gaps} gaps, {t.overwritten} overwritten, {rep.end}")
        if skipped > drops + len(killed_writers):
            problems.append(f"{who}: skipped {skipped} > {drops} dropped claims + writer kills")
        if block:  # every reader that finished, late ones included, loses only dead writers'
            if lost > in_flight:
                problems.append(f"{who}: lost {lost} > {in_flight} in flight in killed writers")
            if t.counter_gaps or t.overwritten:
                problems.append(f"{who}: counter gaps {t.counter_gaps}, {t.overwritten} views")
        elif t.counter_gaps > lost:
            problems.append(f"{who}: counter gaps {t.counter_gaps} > lost {lost}")
        if x.kind != "survivor":
            continue
        if lost < holes:
            problems.append(f"survivor lost {lost} < {holes} writers killed filling a claim")
        if block and skipped < drops:
            problems.append(f"survivor: skipped {skipped} < {drops} dropped claims")
        for w in writers if block else []:
            acked = ctrl[at(w.slot, ACKED)]
            if t.next_k.get(w.slot, 0) < acked:
                problems.append(
                    f"survivor: writer {w.slot}'s sends up to {acked} returned, "
                    f"it got {t.next_k.get(w.slot, 0)}"
                )

    drained = drain_group(s)
    common("the group's drainer", tally_of(drained, drained.got[0][0] if drained.got else 0))
    group_seqs += [seq for seq, _ in drained.got]
    group_keys += [key for _, key in drained.got if isinstance(key, tuple)]
    dup_keys = len(group_keys) - len(set(group_keys))
    dup_seqs = len(group_seqs) - len(set(group_seqs))
    fig.duplicates += dup_keys
    (g,) = s.groups()
    fig.group_received += g["received"]
    fig.group_lost += g["lost"]
    if dup_keys or dup_seqs:
        problems.append(f"group: {dup_keys} messages and {dup_seqs} seqs taken twice")
    if g["cursor"] != head or g["received"] + g["lost"] + g["skipped"] != g["cursor"] - g["start"]:
        problems.append(f"group: {g} at head {head}")
    if len(group_seqs) > g["received"]:
        problems.append(f"group: members logged {len(group_seqs)} > received {g['received']}")
    member_kills = sum(1 for x in run.procs if x.kind == "member" and x.killed)
    if block and g["lost"] > in_flight + member_kills:
        problems.append(f"group lost {g['lost']} > {in_flight} in flight + {member_kills} kills")
    return problems


def test_stream_crash_campaign(seg_name: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("XSHM_SEED") or random.randrange(2**32))
    print(f"seed={seed} (XSHM_SEED={seed} repeats it)")
    ctrl = SPAWN.RawArray("q", 2 + 4 * SLOTS)
    fig = Figures()
    problems: list[str] = []
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        backpressure = "block" if rnd % 2 == 0 else "drop_oldest"
        problems = run_round(rnd, seg_name, backpressure, tmp_path, ctrl, seed, fig)
        if problems:
            break  # the seed and the round say where
    kills = sum(fig.kills.values())
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(fig.kills.items()))
    print(
        f"stream crash campaign (Python): seed={seed} rounds={fig.rounds} kills={kills} "
        f"({by_kind}) replacements={fig.replacements} messages={fig.messages} "
        f"survivor_received={fig.received} survivor_lost={fig.lost} "
        f"survivor_skipped={fig.skipped} dropped_claims={fig.dropped_claims} "
        f"abandoned={fig.abandoned} overwritten_views={fig.overwritten_views} "
        f"group_received={fig.group_received} group_lost={fig.group_lost} hangs={fig.hangs} "
        f"corrupt={fig.corrupt} duplicates={fig.duplicates} order_violations={fig.order} "
        f"seconds={time.monotonic() - t0:.1f}"
    )
    assert not problems, "\n".join(problems)
    assert fig.rounds == ROUNDS
    assert (fig.hangs, fig.corrupt, fig.duplicates, fig.order) == (0, 0, 0, 0)
    assert kills >= ROUNDS, "fewer kills than rounds: the killer missed"
    assert fig.dropped_claims > 0 and fig.skipped > 0, "no dropped claim reached the survivor"
    assert fig.abandoned > 0, "no writer was killed with a claim open: the campaign missed"
    missed = {"view: holding a view", "member: taking for the group"} - set(fig.kills)
    assert not missed, f"no kill landed at these instants: {missed}"
