"""What the bridge's tests share: free loopback ports, processes that are always stopped, the
bridge's CLI started in processes of its own, status records that are always removed, and a
real ``redis-server`` started on a free loopback port for the Redis engine's tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import Callable

import pytest
import xshm
from bridge_helpers import Procs, RedisServer, free_port


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("XSHM_REQUIRE_ALL") == "1":
            pytest.fail(f"XSHM_REQUIRE_ALL=1 but {package} is not installed")
        pytest.skip(f"{package} is not installed (pip install 'xshm[bridge]')")


@pytest.fixture(autouse=True)
def _engine_installed(request: pytest.FixtureRequest) -> None:
    """The engine's client a test module uses (its name says which)."""
    if "redis" in request.module.__name__:
        _require("redis", "redis (redis-py)")
    else:
        _require("zenoh", "eclipse-zenoh")


@pytest.fixture
def redis_server(tmp_path: os.PathLike[str]) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own on a free loopback port, its data (AOF, fsynced at
    every write: a SIGKILL loses nothing acknowledged) in the test's temporary directory."""
    server = RedisServer(str(tmp_path))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def endpoint() -> str:
    return f"tcp/127.0.0.1:{free_port()}"


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.close()


@pytest.fixture
def status_cleanup() -> Iterator[Callable[[str], str]]:
    """``status_cleanup(name)`` registers a segment a bridge makes (a mirror, a status record)
    to be removed after the test, and returns the name."""
    names: list[str] = []

    def register(name: str) -> str:
        names.append(name)
        return name

    yield register
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            xshm.unlink(n, force=True)


@pytest.fixture(autouse=True)
def _no_zenoh_shared_memory() -> Iterator[None]:
    """Zenoh's own shared-memory transport stays off: no ``*.zenoh`` file appears."""
    before = {n for n in os.listdir("/dev/shm") if n.endswith(".zenoh")}
    yield
    after = {n for n in os.listdir("/dev/shm") if n.endswith(".zenoh")}
    assert after <= before, f"zenoh shared memory used: {sorted(after - before)}"
