"""Stream peers: every message, in order, from one process to another. Each throughput peer is a
pair of functions run in two spawned processes, a sender of `n` messages of `size` bytes and a
receiver that takes all `n` and reports how long it took from its first message to its last
(process start-up is not in it). Each sends and receives one message per call unless its row says
batch. The queues are made in the parent and handed to both children, as their users do.

Also the stream's one-way latency: a ping-pong over two streams (A→B, B→A) with spinning
receives, measured like the latency question's rows."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import xshm

from benchmarks.common import CTX
from benchmarks.peers.echo import Hop

# ---------------------------------------------------------------- throughput, one at a time

CAPACITY = 1024  # messages each ring or queue holds (faster-fifo: bytes for as many)
BATCH = 64  # messages per send_many/recv_many, put_many/get_many


def _xshm_send(name: str, n: int, size: int, batch: int) -> None:
    s = xshm.Stream.open(name, timeout=30)
    msg = b"x" * size
    if batch == 1:
        send = s.send
        for _ in range(n):
            send(msg)
    else:
        items = [msg] * batch
        for _ in range(n // batch):
            s.send_many(items)
        if n % batch:
            s.send_many(items[: n % batch])


def _xshm_recv(name: str, n: int, batch: int, ready: Any, out: Any) -> None:
    s = xshm.Stream.open(name, timeout=30)
    r = s.reader("latest")
    ready.set()
    recv = r.recv
    first = recv(timeout=60)
    t0 = time.perf_counter_ns()
    got = 1
    if batch == 1:
        for _ in range(n - 1):
            recv()
        got = n
    else:
        while got < n:
            got += len(r.recv_many(batch, timeout=60))
    ns = time.perf_counter_ns() - t0
    out.put({"ns": ns, "got": got, "lost": r.lost, "size": len(first.data)})


def _ff_queue() -> Any:
    from faster_fifo import Queue

    return Queue(max_size_bytes=CAPACITY * 80)  # room for CAPACITY 64-byte messages and headers


def _ff_send(q: Any, n: int, size: int, batch: int) -> None:
    msg = b"x" * size
    if batch == 1:
        put = q.put
        for _ in range(n):
            put(msg, block=True, timeout=60)
    else:
        items = [msg] * batch
        for _ in range(n // batch):
            q.put_many(items, block=True, timeout=60)
        if n % batch:
            q.put_many(items[: n % batch], block=True, timeout=60)


def _ff_recv(q: Any, n: int, batch: int, ready: Any, out: Any) -> None:
    ready.set()
    first = q.get(block=True, timeout=60)
    t0 = time.perf_counter_ns()
    got = 1
    if batch == 1:
        get = q.get
        for _ in range(n - 1):
            get(block=True, timeout=60)
        got = n
    else:
        while got < n:
            got += len(q.get_many(block=True, timeout=60, max_messages_to_get=batch))
    out.put({"ns": time.perf_counter_ns() - t0, "got": got, "lost": 0, "size": len(first)})


def _mpq_send(q: Any, n: int, size: int, batch: int) -> None:
    msg = b"x" * size
    put = q.put
    for _ in range(n):
        put(msg)


def _mpq_recv(q: Any, n: int, batch: int, ready: Any, out: Any) -> None:
    ready.set()
    first = q.get(timeout=60)
    t0 = time.perf_counter_ns()
    get = q.get
    for _ in range(n - 1):
        get(timeout=60)
    out.put({"ns": time.perf_counter_ns() - t0, "got": n, "lost": 0, "size": len(first)})


def _iox_service(node: Any, name: str, size: int) -> Any:
    import ctypes

    import iceoryx2 as iox2

    class _Msg(ctypes.Structure):
        _fields_ = [("data", ctypes.c_char * size)]

        @staticmethod
        def type_name() -> str:
            return f"XshmBenchMsg{size}"

    svc = (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(_Msg)
        .subscriber_max_buffer_size(CAPACITY)
        .history_size(0)
        .enable_safe_overflow(False)  # lossless: a full subscriber blocks the publisher
        .open_or_create()
    )
    return svc, _Msg


def _iox_send(name: str, n: int, size: int, batch: int) -> None:
    import iceoryx2 as iox2

    from benchmarks.peers.iox import _iox_node

    node = _iox_node()
    svc, msg_t = _iox_service(node, name, size)
    pub = (
        svc.publisher_builder()
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .create()
    )
    payload = msg_t(b"x" * size)
    deadline = time.monotonic() + 30
    while svc.dynamic_config.number_of_subscribers == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    # A publisher learns of a subscriber at its next send at the earliest: without this, the
    # first messages may go to no one (the receiver then misses them and the row fails).
    pub.update_connections()
    for _ in range(n):
        pub.loan_uninit().write_payload(payload).send()
    # The samples live in the publisher's memory: leaving now would take the last ones (up to a
    # subscriber buffer's worth) from a receiver still behind. Stay until it lets go.
    deadline = time.monotonic() + 60
    while svc.dynamic_config.number_of_subscribers > 0 and time.monotonic() < deadline:
        time.sleep(0.001)


def _iox_recv(name: str, n: int, batch: int, ready: Any, out: Any) -> None:
    from benchmarks.peers.iox import _iox_node

    node = _iox_node()
    svc, _ = _iox_service(node, name, 64)
    sub = svc.subscriber_builder().create()
    ready.set()
    receive = sub.receive
    deadline = time.monotonic() + 60
    while (s := receive()) is None:  # iceoryx2's Python API has no blocking receive: it spins
        if time.monotonic() > deadline:
            raise TimeoutError("no first message from the iceoryx2 publisher")
    size = len(bytes(s.payload().contents.data))
    del s
    t0 = time.perf_counter_ns()
    got, idle, seen, last = 1, 0, 1, time.monotonic()
    while got < n:
        s = receive()
        if s is not None:
            got += 1
            del s
            continue
        idle += 1
        if idle % 65536 == 0:  # if nothing came for 10 s, report what did (the row fails)
            now = time.monotonic()
            if got != seen:
                seen, last = got, now
            elif now - last > 10:
                break
    ns = time.perf_counter_ns() - t0
    del sub  # lets the publisher go (it waits for its subscribers to leave)
    out.put({"ns": ns, "got": got, "lost": 0, "size": size})


Pair = tuple[Callable[..., None], Callable[..., None], Any, Callable[[], None]]


class MissedMessages(RuntimeError):
    """A round whose receiver did not get every message sent."""


def xshm_pair(backpressure: str = "block") -> Callable[[int], Pair]:
    def setup(size: int) -> Pair:
        name = f"xshm-bench-stream-{os.getpid()}"
        s = xshm.Stream.create(name, capacity=CAPACITY, max_bytes=size, backpressure=backpressure)
        return _xshm_send, _xshm_recv, s.name, lambda: (s.unlink(), s.close())

    return setup


def ff_pair(size: int) -> Pair:
    q = _ff_queue()
    return _ff_send, _ff_recv, q, lambda: None


def mpq_pair(size: int) -> Pair:
    q = CTX.Queue(maxsize=CAPACITY)
    return _mpq_send, _mpq_recv, q, lambda: None


def iox_pair(size: int) -> Pair:
    name = f"xshm-bench-iox-stream-{os.getpid()}-{time.monotonic_ns()}"
    return _iox_send, _iox_recv, name, lambda: None


def throughput(setup: Callable[[int], Pair], n: int, size: int, batch: int) -> dict[str, float]:
    """One round: messages per second from the receiver's first message to its last."""
    send, recv, handle, cleanup = setup(size)
    ready, out = CTX.Event(), CTX.Queue()
    rp = CTX.Process(target=recv, args=(handle, n, batch, ready, out))
    sp = CTX.Process(target=send, args=(handle, n, size, batch))
    try:
        rp.start()
        if not ready.wait(60):
            raise TimeoutError("the receiver did not start")
        sp.start()
        r = out.get(timeout=300)
        sp.join(60)
        rp.join(60)
        if r["got"] < n or r["size"] != size:
            raise MissedMessages(
                f"the receiver got {r['got']} of {n} messages of {r['size']} bytes"
            )
        return {"msgs_per_s": (n - 1) / (r["ns"] / 1e9), "lost": float(r["lost"])}
    finally:
        for p in (sp, rp):
            if p.is_alive():
                p.kill()
                p.join()
        cleanup()


# ---------------------------------------------------------------- latency: a stream ping-pong


def _stream_echo(ping: str, pong: str, spin: float, total: int) -> None:
    a = xshm.Stream.open(ping, timeout=30)
    b = xshm.Stream.open(pong, timeout=30)
    r = a.reader("oldest")
    for _ in range(total):
        m = r.recv(timeout=60, spin=spin)
        b.send(m.data)


def stream_hop_setup(spin: float, size: int = 64) -> Callable[[int, Optional[Path]], Hop]:
    def setup(total: int, cpp: Optional[Path]) -> Hop:
        tag = f"xshm-bench-slat-{os.getpid()}"
        a = xshm.Stream.create(tag + "-ping", capacity=64, max_bytes=size)
        b = xshm.Stream.create(tag + "-pong", capacity=64, max_bytes=size)
        r = b.reader("oldest")
        p = CTX.Process(target=_stream_echo, args=(a.name, b.name, spin, total))
        msg = b"x" * size

        def hop() -> None:
            a.send(msg)
            r.recv(timeout=30, spin=spin)

        return p, hop, [r.close, a.unlink, a.close, b.unlink, b.close], None

    return setup
