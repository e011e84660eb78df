"""What the cross-language matrices share (test_record_matrix.py, test_stream_matrix.py): the
languages and their writer/reader pairs, and running a peer: start it, read its JSON lines with
a bound, collect its last line, stop it whatever happened; and building the three peers."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xshm

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("cpp", "python", "rust")
PAIRS = [(w, r) for w in LANGS for r in LANGS]
TIMEOUT = 120


def build_peers(out: Path, cpp: str, python: str, rust: str) -> dict[str, list[str]]:
    """The command of each language's peer: the C++ source `cpp` of this directory compiled by
    g++ into `out` (against the header the installed package ships), the Python script
    `python` of this directory, and the rust/xshm example `rust` built by cargo."""
    cxx = os.environ.get("CXX", "g++")
    assert shutil.which(cxx), f"{cxx} is needed for the cross-language tests"
    assert shutil.which("cargo"), "cargo is needed for the cross-language tests"
    here = Path(__file__).parent
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]
    exe = out / Path(cpp).stem
    src = here / cpp
    subprocess.run([cxx, *flags, "-I", xshm.get_include(), str(src), "-o", str(exe)], check=True)
    # The workspace's own target directory: its build of the crate is reused.
    target = ROOT / "rust" / "target"
    subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "xshm", "--example", rust],
        cwd=ROOT / "rust",
        env={k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"},
        check=True,
        timeout=900,
    )
    peers = {
        "cpp": [str(exe)],
        "python": [sys.executable, str(here / python)],
        "rust": [str(target / "release" / "examples" / rust)],
    }
    assert set(peers) == set(LANGS)
    return peers


def start(cmd: list[str], *args: str | int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cmd, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def line(p: subprocess.Popen[str]) -> dict[str, Any]:
    """The next JSON line the peer prints, within TIMEOUT (it fails the test, with the peer's
    stderr, if the peer ends or stays silent)."""
    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        ready = sel.select(TIMEOUT)
    text = p.stdout.readline() if ready else ""
    if not text:
        if p.poll() is None:
            p.kill()
        _, err = p.communicate(timeout=TIMEOUT)
        pytest.fail(f"{p.args!r} ended (rc {p.returncode}) or stayed silent: {err}")
    result: dict[str, Any] = json.loads(text)
    return result


def finish(p: subprocess.Popen[str]) -> dict[str, Any]:
    """The peer's last JSON line, once it exited by itself within TIMEOUT (killed otherwise)."""
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        stop(p)
    assert p.returncode == 0, f"{p.args!r} failed (rc {p.returncode}): {err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def stop(p: subprocess.Popen[str]) -> None:
    """Kills the peer if it still runs, reaps it and closes its pipes."""
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=TIMEOUT)
