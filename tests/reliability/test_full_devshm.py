"""A full /dev/shm: in a private mount namespace with a 1 MiB tmpfs over /dev/shm, creating a
segment too large for it fails at creation with OSError(ENOSPC) and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

CHILD = r"""
import errno, os, xshm
try:
    xshm.SharedMemoryManager.create("too-big", shape=(4 * 1024 * 1024,))  # 32 MiB of float64
    print("CREATED")
except OSError as e:
    print("OSError", e.errno, errno.errorcode.get(e.errno), "|", e)
print("left:", sorted(os.listdir("/dev/shm")))
m = xshm.SharedMemoryManager.create("fits", shape=(1000,))  # a small one still works
m.publish(counter=1)
print("small ok", m.read().counter)
m.unlink()
"""


def test_segment_too_large_for_devshm_fails_cleanly(skip_or_fail: Callable[[str], None]) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("needs root and unshare(1) for a private mount namespace")
    script = f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -c '{CHILD}'"
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        skip_or_fail(f"mount namespaces are not allowed here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "OSError 28 ENOSPC" in r.stdout, r.stdout
    assert "posix_fallocate" in r.stdout
    assert "left: []" in r.stdout, "the failed creation left its name behind"
    assert "small ok 1" in r.stdout
