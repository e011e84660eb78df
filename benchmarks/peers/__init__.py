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

Stream latency peers (question "streams", issue 15): C++ rows run by benchmarks/cpp/stream_pingpong
with the arguments in `cpp`, interleaved with the streams question's Python hops.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Optional

from xshm._bench import PEER_PACKAGES

from benchmarks.common import SPIN
from benchmarks.peers.echo import (
    _poll_setup,
    _posix_setup,
    _queue_setup,
    _shared_setup,
    _xshm_setup,
)
from benchmarks.peers.iox import _bb_session, _bb_setup, _iox_setup
from benchmarks.peers.snapshot import _lock_session, _xshm_session


@dataclass(frozen=True)
class Peer:
    label: str  # the row's name in results.json and the tables
    api: str  # what the row calls, as the tables print it
    question: str  # "snapshot", "latency" or "streams"
    setup: Optional[Callable[..., Any]] = None
    module: Optional[str] = None  # the module it imports; None: the standard library or xshm
    package: Optional[str] = None  # the pip package that provides it (benchmarks/requirements.txt)
    wakeups: int = 0  # latency: sleeping threads one one-way hop wakes; 0: spinning
    cpp: tuple[str, ...] = ()  # C++ rows: the program's arguments (pingpong's before N)
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
    # stream latency (issue 15), spinning, C++ -> C++: benchmarks/cpp/stream_pingpong
    Peer(
        "cpp-xshm-stream-spin",
        "C++: `s.send(&v, 8)`; spinning `r.recv_into(&v, 8, timeout, spin)` (capacity 64, 'block')",
        "streams",
        cpp=("stream",),
    ),
    Peer(
        "cpp-spsc-ring-spin",
        "C++: a hand-written SPSC ring in POSIX shared memory (cached indices; sequence, "
        "CLOCK_REALTIME timestamp, payload, release store, futex wake if the consumer sleeps); "
        "spinning pop",
        "streams",
        cpp=("spsc",),
    ),
]
BY_LABEL = {p.label: p for p in PEERS}


def peers(question: str) -> list[Peer]:
    return [p for p in PEERS if p.question == question]


def packages() -> list[str]:
    """The pip packages the peers need (what benchmarks/requirements.txt pins)."""
    return sorted({p.package for p in PEERS if p.package})
