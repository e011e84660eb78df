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


class RedisServer:
    """A ``redis-server`` process on a free loopback port (``start``, ``kill``, ``stop``: the
    same port and data directory each time, so a restart finds what was written)."""

    def __init__(self, directory: str, *args: str, tls: Optional[list[str]] = None) -> None:
        """``args``: more redis-server arguments; ``tls``: its TLS arguments (certificate, key,
        CA): the port then takes TLS only."""
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("XSHM_REQUIRE_ALL") == "1":
                pytest.fail("XSHM_REQUIRE_ALL=1 but redis-server is not installed")
            pytest.skip("redis-server is not installed (apt install redis-server)")
        self.binary = binary
        self.dir = directory
        self.port = free_port()
        self.args = list(args)
        self.tls = tls
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), *self.tls]
        argv = [self.binary, *ports, "--bind", "127.0.0.1", "--dir", self.dir]
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", *self.args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the broker dies mid-whatever."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, url: Optional[str] = None) -> Any:
        import redis

        return redis.Redis.from_url(url or self.url)
