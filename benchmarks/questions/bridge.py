"""Beyond one machine: what does the bridge cost against the engine used by hand? (issue 17)

Two processes over loopback TCP, each with its own Zenoh session (peer mode, multicast
scouting and Zenoh's shared memory off, explicit `tcp/127.0.0.1` endpoints): a sender that
listens and a receiver that connects. Every row moves `N` 64-byte messages, each one received
and its bytes touched, with Zenoh's reliable transport and BLOCK congestion control (nothing
may be lost). messages/s = N / (the receiver's last message - the sender's first send), both on
CLOCK_MONOTONIC. Rows, interleaved rounds (round r runs every row once, rotated by r):
- raw Zenoh publish-subscribe: the sender `put`s each message through a declared publisher, the
  receiver takes samples from the subscriber's channel (`recv()`, `payload.to_bytes()`);
- xshm stream over Zenoh: the sender's main thread `send`s each message into a local "block"
  stream that `xshm.bridge.export` (a thread of the same process) reads and publishes; in the
  receiver, `xshm.bridge.mirror` commits them into a local stream that the main thread reads
  (`recv_many`, each `msg.data`). The exporter and the mirror run in the same processes as the
  raw row's publisher and subscriber.
And the latency of a record (the default: 100 float64 and a message), one update every 2 ms
(the receiver asleep between), from the sender's stamp (CLOCK_MONOTONIC ns) to the receiver
holding it:
- raw Zenoh put → subscriber: the record's bytes `put` (express, reliable, DROP as the export
  does), the receiver's `sub.recv()` and `payload.to_bytes()`;
- xshm record over Zenoh: `m.publish(...)` into a local record that `bridge.export` publishes;
  the receiver's `bridge.mirror` publishes it into a local record whose reader (`m.wait(seq)`,
  `m.read()`) takes it.
And over Redis Streams, a `redis-server` this question starts on a free loopback port (no
persistence), the same `N` 64-byte messages, each received and its bytes touched:
- raw redis-py pipelined XADD/XREAD: the sender adds each message with `pipe.xadd` and sends
  the pipeline every 512 messages; the receiver loops `XREAD COUNT 512 BLOCK` from the last id;
- xshm stream over Redis: as over Zenoh, `bridge.export(..., engine="redis")` and
  `bridge.mirror(..., engine="redis")` in the same processes (the export pipelines one `XADD`
  per message, 512 at a time; the mirror reads its consumer group with `XREADGROUP COUNT 512`,
  commits into its local stream, then `XACK`s and records its place in one transaction).
Ratios are medians of per-round ratios (of p50s for the latency rows).

Fan-out (docs/SCALING.md): one export of a "block" stream to 1, 4 and 16 mirrors, each a
process of its own reading its local stream (`recv_many`, each `msg.data`), over Zenoh and over
Redis: `FANOUT_N` 64-byte messages sent flat out once every mirror is attached; per-mirror
messages/s = `FANOUT_N` / (the last mirror's last message - the first send), and the deliveries
per second of all mirrors together."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Optional

from benchmarks.common import CTX, percentiles

SIZE = 64
RAW = "raw Zenoh publish-subscribe"
BRIDGE = "xshm stream over Zenoh (bridge)"
API = {
    RAW: "`pub.put(b)` (BLOCK, reliable); `sub.recv().payload.to_bytes()`",
    BRIDGE: "`s.send(b)` + `bridge.export`; `bridge.mirror` + `r.recv_many(n)`, `msg.data`",
}


REDIS_RAW = "raw redis-py pipelined XADD/XREAD"
REDIS_BRIDGE = "xshm stream over Redis (bridge)"
REDIS_API = {
    REDIS_RAW: "`pipe.xadd(k, {'d': b})`, `pipe.execute()` every 512; `r.xread({k: last}, 512)`",
    REDIS_BRIDGE: "`s.send(b)` + `bridge.export(engine='redis')`; `bridge.mirror(engine="
    "'redis')` + `r.recv_many(n)`, `msg.data`",
}
REDIS_BATCH = 512


def _config(listen: list[str], connect: list[str]) -> Any:
    import json

    import zenoh

    c = zenoh.Config()
    for k, v in (
        ("mode", "peer"),
        ("scouting/multicast/enabled", False),
        ("transport/shared_memory/enabled", False),
        ("listen/endpoints", listen),
        ("connect/endpoints", connect),
    ):
        c.insert_json5(k, json.dumps(v))
    return c


WARM = 2**63  # the first 8 bytes of a warm-up message: sent until the receiver has one


def _payload(k: int) -> bytes:
    return k.to_bytes(8, "little") * (SIZE // 8)


def _warm(send: Any, go: Any) -> None:
    """Send warm-up messages until the receiver has one: a subscriber Zenoh reports matching
    may still miss the first messages while the peers' links settle."""
    warm = _payload(WARM)
    while not go.wait(0.01):
        send(warm)


def _is_warm(data: Any) -> bool:
    return int.from_bytes(bytes(data[:8]), "little") == WARM


def _raw_sender(endpoint: str, n: int, ready: Any, go: Any, t0: Any) -> None:
    import zenoh

    s = zenoh.open(_config([endpoint], []))
    pub = s.declare_publisher(
        "bench/raw",
        congestion_control=zenoh.CongestionControl.BLOCK,
        reliability=zenoh.Reliability.RELIABLE,
    )
    while not pub.matching_status:
        time.sleep(0.01)
    msgs = [_payload(k) for k in range(n)]
    ready.release()
    _warm(pub.put, go)
    t0.value = time.monotonic_ns()
    for b in msgs:
        pub.put(b)
    time.sleep(0.5)  # let the last messages leave before the session goes
    s.close()


def _raw_receiver(endpoint: str, n: int, ready: Any, t1: Any) -> None:
    import zenoh

    s = zenoh.open(_config([], [endpoint]))
    sub = s.declare_subscriber("bench/raw", zenoh.handlers.FifoChannel(4096))
    while _is_warm(data := sub.recv().payload.to_bytes()):
        ready.release()  # once; later warm-ups are skipped
        ready = _Once()
    got = len(data)
    for _ in range(n - 1):
        data = sub.recv().payload.to_bytes()
        got += len(data)
    t1.value = time.monotonic_ns()
    assert got == n * SIZE
    s.close()


def _bridge_sender(endpoint: str, name: str, n: int, ready: Any, go: Any, t0: Any) -> None:
    import xshm
    from xshm import bridge

    s = xshm.Stream.create(name, capacity=4096, max_bytes=SIZE)
    try:
        with bridge.export(name, key="bench/bridge", listen=[endpoint], status=False) as ex:
            msgs = [_payload(k) for k in range(n)]
            ready.release()
            _warm(s.send, go)
            t0.value = time.monotonic_ns()
            for b in msgs:
                s.send(b)
            last = s.head - 1
            while ex.stats[name]["source_seq"] < last:  # every message handed to Zenoh
                time.sleep(0.01)
            time.sleep(0.5)
    finally:
        s.unlink()
        s.close()


def _bridge_receiver(endpoint: str, name: str, n: int, ready: Any, t1: Any) -> None:
    import xshm
    from xshm import bridge

    try:
        with bridge.mirror("bench/bridge", into=name, connect=[endpoint], status=False) as mi:
            mi.wait_ready(60)
            s = xshm.Stream.open(name)
            with s.reader(start="oldest") as r:
                got, warming = 0, True
                while got < n * SIZE:
                    msgs = r.recv_many(1024, timeout=30)
                    if warming:  # the warm-ups come first: skip them, then stop looking
                        i = 0
                        while i < len(msgs) and _is_warm(msgs[i].data):
                            i += 1
                        if i:
                            ready.release()
                            ready = _Once()
                        warming = i == len(msgs)
                        msgs = msgs[i:]
                    for msg in msgs:
                        got += len(msg.data)
                t1.value = time.monotonic_ns()
                assert r.lost == 0 and got == n * SIZE
            s.close()
    finally:
        xshm.unlink(name)


class _Once:
    """What `ready` becomes once released: later warm-ups release nothing."""

    def release(self) -> None:
        pass


LAT_RAW = "raw Zenoh put → subscriber"
LAT_BRIDGE = "xshm record over Zenoh: publish → mirror read"
LAT_API = {
    LAT_RAW: "`pub.put(b)` (express, DROP); `sub.recv().payload.to_bytes()`",
    LAT_BRIDGE: "`m.publish(...)` + `bridge.export`; `bridge.mirror` + `m.wait(seq)`, `m.read()`",
}
PERIOD = 0.002
SPARE = 50  # updates sent beyond what the receiver takes
RECORD_VALUES = 100


def _lat_raw_sender(endpoint: str, n: int, ready: Any, go: Any) -> None:
    import zenoh

    s = zenoh.open(_config([endpoint], []))
    pub = s.declare_publisher(
        "bench/lat",
        congestion_control=zenoh.CongestionControl.DROP,
        reliability=zenoh.Reliability.RELIABLE,
        express=True,
    )
    while not pub.matching_status:
        time.sleep(0.01)
    body = bytearray(RECORD_VALUES * 8 + 64)
    ready.release()
    go.wait(60)
    time.sleep(0.5)  # the links settle (see _warm)
    for _ in range(n + SPARE):
        time.sleep(PERIOD)
        body[:8] = time.monotonic_ns().to_bytes(8, "little")
        pub.put(bytes(body))
    time.sleep(0.5)
    s.close()


def _lat_raw_receiver(endpoint: str, n: int, ready: Any, out: Any) -> None:
    import zenoh

    s = zenoh.open(_config([], [endpoint]))
    sub = s.declare_subscriber("bench/lat", zenoh.handlers.FifoChannel(4096))
    ready.release()
    got = []
    for _ in range(n):  # the sender sends SPARE more: a lost first one does not hang this
        data = sub.recv().payload.to_bytes()
        got.append(time.monotonic_ns() - int.from_bytes(data[:8], "little"))
    out.put(got)
    s.close()


def _lat_bridge_sender(endpoint: str, name: str, n: int, ready: Any, go: Any) -> None:
    import numpy as np
    import xshm
    from xshm import bridge

    m = xshm.SharedMemoryManager.create(name, shape=(RECORD_VALUES,))
    try:
        with bridge.export(name, key="bench/lat-bridge", listen=[endpoint], status=False):
            values = np.zeros(RECORD_VALUES)
            ready.release()
            go.wait(60)
            for _ in range(n + SPARE):
                time.sleep(PERIOD)
                m.publish(values=values, message="stamp", counter=time.monotonic_ns())
            time.sleep(0.5)
    finally:
        m.unlink()
        m.close()


def _lat_bridge_receiver(endpoint: str, name: str, n: int, ready: Any, out: Any) -> None:
    import xshm
    from xshm import bridge

    try:
        with bridge.mirror("bench/lat-bridge", into=name, connect=[endpoint], status=False) as mi:
            mi.wait_ready(60)
            m = xshm.SharedMemoryManager.open(name, readonly=True)
            ready.release()
            got = []
            seq = m.seq
            while len(got) < n:
                try:
                    seq = m.wait(seq, timeout=5)
                except xshm.WaitTimeoutError:
                    break  # a record skips what a wake-up came too late for: fewer samples
                got.append(time.monotonic_ns() - m.read().counter)
            m.close()
            out.put(got)
    finally:
        xshm.unlink(name)


def _pair(row: str, sender: Any, receiver: Any, ready: Any, go: Any, wait: Any) -> Any:
    """Start a row's two processes, let them go once both are ready, return what ``wait()``
    returns once the receiver is done; neither is left running."""
    sender.start()
    receiver.start()
    try:
        for _ in range(2):
            if not ready.acquire(timeout=60):
                raise TimeoutError(f"{row}: a side did not start")
        go.set()
        got = wait()
        receiver.join(300)
        sender.join(60)
        if receiver.exitcode != 0 or sender.exitcode != 0:
            raise RuntimeError(f"{row}: exit codes {sender.exitcode}, {receiver.exitcode}")
        return got
    finally:
        for p in (sender, receiver):
            if p.is_alive():
                p.kill()
                p.join()


def _lat_one(row: str, n: int, port: int) -> list[int]:
    """One round of one latency row: one-way ns per update received."""
    endpoint = f"tcp/127.0.0.1:{port}"
    ready, go, out = CTX.Semaphore(0), CTX.Event(), CTX.Queue()
    tag = f"xshm-bench-bridge-lat-{os.getpid()}"
    if row == LAT_RAW:
        sender = CTX.Process(target=_lat_raw_sender, args=(endpoint, n, ready, go))
        receiver = CTX.Process(target=_lat_raw_receiver, args=(endpoint, n, ready, out))
    else:
        sender = CTX.Process(target=_lat_bridge_sender, args=(endpoint, tag, n, ready, go))
        args = (endpoint, tag + "-m", n, ready, out)
        receiver = CTX.Process(target=_lat_bridge_receiver, args=args)
    got: list[int] = _pair(row, sender, receiver, ready, go, lambda: out.get(timeout=120))
    return got[10:]  # the first few wake a cold path


def _one(row: str, n: int, port: int) -> float:
    """One round of one row: messages/s."""
    endpoint = f"tcp/127.0.0.1:{port}"
    ready, go = CTX.Semaphore(0), CTX.Event()
    t0, t1 = CTX.Value("q", 0), CTX.Value("q", 0)
    tag = f"xshm-bench-bridge-{os.getpid()}"
    if row == RAW:
        sender = CTX.Process(target=_raw_sender, args=(endpoint, n, ready, go, t0))
        receiver = CTX.Process(target=_raw_receiver, args=(endpoint, n, ready, t1))
    else:
        sender = CTX.Process(target=_bridge_sender, args=(endpoint, tag, n, ready, go, t0))
        receiver = CTX.Process(target=_bridge_receiver, args=(endpoint, tag + "-m", n, ready, t1))
    _pair(row, sender, receiver, ready, go, lambda: receiver.join(300))
    return n / ((t1.value - t0.value) / 1e9)


def _redis_raw_sender(url: str, n: int, ready: Any, go: Any, t0: Any) -> None:
    import redis

    r = redis.Redis.from_url(url)
    msgs = [_payload(k) for k in range(n)]
    ready.release()
    go.wait(60)
    t0.value = time.monotonic_ns()
    pipe = r.pipeline(transaction=False)
    for i, b in enumerate(msgs, 1):
        pipe.xadd("bench/raw", {"d": b})
        if i % REDIS_BATCH == 0 or i == n:
            pipe.execute()
    r.close()


def _redis_raw_receiver(url: str, n: int, ready: Any, t1: Any) -> None:
    import redis

    r = redis.Redis.from_url(url)
    ready.release()
    got, last = 0, b"0-0"
    while got < n * SIZE:
        reply = r.xread({"bench/raw": last}, count=REDIS_BATCH, block=30_000)
        entries = reply[0][1]
        for _, fields in entries:
            got += len(fields[b"d"])
        last = entries[-1][0]
    t1.value = time.monotonic_ns()
    r.close()


def _redis_bridge_sender(url: str, name: str, n: int, ready: Any, go: Any, t0: Any) -> None:
    import xshm
    from xshm import bridge

    s = xshm.Stream.create(name, capacity=4096, max_bytes=SIZE)
    try:
        with bridge.export(name, key="bench/bridge", engine="redis", url=url, status=False) as ex:
            msgs = [_payload(k) for k in range(n)]
            ready.release()
            go.wait(60)
            t0.value = time.monotonic_ns()
            for b in msgs:
                s.send(b)
            last = s.head - 1
            while ex.stats[name]["source_seq"] < last:  # every message added to Redis
                time.sleep(0.01)
    finally:
        s.unlink()
        s.close()


def _redis_bridge_receiver(url: str, name: str, n: int, ready: Any, t1: Any) -> None:
    import xshm
    from xshm import bridge

    try:
        kw: dict[str, Any] = {"engine": "redis", "url": url, "status": False}
        with bridge.mirror("bench/bridge", into=name, **kw) as mi:
            mi.wait_ready(60)
            s = xshm.Stream.open(name)
            with s.reader(start="oldest") as r:
                ready.release()
                got = 0
                while got < n * SIZE:
                    for msg in r.recv_many(1024, timeout=30):
                        got += len(msg.data)
                t1.value = time.monotonic_ns()
                assert r.lost == 0 and got == n * SIZE
            s.close()
    finally:
        xshm.unlink(name)


def _redis_one(row: str, n: int, url: str) -> float:
    """One round of one Redis row, on an emptied server: messages/s."""
    import redis

    with redis.Redis.from_url(url) as r:
        r.flushall()
    ready, go = CTX.Semaphore(0), CTX.Event()
    t0, t1 = CTX.Value("q", 0), CTX.Value("q", 0)
    tag = f"xshm-bench-bridge-redis-{os.getpid()}"
    if row == REDIS_RAW:
        sender = CTX.Process(target=_redis_raw_sender, args=(url, n, ready, go, t0))
        receiver = CTX.Process(target=_redis_raw_receiver, args=(url, n, ready, t1))
    else:
        sender = CTX.Process(target=_redis_bridge_sender, args=(url, tag, n, ready, go, t0))
        receiver = CTX.Process(target=_redis_bridge_receiver, args=(url, tag + "-m", n, ready, t1))
    _pair(row, sender, receiver, ready, go, lambda: receiver.join(300))
    return n / ((t1.value - t0.value) / 1e9)


def _redis_rows(quick: bool, notes: dict[str, str]) -> dict[str, Any]:
    import shutil
    import subprocess
    import tempfile

    try:
        import redis
    except ImportError:
        notes["bridge over Redis"] = "redis (redis-py) is not installed: run make bench-peers"
        return {}
    server = shutil.which("redis-server")
    if server is None:
        notes["bridge over Redis"] = "redis-server is not installed (apt install redis-server)"
        return {}
    port = _port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as d:
        args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d]
        proc = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    with redis.Redis.from_url(url) as r:
                        r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            rows = [REDIS_RAW, REDIS_BRIDGE]
            rounds, n = (2, 2000) if quick else (6, 100_000)
            per_round: dict[str, list[float]] = {row: [] for row in rows}
            for k in range(rounds):
                for row in rows[k % len(rows) :] + rows[: k % len(rows)]:
                    per_round[row].append(_redis_one(row, n, url))
            fanout = _fanout(quick, url)
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "messages": n,
        "fanout": fanout,
        "rows": {
            row: {
                "api": REDIS_API[row],
                "msgs_per_s": statistics.median(rs),
                "per_round": rs,
                "rounds": len(rs),
            }
            for row, rs in per_round.items()
        },
    }


FANOUT = (1, 4, 16)
FANOUT_N = 10_000


def _fanout_sender(
    engine: str, where: str, name: str, m: int, n: int, ready: Any, go: Any, t0: Any
) -> None:
    import xshm
    from xshm import bridge

    kw: dict[str, Any] = (
        {"listen": [where]} if engine == "zenoh" else {"engine": "redis", "url": where}
    )
    s = xshm.Stream.create(name, capacity=4096, max_bytes=SIZE)
    try:
        with bridge.export(name, key="bench/fanout", status=False, **kw) as ex:
            msgs = [_payload(k) for k in range(n)]
            ready.release()
            go.wait(120)
            while ex.stats[name]["mirrors"] < m:  # every mirror acknowledging (its group)
                time.sleep(0.01)
            time.sleep(0.6)  # past the export's settling time for a new mirror
            t0.value = time.monotonic_ns()
            for b in msgs:
                s.send(b, timeout=60)
            last = s.head - 1
            while ex.stats[name]["source_seq"] < last:
                time.sleep(0.01)
            go.wait(120)
    finally:
        s.unlink()
        s.close()


def _fanout_receiver(
    engine: str, where: str, name: str, n: int, ready: Any, t1: Any, i: int
) -> None:
    import xshm
    from xshm import bridge

    kw: dict[str, Any] = (
        {"connect": [where]} if engine == "zenoh" else {"engine": "redis", "url": where}
    )
    try:
        with bridge.mirror("bench/fanout", into=name, status=False, **kw) as mi:
            mi.wait_ready(120)
            s = xshm.Stream.open(name)
            with s.reader(start="oldest") as r:
                ready.release()
                got = 0
                while got < n * SIZE:
                    for msg in r.recv_many(1024, timeout=120):
                        got += len(msg.data)
                t1[i] = time.monotonic_ns()
            s.close()
    finally:
        xshm.unlink(name)


def _fanout_one(engine: str, m: int, n: int, where: str) -> dict[str, float]:
    """One export to ``m`` mirrors: per-mirror messages/s and deliveries/s of all."""
    ready, go = CTX.Semaphore(0), CTX.Event()
    t0, t1 = CTX.Value("q", 0), CTX.Array("q", m)
    tag = f"xshm-bench-fanout-{os.getpid()}"
    sender = CTX.Process(target=_fanout_sender, args=(engine, where, tag, m, n, ready, go, t0))
    receivers = [
        CTX.Process(target=_fanout_receiver, args=(engine, where, f"{tag}-{i}", n, ready, t1, i))
        for i in range(m)
    ]
    sender.start()
    try:
        if not ready.acquire(timeout=60):
            raise TimeoutError(f"fan-out {engine}: the export did not start")
        for p in receivers:
            p.start()
        for _ in range(m):
            if not ready.acquire(timeout=180):
                raise TimeoutError(f"fan-out {engine}: a mirror did not start")
        go.set()
        for p in receivers:
            p.join(600)
        sender.join(60)
        codes = [p.exitcode for p in (sender, *receivers)]
        if any(c != 0 for c in codes):
            raise RuntimeError(f"fan-out {engine} to {m}: exit codes {codes}")
    finally:
        for p in (sender, *receivers):
            if p.is_alive():
                p.kill()
                p.join()
    seconds = (max(t1[:]) - t0.value) / 1e9
    return {"per_mirror_msgs_per_s": n / seconds, "deliveries_per_s": m * n / seconds}


def _fanout(quick: bool, redis_url: Optional[str]) -> dict[str, Any]:
    fans, n = ((1, 2), 500) if quick else (FANOUT, FANOUT_N)
    out: dict[str, Any] = {"messages": n, "rows": {}}
    engines = ["zenoh"] + (["redis"] if redis_url else [])
    for engine in engines:
        for m in fans:
            if engine == "redis" and redis_url:
                import redis

                with redis.Redis.from_url(redis_url) as r:
                    r.flushall()
                where = redis_url
            else:
                where = f"tcp/127.0.0.1:{_port()}"
            out["rows"][f"{engine}, {m} mirror{'s' if m > 1 else ''}"] = {
                "engine": engine,
                "mirrors": m,
                **_fanout_one(engine, m, n, where),
            }
    return out


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    try:
        import zenoh  # noqa: F401
    except ImportError:
        notes["bridge"] = "eclipse-zenoh is not installed: run make bench-peers"
        return {}
    rows = [RAW, BRIDGE]
    rounds, n = (2, 2000) if quick else (6, 100_000)
    per_round: dict[str, list[float]] = {row: [] for row in rows}
    for k in range(rounds):
        for row in rows[k % len(rows) :] + rows[: k % len(rows)]:
            per_round[row].append(_one(row, n, _port()))
    lat_rows = [LAT_RAW, LAT_BRIDGE]
    lat_rounds, lat_n = (1, 50) if quick else (4, 300)
    lat: dict[str, list[dict[str, float]]] = {row: [] for row in lat_rows}
    for k in range(lat_rounds):
        for row in lat_rows[k % 2 :] + lat_rows[: k % 2]:
            lat[row].append(percentiles(_lat_one(row, lat_n, _port())))
    redis_rows = _redis_rows(quick, notes)
    fanout = redis_rows.pop("fanout", None) or _fanout(quick, None)
    return {
        "size": SIZE,
        "messages": n,
        "redis": redis_rows,
        "fanout": fanout,
        "latency": {
            row: {
                "api": LAT_API[row],
                "p50_ns": statistics.median(r["p50_ns"] for r in rs),
                "p99_ns": statistics.median(r["p99_ns"] for r in rs),
                "p50_per_round": [r["p50_ns"] for r in rs],
                "rounds": len(rs),
            }
            for row, rs in lat.items()
        },
        "rows": {
            row: {
                "api": API[row],
                "msgs_per_s": statistics.median(rs),
                "per_round": rs,
                "rounds": len(rs),
            }
            for row, rs in per_round.items()
        },
    }
