"""Cross-language check: the real xshm (Python) writes, the spec-built Go reader reads and waits.

Run from a build directory, with a Python that has xshm installed, e.g.:
    cd build && me-venv/bin/python -m pytest ../tests/spec_reader/test_live.py

Uses only the Python API of README.md: the quickstart (create / publish / unlink / close) for
records, the "Streams" section (Stream.create / send / send_many / reader / recv / dropped /
unlink / close) for streams; what it reads from the segment file directly (the `waiters` word)
comes from docs/LAYOUT.md.
"""

import json
import os
import shutil
import struct
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import xshm

HERE = os.path.dirname(os.path.abspath(__file__))
GO = shutil.which("go")


@pytest.fixture(scope="module")
def go() -> str:
    if GO is None:
        # module scope cannot take the function-scoped skip_or_fail fixture: same rule inline
        reason = "`go` is not on PATH: cannot build the Go spec reader"
        if os.environ.get("XSHM_REQUIRE_ALL") == "1":
            pytest.fail(f"XSHM_REQUIRE_ALL=1 but this test cannot run: {reason}")
        pytest.skip(reason)
    return GO


WAITERS_OFFSET = 268  # LAYOUT.md 4.2


@pytest.fixture(scope="module")
def cli(tmp_path_factory, go):
    out = str(tmp_path_factory.mktemp("gobin") / "xshm-spec-read")
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    subprocess.run([go, "build", "-o", out, "./cmd/xshm-spec-read"], cwd=HERE, env=env, check=True)
    return out


@pytest.fixture
def segments():
    """Creates segments with unique names; unlinks and closes every one afterwards."""
    made = []

    def create(shape, dtype):
        name = f"xshm-specgo-live-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        m = xshm.SharedMemoryManager.create(name, shape=shape, dtype=dtype)
        made.append((name, m))
        return name, m

    yield create
    for name, m in made:
        try:
            m.unlink()
        finally:
            m.close()
        assert not os.path.exists("/dev/shm/" + name), name


def run_cli(cli, *args, timeout=30):
    p = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert len(lines) >= 1, (p.returncode, p.stdout, p.stderr)
    return p.returncode, [json.loads(line) for line in lines]


def waiters(name):
    with open("/dev/shm/" + name, "rb") as f:
        f.seek(WAITERS_OFFSET)
        return struct.unpack("<I", f.read(4))[0]


def same_floats(got, want):
    """Bitwise equality of float64 arrays (NaN == NaN, -0.0 != 0.0)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and got.tobytes() == want.tobytes()


def check_values(dtype, got, arr):
    flat = np.ascontiguousarray(arr).reshape(-1)
    assert len(got) == flat.size
    kind = np.dtype(dtype).kind
    if kind == "c":
        assert all(len(p) == 2 for p in got)
        assert same_floats([p[0] for p in got], flat.real.astype(np.float64))
        assert same_floats([p[1] for p in got], flat.imag.astype(np.float64))
    elif kind == "f":
        assert same_floats(got, flat.astype(np.float64))
    elif kind == "b":
        assert got == flat.tolist()
    else:
        assert got == [int(v) for v in flat.tolist()]


def sample(shape, dtype):
    n = int(np.prod(shape)) if shape else 1
    dt = np.dtype(dtype)
    if dt.kind == "b":
        v = np.arange(n) % 3 == 1
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        v = [info.min, info.max] + [
            (k * 37) % 200 - (100 if dt.kind == "i" else 0) for k in range(n)
        ]
        v = np.array(v[:n], dtype=object)
    elif dt.kind == "f":
        v = np.array([-1.5, 0.1, np.inf, -np.inf, np.nan, -0.0, 65504.0, 1e-7] * n)[:n]
    else:
        v = np.array([complex(k + 0.25, -k - 0.1) for k in range(n)])
    return np.asarray(v).astype(dt).reshape(shape)


CASES = [
    ((4,), "float64"),
    ((2, 3), "int16"),
    ((3,), "uint64"),
    ((2, 2), "int64"),
    ((2, 2, 2), "int32"),
    ((7,), "uint16"),
    ((3,), "uint32"),
    ((), "int8"),
    ((0,), "uint8"),
    ((9,), "uint8"),
    ((5,), "bool"),
    ((5,), "float16"),
    ((1, 4), "float32"),
    ((3,), "complex64"),
    ((2,), "complex128"),
    ((1000,), "float64"),
]


@pytest.mark.parametrize(
    ("shape", "dtype"),
    CASES,
    ids=["{}-{}".format(d, "x".join(map(str, s)) or "0d") for s, d in CASES],
)
def test_go_reads_python_publish(cli, segments, shape, dtype):
    name, m = segments(shape, dtype)
    arr = sample(shape, dtype)
    message = f"héllo ✓ {dtype}"
    before = time.time_ns()
    m.publish(values=arr, message=message, counter=2**64 - 3)
    after = time.time_ns()
    for target in (name, "/" + name, "/dev/shm/" + name):
        rc, (snap,) = run_cli(cli, target)
        assert rc == 0, snap
        assert snap["seq"] == 1 and snap["header_seq"] == 1
        assert snap["counter"] == 2**64 - 3
        assert snap["message"] == message
        assert snap["writer_pid"] == os.getpid()
        assert before <= snap["timestamp_ns"] <= after
        assert snap["dtype"] == dtype
        assert snap["shape"] == list(shape)
        assert snap["backup"] is True  # the README's create() makes backed-up segments
        assert snap["message_capacity"] >= len(message.encode())
        check_values(dtype, snap["values"], arr)
    assert waiters(name) == 0


def test_go_reads_fresh_and_second_publish(cli, segments):
    name, m = segments((4,), "float64")
    rc, (snap,) = run_cli(cli, name)
    assert rc == 0 and snap["seq"] == 0 and snap["counter"] == 0 and snap["message"] == ""
    assert snap["values"] == [0.0] * 4
    m.publish(values=np.arange(4.0), message="a much longer first message", counter=1)
    m.publish(values=np.arange(4.0) * 2, message="short", counter=2)
    rc, (snap,) = run_cli(cli, name)
    assert rc == 0 and snap["seq"] == 2 and snap["counter"] == 2 and snap["message"] == "short"
    assert snap["values"] == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.parametrize("blind", [False, True], ids=["counted", "blind"])
def test_go_wait_wakes_on_python_publish(cli, segments, blind):
    name, m = segments((4,), "float64")
    m.publish(values=np.zeros(4), message="first", counter=1)
    args = [cli, "--wait", "1", "--timeout", "10"] + (["--no-alias"] if blind else []) + [name]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        assert proc.poll() is None, (
            f"the Go waiter returned before any publish: {proc.communicate()!r}"
        )
        counted = waiters(name)
        published = threading.Event()

        def publish():
            m.publish(values=np.full(4, 2.5), message="second", counter=2)
            published.set()

        t = threading.Thread(target=publish)
        t0 = time.monotonic()
        t.start()
        out, err = proc.communicate(timeout=10)
        woke = time.monotonic() - t0
        t.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    snap = json.loads(out)
    assert snap["seq"] == 2 and snap["counter"] == 2 and snap["message"] == "second"
    assert snap["values"] == [2.5] * 4
    assert counted == (0 if blind else 1), "waiters while the Go reader waited"
    assert woke < 2.0, woke
    assert time.monotonic() - start >= 0.2
    assert waiters(name) == 0


@pytest.mark.parametrize("blind", [False, True], ids=["counted", "blind"])
def test_go_wait_times_out(cli, segments, blind):
    name, m = segments((4,), "float64")
    m.publish(values=np.zeros(4), message="only", counter=1)
    start = time.monotonic()
    rc, (err,) = run_cli(
        cli, "--wait", "1", "--timeout", "0.3", *(["--no-alias"] if blind else []), name
    )
    elapsed = time.monotonic() - start
    assert rc != 0
    assert err["error"] == "WaitTimeoutError", err
    assert elapsed >= 0.3, f"timed out before its timeout: {elapsed} s"  # run_cli has the watchdog
    assert waiters(name) == 0
    # Already past the awaited seq: returns at once.
    rc, (snap,) = run_cli(cli, "--wait", "0", "--timeout", "0", name)
    assert rc == 0 and snap["seq"] == 1


def test_go_follows_a_stream_of_python_publishes(cli, segments):
    """Every snapshot the Go reader takes while Python publishes fast is consistent."""
    name, m = segments((64,), "float64")
    m.publish(values=np.zeros(64), message="m0", counter=0)
    proc = subprocess.Popen(
        [cli, "--wait", "1", "--follow", "40", "--timeout", "10", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        k = 0
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            k += 1
            m.publish(values=np.full(64, float(k)), message=f"m{k}" + "x" * (k % 13), counter=k)
            if k % 50 == 0:
                time.sleep(0.001)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    snaps = [json.loads(line) for line in out.splitlines()]
    assert len(snaps) == 40
    last = 1
    for s in snaps:
        k = s["counter"]
        assert s["seq"] == k + 1 and s["seq"] > last
        last = s["seq"]
        assert s["message"] == f"m{k}" + "x" * (k % 13)
        assert s["values"] == [float(k)] * 64


def test_go_errors(cli, segments):
    rc, (err,) = run_cli(cli, f"xshm-specgo-live-missing-{uuid.uuid4().hex}")
    assert rc != 0 and err["error"] == "FileNotFoundError"
    rc, (err,) = run_cli(cli, "..")
    assert rc != 0 and err["error"] == "ArgumentError"


# --- Streams (layout version 2) -------------------------------------------------------------
# Only the Python API of README.md's "Streams" section: Stream.create(name, capacity=...,
# max_bytes=..., backpressure=...), send, send_many, reader(start="oldest") as a context
# manager, recv(timeout=...), the message's seq/data/writer_pid, r.lost, s.dropped, unlink,
# close. Everything else is the Go reader's dump (a look without attaching).


@pytest.fixture
def streams():
    """Creates streams with unique names; unlinks and closes every one afterwards."""
    made = []

    def create(**kw):
        name = f"xshm-specgo-live-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        s = xshm.Stream.create(name, **kw)
        made.append((name, s))
        return name, s

    yield create
    for name, s in made:
        try:
            s.unlink()
        finally:
            s.close()
        assert not os.path.exists("/dev/shm/" + name), name


def dump(cli, target, *flags):
    rc, (d,) = run_cli(cli, *flags, target)
    assert rc == 0, d
    assert d["kind"] == "stream", d
    return d


def used(entries):
    return [e for e in entries if e["attached"]]


def test_go_dumps_python_stream(cli, streams):
    name, s = streams(capacity=8, max_bytes=64)
    sent = [b"", b"hello", "h\u00e9llo \u2713".encode(), bytes(range(64)), b"\x00\xff" * 7]
    before = time.time_ns()
    seqs = [s.send(m) for m in sent]
    after = time.time_ns()
    assert seqs == list(range(len(sent)))
    path = "/dev/shm/" + name
    with open(path, "rb") as f:
        image = f.read()
    for target in (name, "/" + name, path):
        d = dump(cli, target)
        assert d["backpressure"] == "block" and d["capacity"] == 8 and d["max_bytes"] == 64
        assert d["dtype"] == "bytes" and d["shape"] == []
        assert d["head"] == len(sent) and d["ring_head"] == len(sent) and d["oldest"] == 0
        assert d["dropped"] == 0 and d["abandoned"] == 0 and d["recoveries"] == 0
        assert d["never_written"] == 8 - len(sent)
        assert [m["seq"] for m in d["messages"]] == seqs
        assert [bytes.fromhex(m["payload"]) for m in d["messages"]] == sent
        assert [m["length"] for m in d["messages"]] == [len(m) for m in sent]
        for m in d["messages"]:
            assert m["writer_pid"] == os.getpid()
            assert before <= m["timestamp_ns"] <= after
        assert [sl["status"] for sl in d["slots"]] == ["committed"] * len(sent)
        (w,) = used(d["writers"])
        assert w["pid"] == os.getpid() and w["sent"] == len(sent) and w["alive"] is True
        assert w["state"] == (w["generation"] << 8) | 1
        assert used(d["readers"]) == []
        assert d["creator_pid"] == os.getpid()
    # Looking changed nothing.
    with open(path, "rb") as f:
        assert f.read() == image


def test_go_sees_python_reader(cli, streams):
    name, s = streams(capacity=8, max_bytes=64)
    for k in range(5):
        s.send(f"m{k}".encode())
    with s.reader(start="oldest") as r:
        got = [r.recv(timeout=5) for _ in range(2)]
        assert [m.seq for m in got] == [0, 1] and got[0].writer_pid == os.getpid()
        d = dump(cli, name)
        (e,) = used(d["readers"])
        assert e["pid"] == os.getpid() and e["alive"] is True
        assert e["cursor"] == 2 and e["received"] == 2 and e["lost"] == 0
        assert e["state"] == (e["generation"] << 8) | 1
        # 19.1: where it attached (oldest of a ring not yet full: 0); not asleep now; 28.2.
        assert e["start"] == 0 and e["sleeping"] == 0 and e["count_gap"] == 0
        # The model of a second reader, attached at oldest, takes all five.
        d = dump(cli, name, "--oldest")
        model = d["reader_at_oldest"]
        assert model["cursor0"] == 0 and model["stopped_at"] == "empty"
        assert [bytes.fromhex(m["payload"]) for m in model["messages"]] == [
            f"m{k}".encode() for k in range(5)
        ]
        assert r.lost == 0
    d = dump(cli, name)
    assert used(d["readers"]) == []
    assert [e["generation"] for e in d["readers"] if e["generation"]] == [1]


@pytest.mark.parametrize("backpressure", ["block", "drop_oldest"])
def test_go_sees_the_ring_wrap(cli, streams, backpressure):
    """With no reader attached neither backpressure waits; the ring keeps the last 8."""
    name, s = streams(capacity=8, max_bytes=64, backpressure=backpressure)
    seqs = s.send_many([f"message {k}".encode() for k in range(13)])
    for k in range(13, 20):
        seqs = s.send(f"message {k}".encode())
    assert seqs == 19
    d = dump(cli, name)
    assert d["backpressure"] == backpressure
    assert d["head"] == 20 and d["oldest"] == 12 and d["never_written"] == 0
    assert d["dropped"] == s.dropped == 12
    assert [m["seq"] for m in d["messages"]] == list(range(12, 20))
    assert [m["text"] for m in d["messages"]] == [f"message {k}" for k in range(12, 20)]
    assert {m["writer_pid"] for m in d["messages"]} == {os.getpid()}


def test_go_reads_while_python_sends(cli, streams):
    """Every message of every dump taken while Python overwrites the ring is whole."""
    name, s = streams(capacity=8, max_bytes=64, backpressure="drop_oldest")

    def payload(k):
        return (f"{k}:" + "abcdefghijklmnopqrstuvwxyz0123456789"[: k % 37]).encode()

    stop = threading.Event()
    count = [0]

    def writer():
        k = 0
        while not stop.is_set():
            assert s.send(payload(k)) == k
            k += 1
        count[0] = k

    t = threading.Thread(target=writer)
    t.start()
    try:
        checked = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            d = dump(cli, name)
            for m in d["messages"]:
                assert bytes.fromhex(m["payload"]) == payload(m["seq"]), m
                assert m["writer_pid"] == os.getpid()
                checked += 1
            seqs = [m["seq"] for m in d["messages"]]
            assert seqs == sorted(seqs)
    finally:
        stop.set()
        t.join()
    assert checked > 0 and count[0] > 0
    print(f"{count[0]} messages sent, {checked} copies checked")


def test_go_stream_errors(cli, segments, streams):
    name, _m = segments((4,), "float64")
    rc, (err,) = run_cli(cli, "--stream", name)
    assert (
        rc != 0 and err["error"] == "LayoutError" and "is a record, not a stream" in err["detail"]
    )
    sname, _s = streams(capacity=4, max_bytes=16)
    rc, (err,) = run_cli(cli, "--record", sname)
    assert rc != 0 and err["error"] == "LayoutError" and "it is a stream" in err["detail"]
    rc, (err,) = run_cli(cli, "--stream", f"xshm-specgo-live-missing-{uuid.uuid4().hex}")
    assert rc != 0 and err["error"] == "FileNotFoundError"
