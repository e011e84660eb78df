"""Helpers of the bridge's tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import pytest
import xshm


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    """Processes a test starts: each stopped (SIGTERM, then SIGKILL) when the test ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, ready: Optional[str] = None, timeout: float = 30) -> Any:
        p = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        self.procs.append(p)
        if ready is not None:
            assert p.stdout is not None
            ok, _, _ = select.select([p.stdout], [], [], timeout)  # never block a test forever
            line = p.stdout.readline() if ok else ""
            if ready not in line:
                p.kill()
                out, err = p.communicate(timeout=10)
                pytest.fail(f"{args} did not start within {timeout} s: {line}{out}{err}")
        return p

    def bridge(self, *args: str) -> Any:
        """``xshm bridge ARGS``, returned once it has printed its first line."""
        return self.start("-m", "xshm", "bridge", *args, ready="ing ")

    def stop(self, p: Any, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        """Signal ``p`` and wait for it; its exit code and stderr."""
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.send_signal(sig)
        _out, err = p.communicate(timeout=timeout)
        return p.returncode, err

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
            try:
                p.communicate(timeout=20)  # also closes the pipes of one already ended
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
            except ValueError:  # its pipes were read and closed by the test
                p.wait()


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, xshm.XshmError):
            got = check()
            if got:
                return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(0.01)


def status_values(name: str) -> dict[str, float]:
    """A bridge's status record (``bridge.<role>.<segment>``) as ``{field: value}``."""
    from xshm.bridge._status import FIELDS

    with xshm.SharedMemoryManager.open(name, readonly=True) as m:
        return dict(zip(FIELDS, m.read().values.tolist()))
