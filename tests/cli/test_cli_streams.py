"""The xshm command on streams, run as a subprocess against real streams whose readers live in
other processes: ls lists them beside records, inspect shows the counters and the reader table
(alive, cursor, lag, lost, received), watch shows messages/s and the readers' lag (piped and in
a real terminal through tmux), rm removes them; none of it writes to the stream or takes its
mutex."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xshm

XSHM = [sys.executable, "-m", "xshm"]
DEADLINE = 30.0  # seconds any one exchange with a helper process may take (a watchdog)

# A reader in its own process, driven line by line on stdin: "recv N" receives N messages (in
# order, checked), "exit" closes the reader and leaves. It answers each line with one line.
READER = r"""
import sys, xshm
s = xshm.Stream.open(sys.argv[1], timeout=10)
r = s.reader(start=sys.argv[2])
print("ready", flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "recv":
        seqs = [r.recv(timeout=10).seq for _ in range(int(arg[0]))]
        assert seqs == sorted(set(seqs)), seqs
        print("got", *seqs, flush=True)
    elif cmd == "exit":
        r.close()
        s.close()
        print("bye", flush=True)
        break
"""

# Holds the stream's robust mutex (the header's opaque mutex bytes, LAYOUT.md Part II) with
# pthread_mutex_lock until told to let go: a stand-in for a writer that holds it.
HOLDER = r"""
import ctypes, mmap, os, sys
fd = os.open("/dev/shm/" + sys.argv[1], os.O_RDWR)
mm = mmap.mmap(fd, os.fstat(fd).st_size)
libc = ctypes.CDLL(None)
mutex = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(mm, int(sys.argv[2]))))
assert libc.pthread_mutex_lock(mutex) == 0
print("held", flush=True)
sys.stdin.readline()
assert libc.pthread_mutex_unlock(mutex) == 0
print("released", flush=True)
"""
STREAM_MUTEX_OFFSET = 512  # docs/LAYOUT.md, the stream header's `mutex` row


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSHM, *args], capture_output=True, text=True, timeout=timeout)


def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], DEADLINE)
    assert ready, f"helper pid {p.pid} said nothing for {DEADLINE} s"
    line = p.stdout.readline()
    assert line, f"helper pid {p.pid} ended: {p.stderr.read() if p.stderr else ''}"
    return line.strip()


class Helper:
    """A helper process speaking one line per command."""

    def __init__(self, src: str, *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", src, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.first = _line(self.p)

    @property
    def pid(self) -> int:
        return self.p.pid

    def ask(self, cmd: str) -> str:
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return _line(self.p)

    def kill(self) -> None:
        self.p.kill()
        self.p.wait(timeout=DEADLINE)

    def close(self) -> None:
        if self.p.poll() is None:
            self.kill()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def helpers() -> Iterator[list[Helper]]:
    started: list[Helper] = []
    yield started
    for h in started:
        h.close()


def reader(helpers: list[Helper], name: str, start: str = "oldest") -> Helper:
    h = Helper(READER, name, start)
    helpers.append(h)
    assert h.first == "ready"
    return h


@pytest.fixture
def stream(seg_name: str) -> Iterator[xshm.Stream]:
    with xshm.Stream.create(seg_name, 8, max_bytes=64) as s:
        yield s


def _ls_row(name: str) -> dict[str, object]:
    r = run("ls", "--all", "--json")
    assert r.returncode == 0, r.stderr
    found: dict[str, object] = next(x for x in json.loads(r.stdout) if x["name"] == name)
    return found


def _ls_line(name: str) -> str:
    r = run("ls")
    assert r.returncode == 0, r.stderr
    return next(ln for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] == name)


def test_ls_lists_streams_beside_records(
    seg_name: str, stream: xshm.Stream, helpers: list[Helper]
) -> None:
    """A kind column; a stream's capacity, message size or frame, backpressure, readers (one in
    another process), head and dropped; a record keeps its shape, dtype, seq and counter."""
    r = reader(helpers, stream.name)
    for k in range(5):
        stream.send(b"m%d" % k)
    assert r.ask("recv 2") == "got 0 1"
    frames = xshm.Stream.create(
        seg_name + "-f", 4, dtype="float32", shape=(2, 3), backpressure="drop_oldest"
    )
    record = xshm.SharedMemoryManager.create(seg_name + "-r", shape=(7,), dtype="int16")
    try:
        record.publish(counter=42)
        for k in range(6):  # no reader: the ring keeps the last 4, 2 dropped
            frames.send(np.full((2, 3), k, dtype="float32"))
        line = _ls_line(stream.name).split()
        assert line[:2] == [stream.name, "stream"], line
        assert " ".join(line[6:]) == "8 x 64 B, block head 5, dropped 0, 1 reader", line
        assert " ".join(_ls_line(frames.name).split()[6:]) == (
            "4 x float32 (2, 3), drop_oldest head 6, dropped 2, 0 readers"
        )
        rline = _ls_line(record.name).split()
        assert rline[1] == "record" and rline[4] == "0600", rline
        assert " ".join(rline[6:]) == "int16 (7,), msg 256 B seq 1, counter 42", rline

        row = _ls_row(stream.name)
        assert row["xshm"] is True and row["kind"] == "stream"
        want = {
            "capacity": 8,
            "max_bytes": 64,
            "dtype": None,
            "shape": None,
            "backpressure": "block",
            "max_readers": 16,
            "readers": 1,
            "readers_alive": 1,
            "head": 5,
            "dropped": 0,
            "abandoned": 0,
            "mode": "0600",
        }
        assert {k: row[k] for k in want} == want, row
        assert "seq" not in row and "counter" not in row, "kind-specific fields only"
        frow = _ls_row(frames.name)
        assert frow["dtype"] == "float32" and frow["shape"] == [2, 3]
        assert frow["max_bytes"] == 24 and frow["dropped"] == 2
        assert frow["backpressure"] == "drop_oldest" and frow["readers"] == 0
        rrow = _ls_row(record.name)
        assert rrow["kind"] == "record" and rrow["seq"] == 1 and rrow["counter"] == 42
        assert "head" not in rrow and "capacity" not in rrow
    finally:
        frames.unlink()
        frames.close()
        record.unlink()
        record.close()


def test_ls_counts_dead_readers(stream: xshm.Stream, helpers: list[Helper]) -> None:
    """A reader whose process was killed stays attached until a writer reaps it: ls says so."""
    reader(helpers, stream.name)
    dead = reader(helpers, stream.name)
    dead.kill()
    assert " ".join(_ls_line(stream.name).split()[6:]) == (
        "8 x 64 B, block head 0, dropped 0, 2 readers (1 dead)"
    )
    row = _ls_row(stream.name)
    assert row["readers"] == 2 and row["readers_alive"] == 1


def test_inspect_stream_shows_counters_and_reader_table(
    stream: xshm.Stream, helpers: list[Helper]
) -> None:
    """Readers in three processes: one caught up, one behind, one killed (dead, not yet
    reaped); for each, received + lost = the messages sent since it attached."""
    caught_up = reader(helpers, stream.name)
    behind = reader(helpers, stream.name)
    killed = reader(helpers, stream.name)
    for k in range(6):
        stream.send(b"m%d" % k)
    assert caught_up.ask("recv 6") == "got 0 1 2 3 4 5"
    assert behind.ask("recv 2") == "got 0 1"
    killed.kill()

    info = json.loads(run("inspect", stream.name, "--json").stdout)
    assert info["kind"] == "stream" and info["layout_version"] == xshm._core.STREAM_LAYOUT_VERSION
    assert info["capacity"] == 8 and info["max_bytes"] == 64 and info["backpressure"] == "block"
    assert info["dtype"] is None and info["shape"] is None
    assert info["head"] == 6 and info["dropped"] == 0 and info["abandoned"] == 0
    assert info["recoveries"] == 0 and info["reaped"] == 0
    assert info["writer_mutex_owner"] == 0
    assert info["waiting_readers"] == 0 and info["waiting_writers"] == 0
    assert info["mode"] == "0600" and info["creator_pid"] == os.getpid()
    table = {
        r["pid"]: (r["alive"], r["cursor"], r["lag"], r["lost"], r["received"])
        for r in info["readers"]
    }
    assert table == {
        caught_up.pid: (True, 6, 0, 0, 6),
        behind.pid: (True, 2, 4, 0, 2),
        killed.pid: (False, 0, 6, 0, 0),
    }, table
    assert sorted(r["index"] for r in info["readers"]) == [0, 1, 2]
    for r in info["readers"]:
        assert r["received"] + r["lost"] + r["lag"] == info["head"]

    out = run("inspect", stream.name)
    assert out.returncode == 0, out.stderr
    rows = [ln.rstrip() for ln in out.stdout.splitlines()]
    for want in (
        f"segment           {stream.name}",
        "kind              stream (every message, in order)",
        "messages          bytes, up to 64 each",
        "head              6 (the next message's sequence number)",
        "dropped           0 (overwritten while no reader was attached)",
        "writer mutex      free",
        "sleeping readers  0",
        "waiting writers   0",
        "readers           3 of 16 attached, 1 of them dead (a writer detaches them)",
    ):
        assert want in rows, (want, out.stdout)
    assert any(ln.startswith("backpressure      block (writers wait") for ln in rows)
    at = next(i for i, ln in enumerate(rows) if "received" in ln)
    assert rows[at].split() == [
        *("reader", "pid", "alive", "cursor", "lag", "lost", "received", "attached")
    ]
    cells = {int(ln.split()[1]): ln.split()[2:7] for ln in rows[at + 1 :] if ln.split()}
    assert cells == {
        caught_up.pid: ["alive", "6", "0", "0", "6"],
        behind.pid: ["alive", "2", "4", "0", "2"],
        killed.pid: ["dead", "0", "6", "0", "0"],
    }, out.stdout


def test_inspect_frames_and_a_lapped_reader(seg_name: str, helpers: list[Helper]) -> None:
    """A drop_oldest frame stream: a reader in another process lapped by the writer counts what
    it lost, and inspect shows it (received + lost = sent)."""
    with xshm.Stream.create(
        seg_name, 4, dtype="float32", shape=(2, 3), backpressure="drop_oldest"
    ) as s:
        r = reader(helpers, s.name)
        for k in range(7):
            s.send(np.full((2, 3), k, dtype="float32"))
        got = r.ask("recv 1").split()[1:]
        info = json.loads(run("inspect", s.name, "--json").stdout)
        (row,) = info["readers"]
        assert info["dtype"] == "float32" and info["shape"] == [2, 3]
        assert info["max_bytes"] == 24 and info["backpressure"] == "drop_oldest"
        assert row["lost"] > 0 and row["lost"] == int(got[0]), (row, got)
        assert row["received"] + row["lost"] + row["lag"] == 7 == info["head"]
        text = run("inspect", s.name).stdout
        assert "frames float32, shape (2, 3) (24 bytes)" in text
        assert "drop_oldest (writers never wait; a lapped reader counts what it lost)" in text


def _watch_frames(p: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    while True:
        yield json.loads(_line(p))


def test_watch_stream_rate_and_lag_over_processes(
    stream: xshm.Stream, helpers: list[Helper]
) -> None:
    """watch --json while this process sends and a reader in another process receives part: the
    frames follow head (messages/s > 0 in the frame that saw the sends) and the reader's lag."""
    r = reader(helpers, stream.name)
    p = subprocess.Popen(
        [*XSHM, "watch", stream.name, "--json", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        frames = _watch_frames(p)
        first = next(frames)
        assert first["head"] == 0 and first["messages_per_s"] == 0.0
        assert first["readers"] == [
            {"index": 0, "pid": r.pid, "alive": True, "lag": 0, "lost": 0, "received": 0}
        ]
        for k in range(5):
            stream.send(b"m%d" % k)
        assert r.ask("recv 2") == "got 0 1"
        rates: list[float] = []
        for f in frames:  # until a frame shows all of it (the watchdog bounds the wait)
            rates.append(f["messages_per_s"])
            readers = f["readers"]
            if f["head"] == 5 and readers[0]["received"] == 2:
                break
        assert readers[0]["lag"] == 3 and readers[0]["alive"] is True
        assert any(x > 0 for x in rates), rates
        assert f["dropped"] == 0 and f["abandoned"] == 0
    finally:
        p.kill()
        p.communicate()


def test_watch_stream_plain_when_piped(stream: xshm.Stream, helpers: list[Helper]) -> None:
    reader(helpers, stream.name)
    dead = reader(helpers, stream.name)
    dead.kill()
    for k in range(3):
        stream.send(b"m%d" % k)
    r = run("watch", stream.name, "--interval", "0.05", "--count", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("\x1b[" not in ln for ln in lines)
    for ln in lines:
        assert ln.startswith("head=3 messages/s=0.0 dropped=0 abandoned=0 readers=2 lag=#"), ln
        assert ln.endswith(("lag=#0:3,#1:3(dead)", "lag=#1:3(dead),#0:3")), ln


def test_inspecting_a_stream_never_writes_nor_takes_the_mutex(
    stream: xshm.Stream, helpers: list[Helper]
) -> None:
    """With another process holding the stream's mutex, ls, inspect and watch still answer (a
    lock would wait forever: the subprocess timeout is the watchdog), and every byte of the
    segment is as it was."""
    r = reader(helpers, stream.name)
    for k in range(3):
        stream.send(b"m%d" % k)
    assert r.ask("recv 1") == "got 0"
    holder = Helper(HOLDER, stream.name[1:], str(STREAM_MUTEX_OFFSET))
    helpers.append(holder)
    assert holder.first == "held"
    assert stream.try_send(b"x") is False, "the helper holds the stream's own mutex"
    path = f"/dev/shm{stream.name}"
    with open(path, "rb") as f:
        before = f.read()
    for args in (
        ["ls"],
        ["ls", "--json"],
        ["inspect", stream.name],
        ["inspect", stream.name, "--json"],
        ["watch", stream.name, "--count", "2", "--interval", "0.05"],
    ):
        out = run(*args, timeout=DEADLINE)
        assert out.returncode == 0 and out.stderr == "", (args, out.stderr)
    with open(path, "rb") as f:
        assert f.read() == before, "inspecting wrote to the stream"
    assert len(stream.readers()) == 1, "no reader attached by the commands"
    assert holder.ask("") == "released"
    assert stream.try_send(b"x") is True


def test_rm_removes_a_stream_its_users_keep_going(
    stream: xshm.Stream, helpers: list[Helper]
) -> None:
    """xshm rm removes the name; a writer and a reader (another process) that have it open keep
    their mapping and go on."""
    r = reader(helpers, stream.name)
    out = run("rm", stream.name[1:])
    assert out.returncode == 0 and out.stdout.strip() == f"removed {stream.name}", out
    assert not os.path.exists(f"/dev/shm{stream.name}")
    assert stream.name not in run("ls").stdout
    stream.send(b"after rm")
    assert r.ask("recv 1") == "got 0"
    out = run("rm", stream.name[1:])
    assert out.returncode == 1 and "no segment named" in out.stderr
    out = run("inspect", stream.name[1:])
    assert out.returncode == 1 and "no segment named" in out.stderr


def test_stream_never_made_ready_is_reported(seg_name: str) -> None:
    """A stream whose state word never turned READY: one line with what is known and the way to
    remove it; ls --all notes 'not ready'; rm --force removes it."""
    xshm.Stream.create(seg_name, 4, max_bytes=8).close()
    path = f"/dev/shm/{seg_name}"
    with open(path, "r+b") as f:
        head = f.read(4096)
        assert head.count(b"REDY") == 1, "the state word, READY, appears once in the header"
        f.seek(head.index(b"REDY"))
        f.write(bytes(4))
    r = run("inspect", seg_name)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "not READY" in r.stderr and "modified" in r.stderr
    assert r.stderr.count(f"xshm rm --force {seg_name}") == 1, "the removal, said once"
    assert "died" not in r.stderr, "no guess about its creator"
    assert _ls_row(f"/{seg_name}")["note"] == "not ready"
    assert run("rm", "--force", seg_name).returncode == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("command", ["inspect", "ls"])
def test_a_stream_inspected_while_its_creator_writes_the_header(
    seg_name: str, command: str
) -> None:
    """inspect and ls look at a segment's kind while its creator still holds its lock and writes
    the header (all zeros so far): they wait for it as an opener does and show it as the stream
    it is, instead of handing the zeros to the record opener that then refuses a stream."""
    xshm.Stream.create(seg_name, 4, max_bytes=8).close()
    fd = os.open(f"/dev/shm/{seg_name}", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a creator holds it until READY (LAYOUT.md)
        page = os.pread(fd, 4096, 0)
        state = page.index(b"REDY")
        os.pwrite(fd, bytes(4096), 0)  # a header still being written
        args = ["inspect", seg_name, "--json"] if command == "inspect" else ["ls", "--json"]
        p = subprocess.Popen(
            [*XSHM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            time.sleep(0.5)  # it has found the segment and waits for the creator
            os.pwrite(fd, page[:state] + bytes(4) + page[state + 4 :], 0)
            os.pwrite(fd, b"REDY", state)  # READY last, as a creator publishes it
            fcntl.flock(fd, fcntl.LOCK_UN)
            out, err = p.communicate(timeout=DEADLINE)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        os.close(fd)
    assert p.returncode == 0, err
    shown = json.loads(out)
    if command == "ls":
        shown = next(x for x in shown if x["name"] == f"/{seg_name}")
    assert shown["kind"] == "stream", shown


def _closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    rfd, wfd = os.pipe()
    os.close(rfd)
    try:
        r = subprocess.run(
            [*XSHM, *args], stdout=wfd, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(wfd)
    return subprocess.CompletedProcess(r.args, r.returncode, "", r.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["inspect", "{}"],
        ["inspect", "{}", "--json"],
        ["watch", "{}", "--interval", "0.01"],
        ["watch", "{}", "--json", "--interval", "0.01"],
    ],
    ids=lambda a: " ".join(a),
)
def test_closed_pipe_is_quiet_on_a_stream(
    stream: xshm.Stream, helpers: list[Helper], args: list[str]
) -> None:
    reader(helpers, stream.name)
    r = _closed_pipe_run(*[a.format(stream.name) for a in args])
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr


BOX = str.maketrans({c: " " for c in "│┃║┆"})


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def test_watch_stream_in_a_real_terminal(stream: xshm.Stream, helpers: list[Helper]) -> None:
    """In a terminal watch redraws in place: messages/s, head and the readers' lag table."""
    assert shutil.which("tmux"), "tmux is needed (make test installs it)"
    r = reader(helpers, stream.name)
    session = f"xshm-swatch-{os.getpid()}"
    cmd = " ".join([*XSHM, "watch", stream.name, "--interval", "0.1"])
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", cmd)
    try:
        screen = ""
        deadline = time.monotonic() + DEADLINE
        sent = 0
        while time.monotonic() < deadline:
            if sent < 7:
                stream.send(b"m%d" % sent)
                sent += 1
            time.sleep(0.1)
            screen = _tmux("capture-pane", "-p", "-t", session)
            rows = [ln.translate(BOX).split() for ln in screen.splitlines()]
            shown = any(row[:2] == ["head", "7"] for row in rows)
            if sent == 7 and shown and any(row[:3] == ["0", str(r.pid), "alive"] for row in rows):
                break
        assert "messages/s" in screen and "Ctrl-C" in screen, screen
        table = next(row for row in rows if row[:3] == ["0", str(r.pid), "alive"])
        assert table[3:] == ["7", "0", "0"], screen  # lag, lost, received
        _tmux("send-keys", "-t", session, "C-c")
        for _ in range(50):
            time.sleep(0.1)
            alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True)
            panes = (
                _tmux("list-panes", "-t", session, "-F", "#{pane_dead} #{pane_current_command}")
                if alive.returncode == 0
                else ""
            )
            if alive.returncode != 0 or "python" not in panes:
                break
        else:
            pytest.fail("watch did not leave on Ctrl-C")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_help_names_streams() -> None:
    top = run("--help").stdout
    assert "records and streams" in top and "xshm inspect events" in top
    for cmd in ("ls", "inspect", "watch", "rm"):
        assert "stream" in run(cmd, "--help").stdout, cmd


def test_inspect_shows_groups_and_their_members(stream: xshm.Stream) -> None:
    """A work-queue group: inspect lists it (members, cursor, lag, received, lost, skipped) and
    gives its members the group's cursor and lag, in the table and in --json."""
    member = stream.reader(group="workers")
    other = stream.reader()
    for k in range(3):
        stream.send(bytes([k]))
    member.recv(timeout=5)
    r = run("inspect", stream.name[1:], "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["max_groups"] == 16
    assert info["groups"] == [
        {
            "name": "workers",
            "members": 1,
            "cursor": 1,
            "lag": 2,
            "received": 1,
            "lost": 0,
            "skipped": 0,
            "start": 0,
        }
    ]
    by_group = {d["group"]: d for d in info["readers"]}
    assert (by_group["workers"]["cursor"], by_group["workers"]["lag"]) == (1, 2)
    assert (by_group[None]["cursor"], by_group[None]["lag"]) == (0, 3)
    text = run("inspect", stream.name[1:]).stdout
    assert re.search(r"groups\s+1 of 16", text), text
    assert re.search(r"workers\s+1\s+1\s+2\s+1\s+0\s+0", text), text
    member.close()
    other.close()
