"""Fixtures shared by every pytest file: unique segment names that are always removed, and a
check at the end of the session that no test left a segment behind."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import xshm

PREFIX = f"xshm-pytest-{os.getpid()}-"
_counter = itertools.count()


def _leftovers() -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(PREFIX))


@pytest.fixture
def seg_name() -> Iterator[str]:
    """A fresh segment name, unlinked after the test whatever it did."""
    name = f"{PREFIX}{next(_counter)}"
    yield name
    with contextlib.suppress(FileNotFoundError):
        xshm.unlink(name, force=True)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("XSHM_REQUIRE_ALL") == "1":
        pytest.fail(f"XSHM_REQUIRE_ALL=1 but this test cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def skip_or_fail() -> Callable[[str], None]:
    """Skips a test whose environment is missing (root, a namespace, a built library), except
    where every test must run: with XSHM_REQUIRE_ALL=1 (make test sets it in CI, which runs as
    root with everything installed) a skip would hide a test that never ran, so it fails."""
    return _skip_or_fail


def _in_own_process(
    module: str, why_missing: str, script: str, *args: str, timeout: float = 120
) -> str:
    """Runs `script` (ending in print("ok")) in a Python process of its own, for a library that
    must not be imported into the test session (JAX and polars warn at every later fork(), which
    the fork tests would take for a failure). Returns its output; `module` missing: skip_or_fail."""
    if importlib.util.find_spec(module) is None:
        _skip_or_fail(f"{module} is not installed ({why_missing})")
    r = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stdout + r.stderr[-3000:]
    return r.stdout


@pytest.fixture
def in_own_process() -> Callable[..., str]:
    """`in_own_process(module, why_missing, script, *args)`: see _in_own_process."""
    return _in_own_process


def pytest_report_header() -> str:
    return f"xshm {xshm.__version__} from {os.path.dirname(xshm.__file__)}"


@pytest.fixture(scope="session", autouse=True)
def _installed_package_under_test() -> None:
    """With XSHM_EXPECT_INSTALLED=1 (the wheel checks), the package must come from an
    installed wheel, never from the source tree."""
    if os.environ.get("XSHM_EXPECT_INSTALLED"):
        assert "site-packages" in xshm.__file__, xshm.__file__


@pytest.fixture(scope="session", autouse=True)
def _no_segment_left_behind() -> Iterator[None]:
    yield
    left = _leftovers()
    for n in left:
        os.unlink(os.path.join("/dev/shm", n))
    assert not left, f"tests left segments behind: {left}"
