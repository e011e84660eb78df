"""``xshm demo --bridge``: a record and a stream mirrored between two processes through Zenoh.

This process creates both, exports them (listening on a free loopback port) and publishes;
a second process mirrors them into segments of its own and reads the mirrors with the
ordinary API, timing each update and message from its source timestamp to the moment it
holds it (one machine, one clock)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from typing import Any

import numpy as np

from .._core import SharedMemoryManager, Stream
from ..errors import WaitTimeoutError

__all__ = ["run"]

STAMP = struct.Struct("<qQ")  # the source's time.time_ns(), k


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{s.getsockname()[1]}"


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def _mirror_side(endpoint: str, tag: str, ready: Any, done: Any, out: Any) -> None:
    """The second process: mirror both keys and read them as any local reader would."""
    from . import mirror

    rec_lat: list[float] = []
    msg_lat: list[float] = []
    seen = {"received": 0, "out_of_order": 0, "lost": 0}
    with (
        mirror(f"demo/{tag}-record", into=f"{tag}-record-m", connect=[endpoint]) as mr,
        mirror(f"demo/{tag}-stream", into=f"{tag}-stream-m", connect=[endpoint]) as ms,
    ):
        mr.wait_ready(30)
        ms.wait_ready(30)
        m = SharedMemoryManager.open(f"{tag}-record-m", readonly=True)
        s = Stream.open(f"{tag}-stream-m")
        r = s.reader(start="oldest")

        def records() -> None:  # a reader of the mirrored record, asleep until an update
            seq = m.seq
            while not done.is_set():
                try:
                    seq = m.wait(seq, timeout=0.1)
                except WaitTimeoutError:
                    continue
                rec_lat.append((time.time_ns() - m.read().counter) / 1e3)

        t = threading.Thread(target=records)
        t.start()
        ready.set()
        last_k = -1
        while not done.is_set() or r.lag:  # a reader of the mirrored stream
            for msg in r.recv_many(256, timeout=0.1):
                now = time.time_ns()
                stamp, k = STAMP.unpack_from(msg.data)
                msg_lat.append((now - stamp) / 1e3)
                seen["received"] += 1
                seen["out_of_order"] += k != last_k + 1
                last_k = k
        t.join()
        seen["lost"] = r.lost + int(ms.stats["lost"])
        r.close()
        s.close()
        m.close()
    for name in (f"{tag}-record-m", f"{tag}-stream-m"):
        _unlink(name)
    out.put(
        {
            "record_updates": len(rec_lat),
            "record_latency_us_p50": _pct(rec_lat, 50),
            "record_latency_us_p99": _pct(rec_lat, 99),
            "stream_received": seen["received"],
            "stream_out_of_order": seen["out_of_order"],
            "stream_lost": seen["lost"],
            "stream_latency_us_p50": _pct(msg_lat, 50),
            "stream_latency_us_p99": _pct(msg_lat, 99),
        }
    )


def _unlink(name: str) -> None:
    from .._core import unlink

    with contextlib.suppress(FileNotFoundError):
        unlink(name, False)


def run(seconds: float = 3.0, rate: float = 200.0) -> dict[str, Any]:
    """Publish a record and a stream at ``rate`` per second for ``seconds`` through an export,
    mirrored and read by another process; the figures it measured."""
    import multiprocessing as mp

    from . import export

    ctx = mp.get_context("spawn")
    tag = f"xshm-demo-bridge-{os.getpid()}"
    endpoint = _free_endpoint()
    m = SharedMemoryManager.create(f"{tag}-record", shape=(8,), message_capacity=64)
    s = Stream.create(f"{tag}-stream", capacity=1024, max_bytes=STAMP.size)
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    try:
        with export([f"{tag}-record", f"{tag}-stream"], prefix="demo", listen=[endpoint]) as ex:
            p = ctx.Process(target=_mirror_side, args=(endpoint, tag, ready, done, out))
            p.start()
            try:
                if not ready.wait(60):
                    raise TimeoutError("the mirror process did not start")
                period = 1.0 / rate
                k = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    now = time.time_ns()
                    m.publish(values=np.full(8, float(k)), message=f"update {k}", counter=now)
                    s.send(STAMP.pack(now, k))
                    k += 1
                    time.sleep(max(0.0, t0 + k * period - time.monotonic()))
                time.sleep(0.5)  # the last ones cross
                done.set()
                fig = out.get(timeout=60)
                p.join(30)
            finally:
                if p.is_alive():
                    p.kill()
                    p.join()
            stats = ex.stats
            keys = list(ex.keys.values())
            sent = int(stats[f"{tag}-stream"]["messages"])
            peers = len(stats[f"{tag}-record"]["peers"])
    finally:
        for h in (m, s):
            h.unlink()
            h.close()
    return {
        "endpoint": endpoint,
        "keys": keys,
        "seconds": seconds,
        "rate": rate,
        "published": k,
        "stream_sent": sent,
        "peers": peers,
        **fig,
    }
