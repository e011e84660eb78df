"""Two machines in one: the exporter and the mirror in two network namespaces joined by a veth
pair (10.231.7.1 and 10.231.7.2, addresses that exist only inside them), each process with a
private ``/dev/shm`` (a mount namespace with its own tmpfs), so nothing can pass through shared
memory: a record and a stream cross the veth over Zenoh, and through a ``redis-server`` that
runs in the exporter's namespace. Needs root (CI runs as root: there a skip is a failure)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

ADDR_A, ADDR_B = "10.231.7.1", "10.231.7.2"
N = 2000

EXPORTER = """
import json, os, sys, time
import numpy as np
import xshm
from xshm import bridge

kw, n = json.loads(sys.argv[1]), int(sys.argv[2])
s = xshm.Stream.create("netns-src", capacity=4096, max_bytes=64)
m = xshm.SharedMemoryManager.create("netns-rec", shape=(4,), message_capacity=32)
m.publish(values=np.arange(4.0), message="from namespace A", counter=7)
with bridge.export(["netns-src", "netns-rec"], prefix="netns", **kw) as ex:
    print("exporting", flush=True)
    for k in range(n):
        s.send(k.to_bytes(8, "little") * 8, timeout=60)
    sys.stdin.readline()  # until the mirror is done
print(json.dumps(sorted(os.listdir("/dev/shm"))), flush=True)
s.unlink()
m.unlink()
"""

MIRROR = """
import json, os, sys
import xshm
from xshm import bridge

kw, n = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
with bridge.mirror("netns/netns-src", into="netns-src-m", **kw) as ms, bridge.mirror(
    "netns/netns-rec", into="netns-rec-m", **kw
) as mr:
    ms.wait_ready(60)
    mr.wait_ready(60)
    st = xshm.Stream.open("netns-src-m")
    got = []
    with st.reader(start="oldest") as r:
        while len(got) < n:
            got += [int.from_bytes(bytes(x.data[:8]), "little") for x in r.recv_many(512, 30)]
    snap = xshm.SharedMemoryManager.open("netns-rec-m", readonly=True).read()
    out["in_order"] = got == list(range(n))
    out["record"] = [snap.message, snap.counter, snap.values.tolist()]
    out["source_host"] = mr.source.get("host")
    try:
        xshm.Stream.open("netns-src")
        out["sees_the_source"] = True
    except FileNotFoundError:
        out["sees_the_source"] = False
    out["dev_shm"] = sorted(os.listdir("/dev/shm"))
print(json.dumps(out), flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def namespaces(skip_or_fail: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair, each with its loopback up."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        skip_or_fail("needs root, ip(8) and unshare(1) for network and mount namespaces")
    tag = f"xshm{os.getpid() % 100000}"
    a, b = f"{tag}-a", f"{tag}-b"
    try:
        try:
            _ip("netns", "add", a)
        except subprocess.CalledProcessError as e:
            skip_or_fail(f"network namespaces are not allowed here: {e.stderr.strip()}")
        _ip("netns", "add", b)
        _ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        for ns, dev, addr in ((a, f"{tag}a", ADDR_A), (b, f"{tag}b", ADDR_B)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):  # the veth pair goes with them
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)


def _in(ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
    """``argv`` in the network namespace ``ns`` and a mount namespace of its own whose
    ``/dev/shm`` is a fresh tmpfs."""
    script = 'mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec "$@"'
    cmd = ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private"]
    return subprocess.Popen([*cmd, "sh", "-c", script, "sh", *argv], text=True, cwd="/", **kw)


@pytest.mark.parametrize("engine", ["zenoh", "redis"])
def test_a_record_and_a_stream_cross_a_veth_between_namespaces(
    namespaces: tuple[str, str], tmp_path: Path, engine: str
) -> None:
    a, b = namespaces
    exporter, mirror = tmp_path / "exporter.py", tmp_path / "mirror.py"
    exporter.write_text(EXPORTER)
    mirror.write_text(MIRROR)
    procs: list[subprocess.Popen[str]] = []
    try:
        if engine == "zenoh":
            ep = f"tcp/{ADDR_A}:7447"
            kw_a: dict[str, Any] = {"listen": [ep]}
            kw_b: dict[str, Any] = {"connect": [ep]}
        else:
            redis = shutil.which("redis-server")
            assert redis is not None, "redis-server (make setup installs it)"
            # Not on loopback: Redis's protected mode asks for a password (AUTH, over the veth)
            argv = [redis, "--bind", ADDR_A, "--port", "6379", "--requirepass", "veth-pass"]
            argv += ["--save", "", "--appendonly", "no"]
            procs.append(_in(a, [*argv, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL))
            url = f"redis://:veth-pass@{ADDR_A}:6379/0"
            kw_a = kw_b = {"engine": "redis", "url": url}
        pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        ex = _in(
            a,
            [sys.executable, str(exporter), json.dumps(kw_a), str(N)],
            stdin=subprocess.PIPE,
            **pipes,
        )
        procs.append(ex)
        assert ex.stdout is not None and ex.stdin is not None
        line = ex.stdout.readline()
        assert "exporting" in line, (line, ex.stderr.read() if ex.poll() is not None else "")
        mi = _in(b, [sys.executable, str(mirror), json.dumps(kw_b), str(N)], **pipes)
        procs.append(mi)
        out, err = mi.communicate(timeout=120)
        assert mi.returncode == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        ex.stdin.write("done\n")
        ex.stdin.flush()
        ex_out, ex_err = ex.communicate(timeout=60)
        assert ex.returncode == 0, ex_err
        assert got["in_order"], "the stream did not arrive whole and in order"
        assert got["record"] == ["from namespace A", 7, [0.0, 1.0, 2.0, 3.0]]
        assert got["sees_the_source"] is False  # B's /dev/shm is its own
        assert "netns-src-m" in got["dev_shm"] and "netns-src" not in got["dev_shm"]
        a_shm = json.loads(ex_out.strip().splitlines()[-1])
        assert "netns-src" in a_shm and "netns-src-m" not in a_shm
        assert not {"netns-src", "netns-src-m"} & set(os.listdir("/dev/shm"))  # nor the host's
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)
