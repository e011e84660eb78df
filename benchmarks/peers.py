"""The registry of peers: for every row of the snapshot and latency questions, its label, the API
it uses (as the tables print it), the package it needs (`benchmarks/requirements.txt`, installed
by `make bench-peers`; nothing is installed at run time), and how to set it up and tear it down.
A question asks the registry for its peers and runs each the same way; a new row (item 1's write
path, item 2's snapshot) is one more entry here.

Snapshot peers: `setup(rate)` is a context manager that starts a writer process publishing the
record (values all k, message "k", counter k) `rate` times a second (0: flat out) and yields a
`Snapshot` session: `read()` (one snapshot, fields touched with common.touch), `counter()` (the
writer's last counter, for its rate) and `consistent()` (one snapshot, checked for tearing).

Latency peers: `setup(total, cpp)` returns an echo process (not started), one ping-pong hop, the
clean-ups, and an event the echo sets when ready (or None); latency.py runs it in
xshm._bench._echo_running. `wakeups` is how many sleeping threads one one-way hop wakes (0:
spinning): blocking rows are compared only within the same count. C++ rows are run by
benchmarks/cpp/pingpong with the arguments in `cpp`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import xshm
from xshm._bench import PEER_PACKAGES, _peer_setup, _ShmLock

from benchmarks.common import CTX, RECORD_BYTES, SPIN, N, read_touched, touch


@dataclass(frozen=True)
class Peer:
    label: str  # the row's name in results.json and the tables
    api: str  # what the row calls, as the tables print it
    question: str  # "snapshot" or "latency"
    setup: Optional[Callable[..., Any]] = None
    module: Optional[str] = None  # the module it imports; None: the standard library or xshm
    package: Optional[str] = None  # the pip package that provides it (benchmarks/requirements.txt)
    wakeups: int = 0  # latency: sleeping threads one one-way hop wakes; 0: spinning
    cpp: tuple[str, ...] = ()  # C++ rows: benchmarks/cpp/pingpong's arguments, before N
    python_echo: bool = True  # latency: the echo is a Python process (not C++)
    profile: bool = False  # a row kept to profile xshm, not a like-for-like comparison

    @property
    def spinning(self) -> bool:
        return self.question == "latency" and self.wakeups == 0

    def missing(self) -> Optional[str]:
        """Why this peer cannot run here, or None."""
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return f"not installed: run make bench-peers (pip package {self.package})"
        return None


# ---------------------------------------------------------------- snapshot: writers and readers


@dataclass
class Snapshot:
    read: Callable[[], Any]
    counter: Callable[[], int]
    consistent: Callable[[], bool]


def _pacer(rate: float) -> Callable[[int], None]:
    """After publish k, spins until k / rate seconds have passed (rate 0: returns at once)."""
    if not rate:
        return lambda k: None
    t0 = time.perf_counter()

    def pace(k: int) -> None:
        due = t0 + k / rate
        while time.perf_counter() < due:
            pass

    return pace


def _xshm_writer(name: str, stop: Any, rate: float = 0.0, pause: float = 0.0) -> None:
    """Publishes records (values all k, message "k", counter k) until stopped."""
    with xshm.SharedMemoryManager.open(name) as m:
        buf = np.empty(N)
        pace = _pacer(rate)
        k = 0
        while not stop.is_set():
            k += 1
            buf.fill(k)
            m.publish(values=buf, message=str(k), counter=k)
            pace(k)
            if pause:
                time.sleep(pause)


def _lock_writer(shm_name: str, lock: Any, stop: Any, rate: float) -> None:
    """The peer's writer: the same loop as _xshm_writer, under the peer's Lock."""
    peer = _ShmLock(shm_name, lock)
    buf = np.empty(N)
    pace = _pacer(rate)
    k = 0
    while not stop.is_set():
        k += 1
        buf.fill(k)
        peer.publish(buf, str(k), k)
        pace(k)
    peer.close()


def _whole(counter: int, values: Any, message: str) -> bool:
    return bool((values == counter).all()) and message == str(counter)


@contextlib.contextmanager
def _xshm_session(kind: str, rate: float) -> Iterator[Snapshot]:
    name = f"xshm-bench-snap-{os.getpid()}"
    m = xshm.SharedMemoryManager.create(name)
    stop = CTX.Event()
    w = CTX.Process(target=_xshm_writer, args=(name, stop, rate))
    w.start()
    buf = np.empty(N)

    def read_into() -> Any:
        s = m.read_into(buf)
        return touch(s.counter, buf, s.message)

    def consistent() -> bool:
        s = m.read()
        return _whole(s.counter, s.values, s.message)

    read = {"read": lambda: read_touched(m), "read_into": read_into, "read only": m.read}[kind]
    try:
        m.wait(0, timeout=30)
        yield Snapshot(read, lambda: m.read().counter, consistent)
    finally:
        stop.set()
        w.join(timeout=30)
        m.unlink()
        m.close()


@contextlib.contextmanager
def _lock_session(rate: float) -> Iterator[Snapshot]:
    peer = _ShmLock()
    stop = CTX.Event()
    w = CTX.Process(target=_lock_writer, args=(peer.shm.name, peer.lock, stop, rate))
    w.start()
    try:
        while peer.read()[0] == 0:
            time.sleep(0.001)
        yield Snapshot(
            lambda: touch(*peer.read()), lambda: peer.read()[0], lambda: _whole(*peer.read())
        )
    finally:
        stop.set()
        w.join(timeout=30)
        peer.close()


# ---------------------------------------------------------------- iceoryx2


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


def _bb_fields(entry: Any) -> tuple[int, Any, str]:
    """What a user gets from the blackboard: the counter, the values as a numpy array (a view
    of decode_as's private copy) and the message decoded."""
    r = _bb_get(entry)
    return r.counter, np.ctypeslib.as_array(r.values), r.message.decode()


def _bb_writer(name: str, stop: Any, ready: Any, rate: float) -> None:
    """The blackboard's writer: the same loop as _xshm_writer (values all k, message "k")."""
    node = _iox_node()
    service = _blackboard(node, name, create=False)
    entry = _bb_writer_entry(service)
    rec = _IoxRecord()
    values = np.ctypeslib.as_array(rec.values)
    ready.set()
    pace = _pacer(rate)
    k = 0
    while not stop.is_set():
        k += 1
        rec.counter = k
        values.fill(k)
        rec.message = str(k).encode()
        entry.update_with_copy(rec)
        pace(k)
    del entry, service, node


@contextlib.contextmanager
def _bb_session(rate: float) -> Iterator[Snapshot]:
    name = f"xshm-bench-bb-{os.getpid()}"
    node = _iox_node()
    service = _blackboard(node, name, create=True)
    entry = _bb_reader_entry(service)
    stop, ready = CTX.Event(), CTX.Event()
    w = CTX.Process(target=_bb_writer, args=(name, stop, ready, rate))
    w.start()
    try:
        ready.wait(30)
        while _bb_get(entry).counter == 0:
            time.sleep(0.001)
        h = {"entry": entry}
        yield Snapshot(
            lambda: touch(*_bb_fields(h["entry"])),
            lambda: _bb_get(h["entry"]).counter,
            lambda: _whole(*_bb_fields(h["entry"])),
        )
    finally:
        stop.set()
        w.join(timeout=30)
        h.clear()
        del entry, service, node  # iceoryx2 removes its files when the node goes


# ---------------------------------------------------------------- latency: echo processes

Hop = tuple[Any, Callable[[], None], list[Callable[[], None]], Any]


class _CppEcho:
    """benchmarks/cpp/pingpong's echo, with the start/join/is_alive/kill of a Process."""

    def __init__(self, args: list[str]) -> None:
        self.args, self.p = args, None

    def start(self) -> None:
        self.p = subprocess.Popen(self.args)

    def join(self, timeout: float) -> None:
        assert self.p is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=timeout)

    def is_alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> None:
        assert self.p is not None
        self.p.kill()
        self.p.wait()


def _xshm_echo(ping: str, pong: str, spin: float, total: int, quickstart: bool) -> None:
    a = xshm.SharedMemoryManager.open(ping, timeout=30)
    b = xshm.SharedMemoryManager.open(pong, timeout=30)
    buf = np.empty(N)
    seq = 0
    for _ in range(total):
        seq = a.wait(seq, spin=spin)
        if quickstart:
            s = a.read()
            b.publish(values=s.values, counter=s.counter)
        else:
            a.read_into(buf)
            b.publish(buf)


def _xshm_setup(spin: float, quickstart: bool = False, cpp_echo: bool = False) -> Any:
    def setup(total: int, cpp: Optional[Path]) -> Hop:
        tag = f"xshm-bench-lat-{os.getpid()}"
        a = xshm.SharedMemoryManager.create(tag + "-ping")
        b = xshm.SharedMemoryManager.create(tag + "-pong")
        p: Any
        if cpp_echo:
            assert cpp is not None
            mode = "spin" if spin else "block"
            p = _CppEcho([str(cpp), "echo", a.name, b.name, mode, str(total)])
        else:
            p = CTX.Process(target=_xshm_echo, args=(a.name, b.name, spin, total, quickstart))
        buf = np.ones(N)
        state = {"seq": 0, "k": 0}

        def hop() -> None:
            a.publish(buf)
            state["seq"] = b.wait(state["seq"], timeout=30, spin=spin)
            b.read_into(buf)

        def hop_quickstart() -> None:
            state["k"] += 1
            a.publish(values=buf, counter=state["k"])
            state["seq"] = b.wait(state["seq"], timeout=30, spin=spin)
            _ = b.read().counter

        return (
            p,
            hop_quickstart if quickstart else hop,
            [a.unlink, a.close, b.unlink, b.close],
            None,
        )

    return setup


def _poll_echo(ping: str, pong: str, total: int) -> None:
    a, b = shared_memory.SharedMemory(ping), shared_memory.SharedMemory(pong)
    assert a.buf is not None and b.buf is not None
    a_ctr, b_ctr = a.buf[:8].cast("Q"), b.buf[:8].cast("Q")
    a_val = np.ndarray((N,), np.float64, a.buf, 8)
    b_val = np.ndarray((N,), np.float64, b.buf, 8)
    for k in range(1, total + 1):
        while a_ctr[0] != k:
            pass
        b_val[:] = a_val
        b_ctr[0] = k
    del a_ctr, b_ctr, a_val, b_val
    a.close()
    b.close()


def _poll_setup(total: int, cpp: Optional[Path]) -> Hop:
    """A plain Python shared-memory poll: the initiator writes the values then the counter; the
    other side polls the counter in a Python loop, copies the values back, bumps its counter."""
    size = 8 + N * 8
    a = shared_memory.SharedMemory(create=True, size=size)
    b = shared_memory.SharedMemory(create=True, size=size)
    assert a.buf is not None and b.buf is not None
    a_ctr, b_ctr = a.buf[:8].cast("Q"), b.buf[:8].cast("Q")
    a_val = np.ndarray((N,), np.float64, a.buf, 8)
    b_val = np.ndarray((N,), np.float64, b.buf, 8)
    a_ctr[0] = b_ctr[0] = 0
    p = CTX.Process(target=_poll_echo, args=(a.name, b.name, total))
    buf = np.ones(N)
    state = {"k": 0}

    def hop() -> None:
        k = state["k"] = state["k"] + 1
        a_val[:] = buf
        a_ctr[0] = k
        while b_ctr[0] != k:
            pass
        _ = b_val.copy()

    def close() -> None:
        nonlocal a_ctr, b_ctr, a_val, b_val
        del a_ctr, b_ctr, a_val, b_val  # the views go before the mappings they export
        for s in (a, b):
            s.close()
            s.unlink()

    return p, hop, [close], None


def _queue_echo(q_in: Any, q_out: Any, total: int) -> None:
    for _ in range(total):
        q_out.put(q_in.get())


def _queue_setup(total: int, cpp: Optional[Path]) -> Hop:
    q1, q2 = CTX.Queue(), CTX.Queue()
    payload = bytes(RECORD_BYTES)

    def hop() -> None:
        q1.put(payload)
        q2.get()

    return CTX.Process(target=_queue_echo, args=(q1, q2, total)), hop, [], None


def _shared_setup(label: str) -> Any:
    """A peer whose set-up xshm bench shares (xshm._bench._peer_setup)."""

    def setup(total: int, cpp: Optional[Path]) -> Hop:
        p, hop, cleanup = _peer_setup(label, total, bytes(RECORD_BYTES))
        return p, hop, cleanup, None

    return setup


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


def _posix_setup(total: int, cpp: Optional[Path]) -> Hop:
    import mmap

    import posix_ipc

    tag = f"/xshm-bench-pi-{os.getpid()}"
    s_ping = posix_ipc.Semaphore(tag + "-ping", posix_ipc.O_CREX)
    s_pong = posix_ipc.Semaphore(tag + "-pong", posix_ipc.O_CREX)
    mem = posix_ipc.SharedMemory(tag + "-mem", posix_ipc.O_CREX, size=RECORD_BYTES)
    buf = mmap.mmap(mem.fd, RECORD_BYTES)
    mem.close_fd()
    payload = bytes(RECORD_BYTES)

    def hop() -> None:
        buf[:RECORD_BYTES] = payload
        s_ping.release()
        s_pong.acquire()
        _ = buf[:RECORD_BYTES]

    def close() -> None:
        buf.close()
        for s in (s_ping, s_pong):
            s.unlink()
        mem.unlink()

    return CTX.Process(target=_posix_echo, args=(tag, total)), hop, [close], None


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


def _iox_setup(total: int, cpp: Optional[Path]) -> Hop:
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

    def close() -> None:
        nonlocal sub, pub, node
        del sub, pub, node  # drops the node: iceoryx2 removes its files in /dev/shm

    return p, hop, [close], ready


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


def _bb_setup(total: int, cpp: Optional[Path]) -> Hop:
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

    def close() -> None:
        nonlocal tx, rx, services, node
        del tx, rx, services, node

    return p, hop, [close], ready


# ---------------------------------------------------------------- the registry


def _pkg(label: str) -> dict[str, Optional[str]]:
    module, package = PEER_PACKAGES[label]
    return {"module": module, "package": package}


WAIT = f"wait(spin={SPIN})"
PEERS: list[Peer] = [
    # snapshot: one read of the default record, fields touched, while a writer publishes
    Peer(
        "xshm read() + fields",
        "`read()`, then `.counter`, `.values`, `.message`",
        "snapshot",
        lambda rate: _xshm_session("read", rate),
    ),
    Peer(
        "xshm read_into() + fields",
        "`read_into(buf)`, then `.counter`, `buf`, `.message`",
        "snapshot",
        lambda rate: _xshm_session("read_into", rate),
    ),
    Peer(
        "xshm read(), no field",
        "`read()` alone, no field touched (profile of the snapshot object, not like for like)",
        "snapshot",
        lambda rate: _xshm_session("read only", rate),
        profile=True,
    ),
    Peer(
        "shared_memory + Lock",
        "copy + decode under a `multiprocessing.Lock`, then the fields",
        "snapshot",
        _lock_session,
    ),
    Peer(
        "iceoryx2 blackboard",
        "`entry.get().decode_as(T)`, then the fields (values as numpy, message decoded)",
        "snapshot",
        _bb_session,
        module="iceoryx2",
        package="iceoryx2",
    ),
    # latency, spinning (no wake-up): the C++ floors first, then Python
    Peer("cpp-atomic-floor", "C++: busy-spun atomic, one cache line", "latency", cpp=("atomic",)),
    Peer(
        "cpp-xshm-spin-1-value",
        "C++: `publish`; spinning `wait` + `read_into`, a one-value record",
        "latency",
        cpp=("xshm-small", "spin"),
    ),
    Peer(
        "cpp-xshm-spin",
        "C++: `publish`; spinning `wait` + `read_into`",
        "latency",
        cpp=("xshm", "spin"),
    ),
    Peer(
        "cpp<->py-xshm-spin",
        f"Python `publish()`; `{WAIT}` + `read_into()`, C++ echo",
        "latency",
        _xshm_setup(SPIN, cpp_echo=True),
        python_echo=False,
    ),
    Peer(
        "py-xshm-spin read_into",
        f"`publish()`; `{WAIT}` + `read_into(buf)`",
        "latency",
        _xshm_setup(SPIN),
    ),
    Peer(
        "py-xshm-spin read()",
        f"quickstart: `publish()`; `{WAIT}` + `read().counter`",
        "latency",
        _xshm_setup(SPIN, quickstart=True),
    ),
    Peer(
        "plain shared_memory poll",
        "`multiprocessing.shared_memory`: values then counter written; a Python loop polls "
        "the counter, then copies the values (no consistency)",
        "latency",
        _poll_setup,
    ),
    Peer(
        "iceoryx2 publish-subscribe",
        "`loan_uninit().write_payload().send()`; spinning on `receive()`",
        "latency",
        _iox_setup,
        module="iceoryx2",
        package="iceoryx2",
    ),
    Peer(
        "iceoryx2 blackboard, spinning get",
        "`update_with_copy()`; spinning on `get()` until the counter moves",
        "latency",
        _bb_setup,
        module="iceoryx2",
        package="iceoryx2",
    ),
    # latency, blocking: one wake-up per one-way hop
    Peer(
        "cpp-futex-floor",
        "C++: raw futex wait/wake on one word",
        "latency",
        wakeups=1,
        cpp=("futex",),
    ),
    Peer(
        "cpp-xshm-block",
        "C++: `publish`; blocking `wait` + `read_into`",
        "latency",
        wakeups=1,
        cpp=("xshm", "block"),
    ),
    Peer(
        "cpp<->py-xshm-block",
        "Python `publish()`; `wait()` + `read_into()`, C++ echo",
        "latency",
        _xshm_setup(0.0, cpp_echo=True),
        wakeups=1,
        python_echo=False,
    ),
    Peer(
        "py-xshm-block",
        "`publish()`; blocking `wait()` + `read_into(buf)`",
        "latency",
        _xshm_setup(0.0),
        wakeups=1,
    ),
    Peer(
        "posix_ipc",
        "two POSIX semaphores + an mmap of the record",
        "latency",
        _posix_setup,
        module="posix_ipc",
        package="posix-ipc",
        wakeups=1,
    ),
    Peer(
        "multiprocessing.Pipe",
        "`send_bytes()` / `recv_bytes()` of the record's bytes",
        "latency",
        _shared_setup("multiprocessing.Pipe"),
        wakeups=1,
        **_pkg("multiprocessing.Pipe"),
    ),
    Peer(
        "faster-fifo",
        "`put()` / `get()` of the record's bytes (a condition variable in shared memory)",
        "latency",
        _shared_setup("faster-fifo"),
        wakeups=1,
        **_pkg("faster-fifo"),
    ),
    # latency, blocking with more than one wake-up per hop
    Peer(
        "multiprocessing.Queue",
        "`put()` / `get()`: a feeder thread, then the reader (2 wake-ups)",
        "latency",
        _queue_setup,
        wakeups=2,
    ),
    Peer(
        "pyzmq (ipc)",
        "PAIR `send()` / `recv()` over ipc: app → I/O thread → I/O thread → app (3 wake-ups)",
        "latency",
        _shared_setup("pyzmq (ipc)"),
        wakeups=3,
        **_pkg("pyzmq (ipc)"),
    ),
]
BY_LABEL = {p.label: p for p in PEERS}


def peers(question: str) -> list[Peer]:
    return [p for p in PEERS if p.question == question]


def packages() -> list[str]:
    """The pip packages the peers need (what benchmarks/requirements.txt pins)."""
    return sorted({p.package for p in PEERS if p.package})
