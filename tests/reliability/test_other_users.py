"""Other users: a default (0600) segment is closed to them; a wider mode lets them read, and a
read-only handle refuses every write path. Needs root, to drop to an unprivileged user (a
forked child calls setgid/setuid; exec is not needed, so the test's own interpreter serves)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import xshm

NOBODY = 65534


@pytest.fixture(autouse=True)
def _needs_root(skip_or_fail: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root to switch to another user")


def _probe(name: str) -> dict[str, Any]:
    """What an unprivileged user can do with the segment, as seen from inside."""
    out: dict[str, Any] = {"uid": os.geteuid()}
    try:
        m = xshm.SharedMemoryManager.open(name, readonly=True)
    except PermissionError as e:
        out["open_ro"] = f"PermissionError {e.errno}"
        return out
    snap = m.read()
    out["open_ro"] = "ok"
    out["read"] = [snap.counter, snap.message]
    attempts = {
        "publish": lambda: m.publish(counter=1),
        "write": lambda: m.write().__enter__(),
        "lock": lambda: m.lock().__enter__(),
    }
    for what, fn in attempts.items():
        try:
            fn()
            out[what] = "ALLOWED"
        except xshm.ReadOnlyError as e:
            out[what] = f"refused: {e}"
    try:
        xshm.SharedMemoryManager.open(name, readonly=False)
        out["open_rw"] = "ALLOWED"
    except PermissionError:
        out["open_rw"] = "PermissionError"
    return out


def _as_nobody(name: str) -> dict[str, Any]:
    r, w = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork() in a process with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, probe, report, exit without cleanup
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(w, json.dumps(_probe(name)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)  # type: ignore[no-any-return]


def test_default_segment_is_closed_to_other_users(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        m.publish(message="secret", counter=7)
        out = _as_nobody(seg_name)
        assert out["uid"] == NOBODY
        assert out["open_ro"] == "PermissionError 13", out


def test_wider_mode_lets_others_read_but_never_write(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, mode=0o644) as m:
        m.publish(message="shared", counter=7)
        out = _as_nobody(seg_name)
        assert out["read"] == [7, "shared"]
        for what in ("publish", "write", "lock"):
            assert out[what] == f"refused: segment /{seg_name} was opened read-only", out
        assert out["open_rw"] == "PermissionError"
        assert m.read().counter == 7
        assert m.seq == 1
