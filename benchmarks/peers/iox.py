"""iceoryx2 as a peer: the same record as a ctypes struct, its blackboard (a latest-value store:
the snapshot peer, and a spinning ping-pong on get()) and its publish-subscribe (a spinning
ping-pong on receive()). iceoryx2 itself is imported only when a set-up runs (make bench-peers
installs it)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.common import CTX, N, touch
from benchmarks.peers.echo import Hop
from benchmarks.peers.snapshot import Snapshot, _pacer, _until, _whole


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

    iox2.set_log_level_from_env_or(iox2.LogLevel.Error)  # not "no config file" per process
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
    h = {"entry": entry}
    try:
        ready.wait(30)
        _until(lambda: _bb_get(h["entry"]).counter != 0)
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
