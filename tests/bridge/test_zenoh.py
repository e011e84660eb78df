"""The bridge over Zenoh, across processes: an exporter and a mirror each in a process of its own
(``xshm bridge export`` / ``xshm bridge mirror``), each with its own Zenoh session on explicit
``tcp/127.0.0.1`` endpoints; this process writes the source segment and reads the mirror. The
test process never imports zenoh (its threads would outlive the test); code that uses the
Python API runs in a process of its own too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import xshm
from bridge_helpers import Procs, free_port, status_values, wait_for


def _open(name: str) -> xshm.SharedMemoryManager:
    return wait_for(lambda: xshm.SharedMemoryManager.open(name, readonly=True), what=name)


def _consistent(s: xshm.Snapshot) -> bool:
    """A snapshot of the records these tests publish: every value and the message agree with
    the counter (a torn or mixed record does not)."""
    k = s.counter
    return bool(np.all(s.values == float(k))) and s.message == f"m{k}"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_record_follows_across_processes(
    procs: Procs, seg_name: str, endpoint: str, status_cleanup
) -> None:
    dst = status_cleanup(seg_name + "-mirror")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(64,), message_capacity=32)
    src.publish(values=np.full(64, 1.0), message="m1", counter=1)
    ex = procs.bridge("export", seg_name, "--key", "test/rec", "--listen", endpoint)
    mi = procs.bridge("mirror", "test/rec", "--into", dst, "--connect", endpoint)

    # A mirror started after the source's last publish gets the current record at once.
    r = _open(dst)
    first = wait_for(lambda: r.read() if r.seq else None, what="the first record")
    assert (first.counter, first.message, first.values[0]) == (1, "m1", 1.0)
    assert stat.S_IMODE(os.stat(f"/dev/shm/{dst}").st_mode) == 0o600
    assert first.writer_pid == mi.pid  # the mirror's own; the source's is in its status

    # A burst: every snapshot of the mirror is consistent and the counter never goes back.
    seen = [1]
    last = 3000
    for k in range(2, last + 1):
        src.publish(values=np.full(64, float(k)), message=f"m{k}", counter=k)
        if k % 50 == 0:
            s = r.read()
            assert _consistent(s), (s.counter, s.message, s.values[:3])
            assert s.counter >= seen[-1]
            seen.append(s.counter)
    stopped = time.monotonic()
    while True:  # after the source stops, the mirror reaches its last record within a second
        s = r.read()
        assert _consistent(s) and s.counter >= seen[-1]
        seen.append(s.counter)
        if s.counter == last:
            break
        assert time.monotonic() - stopped < 1.0, f"mirror still at {s.counter} after 1 s"
        time.sleep(0.001)

    name = f"bridge.mirror.{dst}"  # published twice a second
    status = wait_for(lambda: (s := status_values(name))["source_seq"] == src.seq and s, what=name)
    assert status["source_pid"] == os.getpid()
    assert status["invalid"] == 0 and 0 < status["messages"] <= last
    assert status_values(f"bridge.export.{seg_name}")["messages"] >= status["messages"]

    for p in (mi, ex):
        code, err = procs.stop(p)
        assert code == 0, err
    for n in (f"bridge.mirror.{dst}", f"bridge.export.{seg_name}"):
        assert not os.path.exists(f"/dev/shm/{n}"), f"{n} left behind"
    assert r.read().counter == last  # the mirror keeps the last record for its readers
    r.close()
    src.close()


def test_a_stopped_mirror_leaves_the_exporter_bounded_and_catches_up(
    procs: Procs, seg_name: str, endpoint: str, status_cleanup
) -> None:
    """Records are latest-value: while a mirror is stopped the exporter keeps nothing but the
    last update (1 MiB records, 300 of them: 300 MiB if it queued them) and the mirror, once
    resumed, reaches the last record."""
    dst = status_cleanup(seg_name + "-mirror")
    n = 1 << 17  # float64: 1 MiB of values
    src = xshm.SharedMemoryManager.create(seg_name, shape=(n,), message_capacity=32)
    src.publish(values=np.full(n, 1.0), message="m1", counter=1)
    ex = procs.bridge("export", seg_name, "--key", "test/big", "--listen", endpoint)
    mi = procs.bridge("mirror", "test/big", "--into", dst, "--connect", endpoint)
    r = _open(dst)
    wait_for(lambda: r.read().counter == 1, what="the first record")
    rss = _rss_kib(ex.pid)

    os.kill(mi.pid, signal.SIGSTOP)
    for k in range(2, 302):
        src.publish(values=np.full(n, float(k)), message=f"m{k}", counter=k)
        time.sleep(0.005)
    grown = _rss_kib(ex.pid) - rss
    assert grown < 64 * 1024, f"the exporter grew by {grown} KiB while the mirror was stopped"
    os.kill(mi.pid, signal.SIGCONT)
    wait_for(lambda: r.read().counter == 301, timeout=15, what="the mirror to catch up")
    assert _consistent(r.read())
    r.close()
    src.close()


def _payload(k: int) -> bytes:
    body = struct.pack("<Q", k) + bytes([k % 251]) * (k % 40)
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_a_stream_carries_every_message_in_order(
    procs: Procs, seg_name: str, endpoint: str, status_cleanup
) -> None:
    """A "block" stream through an exporter and a mirror loses nothing: the export reads only
    while a mirror listens, and a slow side holds the writers back instead."""
    dst = status_cleanup(seg_name + "-mirror")
    src = xshm.Stream.create(seg_name, capacity=64, max_bytes=64)
    ex = procs.bridge("export", seg_name, "--key", "test/stream", "--listen", endpoint)
    procs.bridge("mirror", "test/stream", "--into", dst, "--connect", endpoint)
    mirror = wait_for(lambda: xshm.Stream.open(dst, readonly=False), what="the mirror stream")
    assert (mirror.capacity, mirror.max_bytes, mirror.backpressure) == (64, 64, "block")
    total = 20000
    got: list[bytes] = []
    deadline = time.monotonic() + 120
    with mirror.reader(start="oldest") as rd:
        k = 0
        while len(got) < total:
            while k < total and src.try_send(_payload(k)):
                k += 1
            for msg in rd.recv_many(256, timeout=0.05):
                got.append(msg.data)
            assert time.monotonic() < deadline, f"{len(got)} of {total} after 120 s"
        assert rd.lost == 0
    assert [struct.unpack_from("<Q", d)[0] for d in got] == list(range(total))
    assert all(d == _payload(i) for i, d in enumerate(got))
    code, err = procs.stop(ex)
    assert code == 0, err
    mirror.close()
    src.close()


ROUTER = """
import json, sys, time, zenoh
c = zenoh.Config()
for k, v in (("mode", "router"), ("scouting/multicast/enabled", False),
             ("transport/shared_memory/enabled", False), ("listen/endpoints", [sys.argv[1]])):
    c.insert_json5(k, json.dumps(v))
s = zenoh.open(c)
print("routing", flush=True)
while True:  # until SIGTERM
    time.sleep(3600)
"""


def test_through_a_zenoh_router(procs: Procs, seg_name: str, status_cleanup) -> None:
    """Exporter and mirror in Zenoh's client mode: each connected to a router only, listening
    on nothing, everything routed through the router's process."""
    dst = status_cleanup(seg_name + "-mirror")
    router = f"tcp/127.0.0.1:{free_port()}"
    procs.start("-c", ROUTER, router, ready="routing")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(8,), message_capacity=32)
    src.publish(values=np.full(8, 1.0), message="m1", counter=1)
    client = ("--connect", router, "--zenoh-mode", "client")
    procs.bridge("export", seg_name, "--key", "test/routed", *client)
    procs.bridge("mirror", "test/routed", "--into", dst, *client)
    r = _open(dst)
    wait_for(lambda: r.read().counter == 1, what="the first record through the router")
    for k in range(2, 101):
        src.publish(values=np.full(8, float(k)), message=f"m{k}", counter=k)
    wait_for(lambda: r.read().counter == 100, what="the last record through the router")
    assert _consistent(r.read())
    r.close()
    src.close()


INJECT = """
import json, struct, sys, time, zenoh
from xshm.bridge import _envelope as env
endpoint, key = sys.argv[1], sys.argv[2]
c = zenoh.Config()
for k, v in (("mode", "peer"), ("scouting/multicast/enabled", False),
             ("transport/shared_memory/enabled", False), ("listen/endpoints", []),
             ("connect/endpoints", [endpoint])):
    c.insert_json5(k, json.dumps(v))
s = zenoh.open(c)
time.sleep(1.0)
layout = env.Layout.of_record("float64", (8,), 32)
h = layout.hash()
good_values = struct.pack("<8d", *[7.0] * 8)
bad = [
    b"",
    b"garbage" * 10,
    b"xshb" + bytes(28),
    env.encode_record(h ^ 1, 5, 10**6, 0, 7, 1, b"m7", good_values),  # another layout's hash
    env.encode_record(h, 5, 10**6, 0, 7, 1, b"m" * 33, good_values),  # message over capacity
    env.encode_record(h, 5, 10**6, 0, 7, 1, b"m7", good_values[:-1]),  # values too short
    env.encode_record(h, 5, 10**6, 0, 7, 1, b"m\\xff", good_values),  # not UTF-8
    env.encode_record(h, 5, 10**6, 0, 7, 1, b"m7", good_values)[:-3],  # truncated
    env.encode_batch(h, 5, [(10**6, 0, 1, good_values)]),  # a stream's batch for a record
]
huge = env.Layout.of_record("float64", (100 * 2**30 // 8,), 0)  # a forged 100 GiB layout
for payload in bad:  # paced: a record mirror keeps only the newest few envelopes waiting
    s.put(key, payload)
    time.sleep(0.05)
s.put(key + "/@layout", env.encode_layout(huge, 5, "forger", "x", 1))
time.sleep(0.05)
s.put(key + "/@layout", b"not a layout")
time.sleep(0.5)
s.close()
print(len(bad) + 2, flush=True)
"""


def test_injected_envelopes_are_counted_and_dropped(
    procs: Procs, seg_name: str, endpoint: str, status_cleanup
) -> None:
    """Malformed, foreign and oversized envelopes put straight onto the key by another Zenoh
    session: each is counted in the mirror's ``invalid`` and dropped; the mirror's record is
    untouched, nothing is reserved for a forged 100 GiB layout, and it keeps following."""
    dst = status_cleanup(seg_name + "-mirror")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(8,), message_capacity=32)
    src.publish(values=np.full(8, 1.0), message="m1", counter=1)
    procs.bridge("export", seg_name, "--key", "test/inject", "--listen", endpoint)
    injector_side = f"tcp/127.0.0.1:{free_port()}"  # peers do not route: inject at the mirror
    mi = procs.bridge(
        "mirror", "test/inject", "--into", dst, "--connect", endpoint, "--listen", injector_side
    )
    r = _open(dst)
    wait_for(lambda: r.read().counter == 1, what="the first record")
    rss = _rss_kib(mi.pid)
    inj = subprocess.run(
        [sys.executable, "-c", INJECT, injector_side, "test/inject"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert inj.returncode == 0, inj.stderr
    sent = int(inj.stdout)
    name = f"bridge.mirror.{dst}"
    wait_for(lambda: status_values(name)["invalid"] >= sent, what="every injection counted")
    assert status_values(name)["invalid"] == sent
    s = r.read()
    assert (s.counter, s.message, s.seq) == (1, "m1", 1)
    assert _rss_kib(mi.pid) - rss < 64 * 1024
    src.publish(values=np.full(8, 2.0), message="m2", counter=2)
    wait_for(lambda: r.read().counter == 2, what="the mirror to go on")
    assert mi.poll() is None
    r.close()
    src.close()


def test_a_remote_layout_change_is_refused(
    procs: Procs, seg_name: str, endpoint: str, status_cleanup
) -> None:
    """The source is recreated with another layout and exported again: the mirror stops with
    a LayoutError and leaves its segment (and its readers) as they were; with
    --allow-layout-change it recreates the segment in the new layout instead."""
    dst = status_cleanup(seg_name + "-mirror")
    dst2 = status_cleanup(seg_name + "-mirror2")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(4,), message_capacity=32)
    src.publish(values=np.full(4, 1.0), message="m1", counter=1)
    ex = procs.bridge("export", seg_name, "--key", "test/change", "--listen", endpoint)
    mi = procs.bridge("mirror", "test/change", "--into", dst, "--connect", endpoint)
    mi2 = procs.bridge(
        "mirror", "test/change", "--into", dst2, "--connect", endpoint, "--allow-layout-change"
    )
    r = _open(dst)
    wait_for(lambda: r.read().counter == 1, what="the first record")
    wait_for(lambda: _open(dst2).read().counter == 1, what="the second mirror")
    assert procs.stop(ex)[0] == 0
    src.unlink()
    src.close()
    src = xshm.SharedMemoryManager.create(seg_name, shape=(2, 3), dtype="float32")
    src.publish(values=np.full((2, 3), 5.0, dtype=np.float32), message="new", counter=5)
    procs.bridge("export", seg_name, "--key", "test/change", "--listen", endpoint)

    code = mi.wait(timeout=30)  # the mirror stops by itself
    err = mi.stderr.read()
    assert code == 1, err
    assert "LayoutError" in err or "layout of 'test/change' changed" in err, err
    assert "float64[4]" in err and "float32[2, 3]" in err, err
    s = r.read()
    assert (s.counter, s.message, r.dtype, r.shape) == (1, "m1", np.dtype("float64"), (4,))

    def recreated() -> bool:
        with xshm.SharedMemoryManager.open(dst2, readonly=True) as m2:
            return m2.shape == (2, 3) and m2.read().counter == 5

    wait_for(recreated, what="the allowed mirror to follow the new layout")
    assert mi2.poll() is None
    r.close()
    src.close()


API = """
import sys, time
import numpy as np
import xshm
from xshm import bridge

src, dst, endpoint = sys.argv[1], sys.argv[2], sys.argv[3]
m = xshm.SharedMemoryManager.open(src)
with bridge.export(src, key="test/api", listen=[endpoint]) as ex:
    assert ex.keys == {src: "test/api"}
    with bridge.mirror("test/api", into=dst, connect=[endpoint]) as mi:
        mi.wait_ready(timeout=20)
        r = xshm.SharedMemoryManager.open(dst, readonly=True)
        assert r.read().counter == 1
        m.publish(values=np.full(3, 2.0), message="m2", counter=2)
        deadline = time.monotonic() + 10
        while r.read().counter != 2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert mi.source["host"] and mi.source["pid"] == ex.stats[src]["pid"]
        assert mi.source["seq"] == 2 and mi.stats["invalid"] == 0
        assert mi.layout is not None and mi.layout.describe() == "record float64[3], message 256 B"
        r.close()
    assert not mi.running and mi.error is None
assert not any(n.startswith("bridge.") and src in n for n in __import__("os").listdir("/dev/shm"))
try:
    bridge.mirror("test/*", into=dst)
except xshm.ArgumentError as e:
    assert "concrete key" in str(e)
else:
    raise AssertionError("a wildcard key was accepted")
try:
    bridge.export(src + "-missing", listen=[endpoint])
except FileNotFoundError:
    pass
else:
    raise AssertionError("a missing segment was exported")
print("ok")
"""


def test_the_python_api_runs_and_stops_cleanly(
    seg_name: str, endpoint: str, status_cleanup
) -> None:
    dst = status_cleanup(seg_name + "-mirror")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(3,))
    src.publish(values=np.full(3, 1.0), message="m1", counter=1)
    r = subprocess.run(
        [sys.executable, "-c", API, seg_name, dst, endpoint],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stdout + r.stderr[-3000:]
    src.close()


def test_the_cli_refuses_clearly(procs: Procs, seg_name: str, endpoint: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xshm", "bridge", *args],
            capture_output=True, text=True, timeout=60, cwd="/",
        )  # fmt: skip

    r = run("export", seg_name, "--listen", endpoint)
    assert r.returncode == 1 and "No such file" in r.stderr, r.stderr
    r = run("mirror", "a/**", "--into", seg_name)
    assert r.returncode == 2 and "concrete key" in r.stderr, r.stderr
    r = run("export", seg_name, "other", "--key", "k")
    assert r.returncode == 2 and "a prefix for several" in r.stderr, r.stderr
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/{seg_name}")


def test_the_bridge_demo_mirrors_a_record_and_a_stream() -> None:
    """`xshm demo --bridge`: two processes, every stream message in order, the record's
    updates seen, latencies measured, nothing left in /dev/shm."""
    r = subprocess.run(
        [sys.executable, "-m", "xshm", "demo", "--bridge", "--seconds", "1", "--json"],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    fig = json.loads(r.stdout)
    assert fig["stream_received"] == fig["published"] == fig["stream_sent"] > 0
    assert fig["stream_lost"] == fig["stream_out_of_order"] == 0
    assert 0 < fig["record_updates"] <= fig["published"]
    assert 0 < fig["record_latency_us_p50"] <= fig["record_latency_us_p99"]
    assert not [n for n in os.listdir("/dev/shm") if "xshm-demo-bridge" in n or "bridge." in n]
    text = subprocess.run(
        [sys.executable, "-m", "xshm", "demo", "--bridge", "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "received in order (out of order 0, lost 0)" in text.stdout, text.stdout
