#!/usr/bin/env python3
"""Cross-process benchmarks of xshm against its peers, in one run (benchmarks/README.md says what
each one answers). Installs the peers it can (faster-fifo, pyzmq, posix-ipc, iceoryx2,
matplotlib); a peer that cannot be installed is skipped with a note, never silently.

    python benchmarks/run.py [--quick] [--out DIR] [--docs docs/BENCHMARKS.md]

Writes DIR/results.json (figures and machine), DIR/*.png (plots) and, with --docs, the tables
between the markers in docs/BENCHMARKS.md. --quick (under a minute) is the smoke test that
`make test` runs: same code paths, few iterations, no figures to trust.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import xshm
from xshm._bench import PEER_LABELS, _echo_running, _peer_setup, _ShmLock  # shared with xshm bench

ROOT = Path(__file__).resolve().parents[1]
N = 100  # the default record: 100 float64 + a message
RECORD_BYTES = N * 8 + 64
SPIN = 0.1  # seconds a spinning waiter polls before it sleeps
PEERS = {
    "faster_fifo": "faster-fifo",
    "zmq": "pyzmq",
    "posix_ipc": "posix-ipc",
    "iceoryx2": "iceoryx2",
    "matplotlib": "matplotlib",
}
CTX = mp.get_context("spawn")
# The CPUs this process may run on (taskset, cgroup cpusets), which can be fewer than the
# machine has. A spinning ping-pong needs two: on one, each hop waits for the scheduler to
# preempt the spinner (milliseconds), which measures the scheduler and takes many minutes.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
ONE_CPU_NOTE = f"skipped: a spinning ping-pong needs two CPUs; this run may use {CPUS}"


# ---------------------------------------------------------------- set-up


def ensure_peers(notes: dict[str, str]) -> None:
    for mod, pkg in PEERS.items():
        if importlib.util.find_spec(mod) is not None:
            continue
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", pkg], capture_output=True, text=True
        )
        importlib.invalidate_caches()
        if r.returncode != 0 or importlib.util.find_spec(mod) is None:
            last = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
            notes[pkg] = f"not installable here: {last[:160]}"


def build_cpp(out: Path) -> Path:
    exe = out / "pingpong"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            xshm.get_include(),
            str(ROOT / "benchmarks" / "cpp" / "pingpong.cpp"),
            "-o",
            str(exe),
            "-pthread",
        ],
        check=True,
    )
    return exe


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable cpus": CPUS,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "xshm": xshm.__version__,
    }


def pooled(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Medians over rounds of each round's percentiles."""
    return {k: statistics.median(r[k] for r in rounds) for k in ("p50_ns", "p99_ns", "p999_ns")}


def percentiles(one_way_ns: list[float]) -> dict[str, float]:
    a = np.sort(np.asarray(one_way_ns))
    return {
        "p50_ns": float(np.percentile(a, 50)),
        "p99_ns": float(np.percentile(a, 99)),
        "p999_ns": float(np.percentile(a, 99.9)),
    }


# ---------------------------------------------------------------- snapshot under contention


def _xshm_writer(name: str, stop: Any, pause: float = 0.0) -> None:
    """Publishes records (values all k, message "k") until stopped, pausing between them."""
    with xshm.SharedMemoryManager.open(name) as m:
        buf = np.empty(N)
        k = 0
        while not stop.is_set():
            k += 1
            buf.fill(k)
            m.publish(values=buf, message=str(k), counter=k)
            if pause:
                time.sleep(pause)


def _lock_writer(shm_name: str, lock: Any, stop: Any) -> None:
    """The peer's writer: the same loop as _xshm_writer, under the peer's Lock."""
    peer = _ShmLock(shm_name, lock)
    buf = np.empty(N)
    k = 0
    while not stop.is_set():
        k += 1
        buf.fill(k)
        peer.publish(buf, str(k), k)
    peer.close()


def _per_call_ns(fn: Callable[[], Any], calls: int) -> float:
    batch = 1000
    means = []
    for _ in range(max(1, calls // batch)):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        means.append((time.perf_counter_ns() - t0) / batch)
    return statistics.median(means)


def snapshot(quick: bool) -> dict[str, Any]:
    calls, checks = (20_000, 5_000) if quick else (300_000, 100_000)
    out: dict[str, Any] = {}
    name = f"xshm-bench-snap-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    stop = CTX.Event()
    w = CTX.Process(target=_xshm_writer, args=(name, stop))
    w.start()
    try:
        m.wait(0, timeout=30)
        buf = np.empty(N)
        out["xshm read"] = _per_call_ns(m.read, calls)
        out["xshm read_into"] = _per_call_ns(lambda: m.read_into(buf), calls)
        torn = 0
        for _ in range(checks):
            s = m.read_into(buf)
            torn += not ((buf == s.counter).all() and s.message == str(s.counter))
        out["xshm torn"] = torn
        out["xshm checked"] = checks
        out["writer publishes during the run"] = m.seq
    finally:
        stop.set()
        w.join(timeout=30)
        m.unlink()
        m.close()

    peer = _ShmLock()
    stop = CTX.Event()
    w = CTX.Process(target=_lock_writer, args=(peer.shm.name, peer.lock, stop))
    w.start()
    try:
        time.sleep(0.2)
        out["shared_memory+Lock read"] = _per_call_ns(peer.read, calls)
    finally:
        stop.set()
        w.join(timeout=30)
        peer.close()
    out["speed-up read"] = out["shared_memory+Lock read"] / out["xshm read"]
    if importlib.util.find_spec("iceoryx2") is not None:
        try:
            out.update(_blackboard_snapshot(calls // 10, checks // 10))
            out["speed-up read vs iceoryx2 blackboard"] = (
                out["iceoryx2 blackboard get"] / out["xshm read"]
            )
        except Exception as e:  # a peer that breaks is reported, not fatal
            out["iceoryx2 blackboard"] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    return out


def _blackboard_snapshot(calls: int, checks: int) -> dict[str, Any]:
    """iceoryx2's latest-value store: get() of the same record while a writer updates it."""
    name = f"xshm-bench-bb-{os.getpid()}"
    node = _iox_node()
    service = _blackboard(node, name, create=True)
    entry = _bb_reader_entry(service)
    stop, ready = CTX.Event(), CTX.Event()
    w = CTX.Process(target=_bb_writer, args=(name, stop, ready))
    w.start()
    out: dict[str, Any] = {}
    try:
        ready.wait(30)
        while _bb_get(entry).counter == 0:
            time.sleep(0.001)
        out["iceoryx2 blackboard get"] = _per_call_ns(lambda: _bb_get(entry), calls)
        torn = 0
        for _ in range(checks):
            r = _bb_get(entry)
            whole = all(v == r.counter for v in r.values)
            torn += not (whole and r.message == str(r.counter).encode())
        out["iceoryx2 blackboard torn"] = torn
        out["iceoryx2 blackboard checked"] = checks
    finally:
        stop.set()
        w.join(timeout=30)
    return out  # entry, service and node go with this frame: iceoryx2 removes its files


# ---------------------------------------------------------------- latency (ping-pong)


def _xshm_echo(ping: str, pong: str, spin: float, total: int) -> None:
    a = xshm.SharedMemoryManager.open(ping, timeout=30)
    b = xshm.SharedMemoryManager.open(pong, timeout=30)
    buf = np.empty(N)
    seq = 0
    for _ in range(total):
        seq = a.wait(seq, spin=spin)
        a.read_into(buf)
        b.publish(buf)


def _xshm_case(
    spin: float, rounds: int, n: int, cpp_echo: Optional[Path]
) -> list[dict[str, float]]:
    tag = f"xshm-bench-lat-{os.getpid()}-{int(spin * 1000)}-{int(cpp_echo is not None)}"
    a = xshm.SharedMemoryManager.create(tag + "-ping")
    b = xshm.SharedMemoryManager.create(tag + "-pong")
    total = rounds * (n + 100)
    if cpp_echo is not None:
        echo: Any = subprocess.Popen(
            [str(cpp_echo), "echo", a.name, b.name, "spin" if spin else "block", str(total)]
        )
    else:
        echo = CTX.Process(target=_xshm_echo, args=(a.name, b.name, spin, total))
        echo.start()
    buf = np.ones(N)
    seq = 0
    res = []
    try:
        for _ in range(rounds):
            one_way = []
            for k in range(n + 100):
                t0 = time.perf_counter_ns()
                a.publish(buf)
                seq = b.wait(seq, timeout=30, spin=spin)
                b.read_into(buf)
                if k >= 100:
                    one_way.append((time.perf_counter_ns() - t0) / 2)
            res.append(percentiles(one_way))
    finally:
        if cpp_echo is not None:
            echo.wait(timeout=60)
        else:
            echo.join(timeout=60)
        for m in (a, b):
            m.unlink()
            m.close()
    return res


def _queue_echo(q_in: Any, q_out: Any, total: int) -> None:
    for _ in range(total):
        q_out.put(q_in.get())


def _posix_echo(tag: str, total: int) -> None:
    import mmap

    import posix_ipc

    s_ping, s_pong = posix_ipc.Semaphore(tag + "-ping"), posix_ipc.Semaphore(tag + "-pong")
    mem = posix_ipc.SharedMemory(tag + "-mem")
    buf = mmap.mmap(mem.fd, RECORD_BYTES)
    mem.close_fd()
    for _ in range(total):
        s_ping.acquire()
        data = buf[:RECORD_BYTES]
        buf[:RECORD_BYTES] = data
        s_pong.release()
    buf.close()


class _IoxRecord(ctypes.Structure):
    _fields_ = [
        ("counter", ctypes.c_uint64),
        ("values", ctypes.c_double * N),
        ("message", ctypes.c_char * 56),
    ]

    @staticmethod
    def type_name() -> str:  # how iceoryx2 tells both ends they mean the same type
        return "XshmBenchRecord"


def _iox_node() -> Any:
    import iceoryx2 as iox2

    return iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)


def _blackboard(node: Any, name: str, create: bool) -> Any:
    """An iceoryx2 blackboard holding one _IoxRecord under key 0."""
    import iceoryx2 as iox2

    b = node.service_builder(iox2.ServiceName.new(name))
    if create:
        return b.blackboard_creator(ctypes.c_uint64).add(ctypes.c_uint64(0), _IoxRecord()).create()
    return b.blackboard_opener(ctypes.c_uint64).open()


def _bb_writer_entry(service: Any) -> Any:
    return service.writer_builder().create().entry(ctypes.c_uint64(0), _IoxRecord)


def _bb_reader_entry(service: Any) -> Any:
    return service.reader_builder().create().entry(ctypes.c_uint64(0), _IoxRecord)


def _bb_get(entry: Any) -> Any:
    return entry.get().decode_as(_IoxRecord)


def _bb_writer(name: str, stop: Any, ready: Any) -> None:
    """The blackboard's writer: the same loop as _xshm_writer (values all k, message "k")."""
    node = _iox_node()
    service = _blackboard(node, name, create=False)
    entry = _bb_writer_entry(service)
    rec = _IoxRecord()
    ready.set()
    k = 0
    while not stop.is_set():
        k += 1
        rec.counter = k
        for i in range(N):
            rec.values[i] = k
        rec.message = str(k).encode()
        entry.update_with_copy(rec)
    del entry, service, node


def _bb_echo(ping: str, pong: str, total: int, ready: Any) -> None:
    node = _iox_node()
    rx = _bb_reader_entry(_blackboard(node, ping, create=False))
    tx = _bb_writer_entry(_blackboard(node, pong, create=False))
    ready.set()
    for k in range(1, total + 1):
        while (rec := _bb_get(rx)).counter != k:
            pass
        tx.update_with_copy(rec)
    del rx, tx, node


def _iox_endpoints(node: Any, rx_name: str, tx_name: str) -> tuple[Any, Any]:
    import iceoryx2 as iox2

    def service(name: str) -> Any:
        return (
            node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(_IoxRecord)
            .open_or_create()
        )

    sub = service(rx_name).subscriber_builder().create()
    pub = service(tx_name).publisher_builder().create()
    return sub, pub


def _iox_echo(ping: str, pong: str, total: int, ready: Any) -> None:
    node = _iox_node()
    sub, pub = _iox_endpoints(node, ping, pong)
    ready.set()
    for _ in range(total):
        while (sample := sub.receive()) is None:
            pass
        rec = sample.payload().contents
        out = pub.loan_uninit().write_payload(rec)
        del sample
        out.send()


def _peer_case(kind: str, rounds: int, n: int) -> list[dict[str, float]]:
    total = rounds * (n + 100)
    payload = bytes(RECORD_BYTES)
    res = []
    cleanup: list[Callable[[], None]] = []
    if kind in PEER_LABELS:  # the same set-up as `xshm bench`
        p, hop, cleanup = _peer_setup(kind, total, payload)
    elif kind == "multiprocessing.Queue":
        q1, q2 = CTX.Queue(), CTX.Queue()
        p = CTX.Process(target=_queue_echo, args=(q1, q2, total))

        def hop() -> None:
            q1.put(payload)
            q2.get()
    elif kind == "posix_ipc (semaphore + mmap)":
        import mmap

        import posix_ipc

        tag = f"/xshm-bench-pi-{os.getpid()}"
        s_ping = posix_ipc.Semaphore(tag + "-ping", posix_ipc.O_CREX)
        s_pong = posix_ipc.Semaphore(tag + "-pong", posix_ipc.O_CREX)
        mem = posix_ipc.SharedMemory(tag + "-mem", posix_ipc.O_CREX, size=RECORD_BYTES)
        buf = mmap.mmap(mem.fd, RECORD_BYTES)
        mem.close_fd()
        p = CTX.Process(target=_posix_echo, args=(tag, total))

        def hop() -> None:
            buf[:RECORD_BYTES] = payload
            s_ping.release()
            s_pong.acquire()
            _ = buf[:RECORD_BYTES]

        def close_posix() -> None:
            buf.close()
            for s in (s_ping, s_pong):
                s.unlink()
            mem.unlink()

        cleanup.append(close_posix)
    elif kind == "iceoryx2 (publish-subscribe, spinning)":
        tag = f"xshm-bench-iox-{os.getpid()}"
        node = _iox_node()
        sub, pub = _iox_endpoints(node, tag + "/pong", tag + "/ping")
        ready = CTX.Event()
        p = CTX.Process(target=_iox_echo, args=(tag + "/ping", tag + "/pong", total, ready))
        rec = _IoxRecord()

        def hop() -> None:
            pub.loan_uninit().write_payload(rec).send()
            while (sample := sub.receive()) is None:
                pass
            _ = sample.payload().contents
            del sample

        def close_iox() -> None:
            nonlocal sub, pub, node
            del sub, pub, node  # drops the node: iceoryx2 removes its files in /dev/shm

        cleanup.append(close_iox)
    elif kind == "iceoryx2 (blackboard, spinning get)":
        tag = f"xshm-bench-bbpp-{os.getpid()}"
        node = _iox_node()
        services = [_blackboard(node, tag + "/ping", True), _blackboard(node, tag + "/pong", True)]
        tx, rx = _bb_writer_entry(services[0]), _bb_reader_entry(services[1])
        ready = CTX.Event()
        p = CTX.Process(target=_bb_echo, args=(tag + "/ping", tag + "/pong", total, ready))
        rec = _IoxRecord()

        def hop() -> None:
            rec.counter += 1
            tx.update_with_copy(rec)
            while _bb_get(rx).counter != rec.counter:
                pass

        def close_bb() -> None:
            nonlocal tx, rx, services, node
            del tx, rx, services, node

        cleanup.append(close_bb)
    else:
        raise ValueError(kind)
    with _echo_running(p, cleanup, join_timeout=60):
        if kind.startswith("iceoryx2"):
            ready.wait(30)
            time.sleep(0.5)  # let the endpoints connect
        for _ in range(rounds):
            one_way = []
            for k in range(n + 100):
                t0 = time.perf_counter_ns()
                hop()
                if k >= 100:
                    one_way.append((time.perf_counter_ns() - t0) / 2)
            res.append(percentiles(one_way))
    return res


def latency(
    quick: bool, cpp: Path, notes: dict[str, str], ladder: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """The ping-pong rows; the rungs of the C++ ladder (pingpong.cpp) go into `ladder`."""
    rounds, n = (2, 300) if quick else (5, 3000)
    cpp_n = 2000 if quick else 50_000
    cases: dict[str, Any] = {}

    # The xshm rows and the C++ floors run interleaved, one round of each in turn, so that a
    # change in the machine's state (this VM wakes an idle vCPU in ~2 us or in ~25 us depending
    # on what ran just before) hits every row of a comparison alike.
    per_round: dict[str, list[dict[str, float]]] = {}

    def run_cpp(args: list[str]) -> None:
        r = subprocess.run([str(cpp), *args], capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            row = json.loads(line)
            per_round.setdefault(row["case"], []).append(row)

    spinning = CPUS >= 2
    py_cases: list[tuple[str, float, Optional[Path]]] = [
        ("py-xshm-block", 0.0, None),
        ("cpp<->py-xshm-block", 0.0, cpp),
    ]
    if spinning:
        py_cases[:0] = [("py-xshm-spin", SPIN, None), ("cpp<->py-xshm-spin", SPIN, cpp)]
    else:
        notes["spinning rows (atomic floor, ladder, xshm C++ and Python)"] = ONE_CPU_NOTE
    for _ in range(rounds):
        if spinning:
            run_cpp(["ladder", "1", "4", str(cpp_n // 8)])
            run_cpp(["ladder", "100", "4", str(cpp_n // 8)])
            run_cpp(["atomic", "1", str(cpp_n)])
            run_cpp(["xshm-small", "spin", "1", str(cpp_n)])
            run_cpp(["xshm", "spin", "1", str(cpp_n)])
        run_cpp(["futex", "1", str(cpp_n)])
        run_cpp(["xshm", "block", "1", str(cpp_n)])
        for case, spin, echo in py_cases:
            per_round.setdefault(case, []).extend(_xshm_case(spin, 1, n, echo))
    for case, rows in per_round.items():
        if case.startswith("cpp-ladder-"):
            _, _, count, rung = case.split(" ", 1)[0].split("-")
            step = case.split(" ", 1)[1]
            ladder.setdefault(f"{rung}. {step}", {})[count] = pooled(rows)["p50_ns"]
        else:
            cases[case] = pooled(rows)
    needs = {
        "faster-fifo": "faster_fifo",
        "pyzmq (ipc)": "zmq",
        "posix_ipc (semaphore + mmap)": "posix_ipc",
        "iceoryx2 (publish-subscribe, spinning)": "iceoryx2",
        "iceoryx2 (blackboard, spinning get)": "iceoryx2",
    }
    for kind in ["multiprocessing.Pipe", "multiprocessing.Queue", *needs]:
        mod = needs.get(kind)
        if mod and importlib.util.find_spec(mod) is None:
            notes.setdefault(kind, "skipped: not installed")
            continue
        if "spinning" in kind and not spinning:
            notes[kind] = ONE_CPU_NOTE
            continue
        try:
            cases[kind] = pooled(_peer_case(kind, rounds, n))
        except Exception as e:  # a peer that breaks is reported, not fatal
            notes[kind] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    return cases


# ---------------------------------------------------------------- bulk


def _bulk_reader(name: str, rounds: int, mode: str, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True, timeout=30) as m:
        dst = np.empty(m.shape, dtype=m.dtype)
        seq = m.seq
        times = []
        for _ in range(rounds):
            seq = m.wait(seq, timeout=60, spin=SPIN)
            t_seen = time.monotonic_ns()
            if mode == "read_into":
                t0 = time.perf_counter_ns()
                m.read_into(dst)
                times.append((t_seen, time.perf_counter_ns() - t0))
            else:
                _ = m.values  # the zero-copy view: the data are usable in place now
                times.append((t_seen, 0))
        out.put(times)


def bulk(quick: bool) -> dict[str, Any]:
    size = (8 if quick else 64) * 1024 * 1024
    rounds = 3 if quick else 10
    src = np.random.default_rng(1).random(size // 8)
    dst = np.empty_like(src)
    copies = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        copies.append(time.perf_counter_ns() - t0)
    out: dict[str, Any] = {}
    for backup in (False, True):
        name = f"xshm-bench-bulk-{os.getpid()}-{int(backup)}"
        m = xshm.SharedMemoryManager.create(name, shape=src.shape, backup=backup)
        try:
            for mode in ("view", "read_into"):
                q = CTX.Queue()
                r = CTX.Process(target=_bulk_reader, args=(name, rounds, mode, q))
                r.start()
                time.sleep(1.0)
                round_copy: list[int] = []
                starts, publish_ns = [], []
                for _ in range(rounds):
                    # One in-process copy right before each publish: this VM's memory bandwidth
                    # moves by a third between minutes, so each round is compared with its own.
                    c0 = time.perf_counter_ns()
                    np.copyto(dst, src)
                    copies.append(time.perf_counter_ns() - c0)
                    round_copy.append(copies[-1])
                    t0 = time.monotonic_ns()
                    p0 = time.perf_counter_ns()
                    m.publish(src)
                    publish_ns.append(time.perf_counter_ns() - p0)
                    starts.append(t0)
                    time.sleep(0.3)
                seen = q.get(timeout=120)
                r.join(timeout=60)
                tag = f"backup={'on' if backup else 'off'}"
                delivers = [s[0] - t for s, t in zip(seen, starts)]
                out[f"publish ms ({tag})"] = statistics.median(publish_ns) / 1e6
                if mode == "view":
                    out[f"view delivery ms ({tag})"] = statistics.median(delivers) / 1e6
                    out[f"view delivery / copy ({tag})"] = statistics.median(
                        d / c for d, c in zip(delivers, round_copy)
                    )
                else:
                    rins = [s[1] for s in seen]
                    out[f"read_into ms ({tag})"] = statistics.median(rins) / 1e6
                    out[f"read_into GB/s ({tag})"] = size / statistics.median(rins)
                    out[f"read_into / copy bandwidth ({tag})"] = statistics.median(
                        c / r for r, c in zip(rins, round_copy)
                    )
        finally:
            m.unlink()
            m.close()
    memcpy_ns = statistics.median(copies)
    return {
        "bytes": size,
        "in-process copy ms": memcpy_ns / 1e6,
        "in-process copy GB/s": size / memcpy_ns,
        **out,
    }


# ---------------------------------------------------------------- readers


def _rate_reader(name: str, seconds: float, out: Any) -> None:
    with xshm.SharedMemoryManager.open(name, readonly=True) as m:
        buf = np.empty(N)
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(100):
                m.read_into(buf)
            n += 100
        out.put(n / seconds)


def readers(quick: bool) -> dict[str, Any]:
    seconds = 0.5 if quick else 2.0
    name = f"xshm-bench-readers-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    stop = CTX.Event()
    w = CTX.Process(target=_xshm_writer, args=(name, stop, 0.001))
    w.start()
    out: dict[str, Any] = {}
    try:
        for k in range(1, CPUS + 1):
            q = CTX.Queue()
            ps = [CTX.Process(target=_rate_reader, args=(name, seconds, q)) for _ in range(k)]
            for p in ps:
                p.start()
            rates = [q.get(timeout=60) for _ in ps]
            for p in ps:
                p.join(timeout=60)
            out[f"{k} reader(s): snapshots/s"] = sum(rates)
    finally:
        stop.set()
        w.join(timeout=30)
        m.unlink()
        m.close()
    return out


# ---------------------------------------------------------------- report


def tables(res: dict[str, Any]) -> str:
    lat = res["latency"]
    pipe = lat.get("multiprocessing.Pipe", {}).get("p50_ns")
    lines = [
        "### Latency: one-way, ping-pong between two processes (round trip / 2)",
        "",
        "| case | p50 (µs) | p99 (µs) | p99.9 (µs) | p50 vs multiprocessing.Pipe |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, v in sorted(lat.items(), key=lambda kv: kv[1]["p50_ns"]):
        ratio = f"{v['p50_ns'] / pipe:.3f}" if pipe else ""
        lines.append(
            f"| {case} | {v['p50_ns'] / 1e3:.2f} | {v['p99_ns'] / 1e3:.2f} | "
            f"{v['p999_ns'] / 1e3:.2f} | {ratio} |"
        )
    floor = lat.get("cpp-atomic-floor", {}).get("p50_ns")
    if res.get("ladder") and floor:
        lines += [
            "",
            "### Profile of a spinning C++ hop: xshm's publish rebuilt one step at a time",
            "",
            "One-way p50 (ns) of a C++ ping-pong over two real segments, each rung adding one step "
            "of the protocol (`pingpong ladder`, benchmarks/README.md); x = times the atomic floor "
            f"({floor:.0f} ns).",
            "",
            "| rung | 1 value | x | 100 values | x |",
            "|---|---:|---:|---:|---:|",
        ]
        for rung, v in sorted(res["ladder"].items(), key=lambda kv: int(kv[0].split(".")[0])):
            one, hundred = v.get("1", float("nan")), v.get("100", float("nan"))
            lines.append(
                f"| {rung} | {one:.0f} | {one / floor:.1f} "
                f"| {hundred:.0f} | {hundred / floor:.1f} |"
            )
    s = res["snapshot"]
    lines += [
        "",
        "### Snapshot: one consistent read while another process publishes continuously",
        "",
        "| operation | median (ns) |",
        "|---|---:|",
    ]
    for k in (
        "xshm read",
        "xshm read_into",
        "shared_memory+Lock read",
        "iceoryx2 blackboard get",
    ):
        if isinstance(s.get(k), float):
            lines.append(f"| {k} | {s[k]:.0f} |")
    lines += [
        "",
        f"xshm read is {s['speed-up read']:.1f}x faster than shared_memory + Lock; "
        f"torn snapshots: {s['xshm torn']} of {s['xshm checked']} checked.",
    ]
    if "speed-up read vs iceoryx2 blackboard" in s:
        lines.append(
            f"Against iceoryx2's blackboard (get() and decode of the same record): "
            f"{s['speed-up read vs iceoryx2 blackboard']:.1f}x; its torn snapshots: "
            f"{s['iceoryx2 blackboard torn']} of {s['iceoryx2 blackboard checked']} checked."
        )
    elif "iceoryx2 blackboard" in s:
        lines.append(f"iceoryx2 blackboard: {s['iceoryx2 blackboard']}")
    b = res["bulk"]
    lines += [
        "",
        f"### Bulk: {b['bytes'] // (1024 * 1024)} MiB from one process to another",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    for k, v in b.items():
        if k != "bytes":
            lines.append(f"| {k} | {v:.3f} |")
    lines += [
        "",
        "### Readers: aggregate snapshot rate (a writer publishing at 1 kHz)",
        "",
        "| readers | snapshots/s |",
        "|---|---:|",
    ]
    for k, v in res["readers"].items():
        lines.append(f"| {k.split(' ')[0]} | {v:,.0f} |")
    if res["notes"]:
        lines += ["", "### Not measured in this run", ""]
        lines += [f"- {k}: {v}" for k, v in res["notes"].items()]
    return "\n".join(lines)


def plots(res: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        res["notes"]["matplotlib"] = "plots skipped: matplotlib not installed"
        return []
    lat = sorted(res["latency"].items(), key=lambda kv: kv[1]["p50_ns"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=90)
    names = [k for k, _ in lat]
    p50 = [v["p50_ns"] / 1e3 for _, v in lat]
    p99 = [v["p99_ns"] / 1e3 for _, v in lat]
    colors = [
        "tab:blue" if "xshm" in k else "tab:gray" if "floor" in k else "tab:orange" for k in names
    ]
    ax.barh(names, p99, color="none", edgecolor=colors, label="p99")
    ax.barh(names, p50, color=colors, label="p50")
    ax.set_xscale("log")
    ax.set_xlabel("one-way latency (µs, log scale)")
    ax.set_title("One-way latency: xshm (blue), peers (orange), floors (gray)", fontsize=10)
    ax.invert_yaxis()
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "latency.png")
    plt.close(fig)
    s = res["snapshot"]
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    keys = ["xshm read_into", "xshm read", "shared_memory+Lock read"]
    ax.barh(keys, [s[k] for k in keys], color=["tab:blue", "tab:blue", "tab:orange"])
    ax.set_xlabel("ns per consistent snapshot")
    ax.set_title("Snapshot cost, another process publishing continuously", fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "snapshot.png")
    plt.close(fig)
    return ["latency.png", "snapshot.png"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (under a minute)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--docs", help="update the tables in this Markdown file")
    ap.add_argument("--no-install", action="store_true", help="do not pip install the peers")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    if not args.no_install:
        ensure_peers(notes)
    cpp = build_cpp(out)
    shm_before = set(os.listdir("/dev/shm"))
    t0 = time.time()
    res: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "notes": notes,
        "command": "python benchmarks/run.py" + (" --quick" if args.quick else ""),
        "ladder": {},
    }
    for section, fn in (
        ("snapshot", lambda: snapshot(args.quick)),
        ("latency", lambda: latency(args.quick, cpp, notes, res["ladder"])),
        ("bulk", lambda: bulk(args.quick)),
        ("readers", lambda: readers(args.quick)),
    ):
        print(f"== {section}", flush=True)
        res[section] = fn()
    res["seconds"] = round(time.time() - t0, 1)
    # iceoryx2 keeps a global management file in /dev/shm after its last node is gone; remove
    # the ones this run created, so the benchmark leaves the machine as it found it.
    for f in set(os.listdir("/dev/shm")) - shm_before:
        if f.startswith("iox2_"):
            os.unlink(os.path.join("/dev/shm", f))
    cpp.unlink()
    res["plots"] = plots(res, out)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    text = tables(res)
    print(text)
    if args.docs:
        doc = Path(args.docs)
        body = doc.read_text()
        begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
        head, _, rest = body.partition(begin)
        _, _, tail = rest.partition(end)
        m = res["machine"]
        stamp = (
            f"Run of {time.strftime('%Y-%m-%d')}: {m['cpu']}, {m['cores']} cores, Linux "
            f"{m['kernel']}, CPython {m['python']}, numpy {m['numpy']}; "
            f"`{res['command']}` took {res['seconds']} s."
        )
        doc.write_text(f"{head}{begin}\n{stamp}\n\n{text}\n{end}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
