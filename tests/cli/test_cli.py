"""The xshm command, run as a subprocess against real segments (xshm, foreign, missing), and
`xshm watch` driven in a real terminal through tmux."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import xshm

XSHM = [sys.executable, "-m", "xshm"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSHM, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def live(seg_name: str) -> Iterator[xshm.SharedMemoryManager]:
    with xshm.SharedMemoryManager.create(seg_name, shape=(50,), message_capacity=32) as m:
        m.publish(values=np.linspace(0, 1, 50), message="hello cli", counter=42)
        yield m


@pytest.fixture
def foreign(seg_name: str) -> str:
    with open(f"/dev/shm/{seg_name}", "wb") as f:
        f.write(b"not an xshm segment" * 500)
    return seg_name


def test_help_has_examples_and_exit_codes() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout
    assert "exit codes" in r.stdout
    for cmd in ("ls", "inspect", "watch", "rm", "demo", "bench"):
        sub = run(cmd, "--help")
        assert sub.returncode == 0, cmd
        assert "example:" in sub.stdout, cmd
    assert run().returncode == 2, "no command is a usage error"
    assert run("nonsense").returncode == 2


def test_version_include_and_cmake_dir() -> None:
    assert run("--version").stdout.strip() == f"xshm {xshm.__version__}"
    inc = run("--include").stdout.strip()
    assert os.path.isfile(os.path.join(inc, "xshm", "xshm.hpp"))
    assert run("--cmake-dir").stdout.strip() == xshm.get_cmake_dir()


def test_ls_lists_xshm_and_marks_foreign(live: xshm.SharedMemoryManager) -> None:
    r = run("ls")
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if live.name in ln)
    assert "float64" in line and "50" in line and "0600" in line and "42" in line
    rows = json.loads(run("ls", "--json").stdout)
    row = next(x for x in rows if x["name"] == live.name)
    assert row["xshm"] and row["shape"] == [50] and row["seq"] == 1 and row["counter"] == 42
    assert row["kind"] == "record" and line.split()[1] == "record"
    assert row["message_capacity"] == 32 and row["mode"] == "0600"


def test_ls_hides_foreign_unless_all(foreign: str) -> None:
    assert f"/{foreign}" not in run("ls").stdout
    rows = json.loads(run("ls", "--all", "--json").stdout)
    row = next(x for x in rows if x["name"] == f"/{foreign}")
    assert row["xshm"] is False and row["note"] == "foreign" and row["kind"] is None
    assert "foreign" in next(ln for ln in run("ls", "--all").stdout.splitlines() if foreign in ln)


def test_inspect_text_and_json(live: xshm.SharedMemoryManager) -> None:
    r = run("inspect", live.name)
    assert r.returncode == 0
    assert "hello cli" in r.stdout and "float64, shape (50,)" in r.stdout and "free" in r.stdout
    info = json.loads(run("inspect", live.name, "--json").stdout)
    assert info["counter"] == 42 and info["seq"] == 1 and info["message"] == "hello cli"
    assert info["values"]["min"] == 0.0 and info["values"]["max"] == 1.0
    assert info["writer_pid"] == os.getpid() and info["writer_alive"] is True
    assert info["writer_mutex_owner"] == 0 and info["layout_version"] == 1
    assert info["kind"] == "record" and "record (the latest value)" in r.stdout
    assert live.seq == 1, "inspecting never writes"


@pytest.mark.parametrize(
    ("shape", "text"), [((0,), "(0,)"), ((), "()"), ((2, 3), "(2, 3)"), ((7,), "(7,)")]
)
def test_shape_is_written_as_numpy_does_in_ls_and_inspect(
    seg_name: str, shape: tuple[int, ...], text: str
) -> None:
    """numpy's notation, the one xshm's errors use: (0,) and () are not 0 and an empty cell;
    --json gives the shape as a list, [0] and [] (JSON's tuple), in ls and inspect alike."""
    assert str(np.empty(shape).shape) == text, "the notation is numpy's own"
    with xshm.SharedMemoryManager.create(seg_name, shape=shape, dtype="int16"):
        ls = run("ls")
        line = next(ln for ln in ls.stdout.splitlines() if f"/{seg_name} " in ln)
        assert " record " in line and f" int16 {text}, msg 256 B " in line, line
        inspect = run("inspect", seg_name)
        assert inspect.returncode == 0
        rows = [ln.rstrip() for ln in inspect.stdout.splitlines()]
        assert f"values            int16, shape {text}" in rows, inspect.stdout
        row = next(x for x in json.loads(run("ls", "--json").stdout) if x["name"] == f"/{seg_name}")
        assert row["shape"] == list(shape)
        assert json.loads(run("inspect", seg_name, "--json").stdout)["shape"] == list(shape)


@pytest.mark.parametrize("cmd", ["inspect", "watch"])
def test_missing_and_foreign_are_one_line_errors(cmd: str, foreign: str) -> None:
    for name, words in ((foreign, "not a usable xshm segment"), ("no-such-seg-xyz", "no segment")):
        r = run(cmd, name, "--count", "1") if cmd == "watch" else run(cmd, name)
        assert r.returncode == 1
        assert words in r.stderr
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", bytes(8192)], ids=["empty", "zero-header"])
def test_unfinished_file_reported_with_facts(seg_name: str, content: bytes) -> None:
    """An empty or all-zero file: what is known (size, age, owner) and how to remove it, no
    guess about a creator that died."""
    with open(f"/dev/shm/{seg_name}", "wb") as f:
        f.write(content)
    r = run("inspect", seg_name)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    err = r.stderr
    assert ("empty (0 bytes)" if not content else "all-zero header") in err
    assert "not an xshm segment, or one whose creator did not finish" in err
    assert "modified" in err and "owner " in err and "mode 0" in err
    assert f"xshm rm --force {seg_name}" in err
    assert "died" not in err
    rows = json.loads(run("ls", "--all", "--json").stdout)
    row = next(x for x in rows if x["name"] == f"/{seg_name}")
    assert row["note"] == ("empty" if not content else "zero header")
    assert run("rm", "--force", seg_name).returncode == 0


def test_segment_never_made_ready_reported_with_its_removal_once(seg_name: str) -> None:
    """A header written but its state never READY: what the core knows (not a guess that its
    creator died) and the way to remove it, said once; ls marks it 'not ready', not foreign."""
    xshm.SharedMemoryManager.create(seg_name).close()
    path = f"/dev/shm/{seg_name}"
    with open(path, "r+b") as f:
        head = f.read(4096)
        assert head.count(b"REDY") == 1, "the state word, READY, appears once in the header"
        f.seek(head.index(b"REDY"))
        f.write(bytes(4))  # state 0: as a creator that stopped before its last store
    r = run("inspect", seg_name)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    err = r.stderr
    assert (
        "state is 0, not READY: the segment was never made ready (its creator stopped before "
        "finishing it, or is still creating it)" in err
    )
    assert err.count(f"xshm rm --force {seg_name}") == 1
    assert "unlink(force=True)" in err and "modified" in err and "died" not in err
    rows = json.loads(run("ls", "--all", "--json").stdout)
    assert next(x for x in rows if x["name"] == f"/{seg_name}")["note"] == "not ready"
    assert run("rm", "--force", seg_name).returncode == 0
    assert not os.path.exists(path)


def test_writer_pid_reused_is_not_alive() -> None:
    """A pid that exists now but started after the publish is another process."""
    from xshm.cli import _alive

    assert _alive(os.getpid()) is True
    assert _alive(os.getpid(), since_ns=time.time_ns()) is True, "started before: the writer"
    assert _alive(os.getpid(), since_ns=1) is False, "started after the publish: pid reused"
    assert _alive(0) is None


def _closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs xshm with stdout on a pipe whose reader is already gone: every write fails."""
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
    [["ls"], ["ls", "--json"], ["inspect", "{}"], ["inspect", "{}", "--json"], ["--help"]],
    ids=lambda a: " ".join(a),
)
def test_closed_pipe_is_quiet(live: xshm.SharedMemoryManager, args: list[str]) -> None:
    r = _closed_pipe_run(*[a.format(live.name) for a in args])
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr


def test_watch_into_head_ends_quietly(live: xshm.SharedMemoryManager) -> None:
    """`xshm watch NAME | head -2`: a real pipe, closed by its reader after two lines."""
    p = subprocess.Popen(
        [*XSHM, "watch", live.name, "--interval", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stderr is not None
        lines = [p.stdout.readline() for _ in range(2)]
        assert all("counter=42" in ln for ln in lines), lines
        p.stdout.close()  # what head does after its lines
        rc = p.wait(timeout=30)
        err = p.stderr.read()
        assert rc == 0 and err == "", err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def test_bad_name_is_a_usage_error() -> None:
    r = run("inspect", "a/b")
    assert r.returncode == 2
    assert "name" in r.stderr and "Traceback" not in r.stderr


def test_rm_removes_xshm_refuses_foreign_unless_forced(seg_name: str, foreign: str) -> None:
    xshm.SharedMemoryManager.create(seg_name + "-rm").close()
    r = run("rm", seg_name + "-rm")
    assert r.returncode == 0 and "removed" in r.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}-rm")
    r = run("rm", foreign)
    assert r.returncode == 1 and "--force" in r.stderr
    assert os.path.exists(f"/dev/shm/{foreign}")
    assert run("rm", "--force", foreign).returncode == 0
    assert not os.path.exists(f"/dev/shm/{foreign}")
    r = run("rm", foreign)
    assert r.returncode == 1 and "no segment" in r.stderr


def test_watch_plain_output_when_piped(live: xshm.SharedMemoryManager) -> None:
    r = run("watch", live.name, "--interval", "0.05", "--count", "3")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all("counter=42" in ln and "\x1b[" not in ln for ln in lines)
    frames = [
        json.loads(x)
        for x in run("watch", live.name, "--json", "--count", "2").stdout.split("\n")
        if x
    ]
    assert frames[-1]["counter"] == 42


def test_demo_json_reports_no_torn_snapshots() -> None:
    r = run("demo", "--seconds", "1", "--consumers", "1", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    fig = json.loads(r.stdout)
    assert fig["torn"] == 0 and fig["published"] > 100
    assert all(c["updates"] > 0 for c in fig["consumers"])


def test_bench_json_has_xshm_and_multiprocessing() -> None:
    r = run("bench", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    measured = [x for x in rows if "xshm_us" in x]
    assert {x["peer"] for x in measured} >= {"shared_memory+Lock", "multiprocessing.Pipe"}
    assert all(x["xshm_us"] > 0 and x["peer_us"] > 0 for x in measured)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def test_watch_in_a_real_terminal(live: xshm.SharedMemoryManager) -> None:
    assert shutil.which("tmux"), "tmux is needed (make test installs it)"
    session = f"xshm-watch-{os.getpid()}"
    cmd = " ".join([*XSHM, "watch", live.name, "--interval", "0.1"])
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", cmd)
    try:
        screen = ""
        for k in range(50, 80):
            live.publish(counter=k, message=f"tick {k}")
            time.sleep(0.1)
            screen = _tmux("capture-pane", "-p", "-t", session)
            if "tick 7" in screen:
                break
        assert "updates/s" in screen and "tick 7" in screen, screen
        assert "Ctrl-C" in screen
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
