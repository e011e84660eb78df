"""The golden segments of tests/vectors/ (segments.tsv says what each must give): each file is
copied into a fresh segment and opened through the public API, read-only for the reader's
expectations and writable for the writer's. cpp/tests/vectors_test.cpp checks the same rows.
The golden streams of tests/vectors/streams/ (streams.tsv, written from docs/LAYOUT.md Part II
alone) likewise, through Stream.open, a reader at 'oldest' and a writer.
Also: the generator, run again, reproduces every committed byte (a layout change shows here)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xshm

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
# The mutex bytes of the vectors are glibc's x86-64 pthread_mutex_t: only there may a writer
# open them (docs/LAYOUT.md, the mutex ABI); readers may open them anywhere.
WRITER_PLATFORM = platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"


def _rows(manifest: Path = VECTORS / "segments.tsv") -> list[dict[str, str]]:
    lines = [x for x in manifest.read_text("utf-8").split("\n") if x and not x.startswith("#")]
    columns = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) == len(columns), line
        rows.append(dict(zip(columns, cells)))
    assert rows, f"{manifest.name} has no rows"
    return rows


ROWS = _rows()


def _error(name: str) -> type[Exception]:
    return {"LayoutError": xshm.LayoutError, "TornRecordError": xshm.TornRecordError}[name]


def _install(row: dict[str, str], name: str) -> None:
    """Copies the vector's bytes into the segment `name` (the seg_name fixture removes it)."""
    fd = os.open(f"/dev/shm/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (VECTORS / row["file"]).read_bytes())
    finally:
        os.close(fd)


def _check_record(m: Any, row: dict[str, str]) -> None:
    snap = m.read()
    assert snap.seq == int(row["read_seq"])
    assert snap.counter == int(row["counter"])
    assert snap.timestamp_ns == int(row["timestamp_ns"])
    assert snap.writer_pid == int(row["writer_pid"])
    assert snap.message == row["message"]
    assert str(snap.values.dtype) == row["dtype"]
    assert str(snap.values.shape) == row["shape"]
    assert snap.values.tobytes().hex() == row["values"]


def _check_header(m: Any, row: dict[str, str], *, recovered: bool = False) -> None:
    assert str(m.dtype) == row["dtype"]
    assert str(m.shape) == row["shape"]
    assert m.backup == (row["backup"] == "1")
    assert m.recoveries == int(row["recoveries"]) + recovered
    assert m.header()["epoch"] == int(row["epoch"]) + recovered


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_reader(row: dict[str, str], seg_name: str) -> None:
    _install(row, seg_name)
    if row["stage"] == "open":
        with pytest.raises(_error(row["error"]), match=re.escape(row["error_text"])):
            xshm.SharedMemoryManager.open(seg_name, readonly=True)
        return
    with xshm.SharedMemoryManager.open(seg_name, readonly=True) as m:
        _check_header(m, row)
        assert m.seq == int(row["seq"])
        if row["stage"] == "read":
            with pytest.raises(_error(row["error"]), match=re.escape(row["error_text"])):
                m.read()
        else:
            _check_record(m, row)


WRITER_ROWS = [r for r in ROWS if r["writer"] != "-" or r["stage"] == "open"]


@pytest.mark.skipif(not WRITER_PLATFORM, reason="the vectors' mutex is glibc x86-64's")
@pytest.mark.parametrize("row", WRITER_ROWS, ids=[r["file"] for r in WRITER_ROWS])
def test_writer(row: dict[str, str], seg_name: str) -> None:
    _install(row, seg_name)
    if row["stage"] == "open" or row["writer"] == "refuse":
        text = row["error_text"] if row["stage"] == "open" else row["writer_error_text"]
        with pytest.raises(xshm.LayoutError, match=re.escape(text)):
            xshm.SharedMemoryManager.open(seg_name)
        return
    with xshm.SharedMemoryManager.open(seg_name) as m:
        _check_header(m, row)  # opening recovers nothing: the first lock does
        values = np.zeros(m.shape, m.dtype)
        if row["writer"] == "torn":
            with pytest.raises(xshm.TornRecordError):
                m.publish(counter=1)  # only every field may follow a torn record
            _check_header(m, row, recovered=True)
            next_seq = int(row["seq"]) + 1
        else:
            with m.lock():
                pass
            _check_header(m, row, recovered=row["writer"] == "recover")
            assert m.seq == int(row["read_seq"])  # recovery published what the live slot held
            _check_record(m, row)
            next_seq = int(row["read_seq"]) + 1
            values = np.frombuffer(bytes.fromhex(row["values"]), m.dtype).reshape(m.shape)
        message = "after"[: m.message_capacity]
        assert m.publish(values=values, message=message, counter=7) == next_seq
        snap = m.read()
        assert (snap.seq, snap.counter, snap.message) == (next_seq, 7, message)
        assert snap.values.tobytes() == values.tobytes()


def test_every_file_is_in_the_manifest() -> None:
    files = {p.name for p in VECTORS.glob("*.seg")}
    assert files == {r["file"] for r in ROWS}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_segments", VECTORS / "make_segments.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # its dataclasses look their module up
    try:
        spec.loader.exec_module(gen)
    finally:
        del sys.modules[spec.name]
    return gen


def _same_files(made: Path, committed: Path, names: list[str]) -> None:
    assert sorted(p.name for p in made.iterdir()) == sorted(names)
    for name in names:
        if (made / name).is_file():
            assert (made / name).read_bytes() == (committed / name).read_bytes(), name


def test_generator_reproduces_every_byte(tmp_path: Path) -> None:
    gen = _generator()
    if not WRITER_PLATFORM:
        pytest.skip("the generator writes glibc x86-64 mutex bytes")
    gen.main(tmp_path)
    _same_files(tmp_path, VECTORS, [*(r["file"] for r in ROWS), "segments.tsv", "streams"])
    _check_streams_made(tmp_path / "streams")


def test_stream_generator_reproduces_every_byte(tmp_path: Path) -> None:
    """The streams are written from docs/LAYOUT.md alone, on any platform."""
    _generator().write_streams(tmp_path)
    _check_streams_made(tmp_path / "streams")


def _check_streams_made(made: Path) -> None:
    files = {r["file"] for r in STREAM_ROWS if "/" not in r["file"]}
    _same_files(made, STREAMS, [*files, "streams.tsv"])


# --- Streams ----------------------------------------------------------------------------------

STREAMS = VECTORS / "streams"
STREAM_ROWS = _rows(STREAMS / "streams.tsv")
READING_ROWS = [r for r in STREAM_ROWS if r["open_as"] == "stream" and r["stage"] in ("ok", "recv")]


def _stream_id(row: dict[str, str]) -> str:
    return f"{row['open_as']}-opens-{row['file'].removeprefix('../')}"


def _install_bytes(data: bytes, name: str) -> None:
    fd = os.open(f"/dev/shm/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _expected(row: dict[str, str]) -> list[tuple[int, int, int, str]]:
    """The messages cell: seq:writer_pid:timestamp_ns:payload-hex, space separated; '-': none."""
    if row["messages"] == "-":
        return []
    out = []
    for cell in row["messages"].split(" "):
        seq, pid, ts, payload = cell.split(":")
        out.append((int(seq), int(pid), int(ts), payload))
    return out


def _check_stream_header(s: xshm.Stream, row: dict[str, str]) -> None:
    assert s.backpressure == row["backpressure"]
    assert s.capacity == int(row["capacity"])
    assert s.max_bytes == int(row["max_bytes"])
    assert s.max_readers == int(row["max_readers"])
    assert s.header()["max_writers"] == int(row["max_writers"])
    if row["dtype"] == "bytes":
        assert (s.dtype, s.shape, row["shape"]) == (None, None, "-")
    else:
        assert (str(s.dtype), str(s.shape)) == (row["dtype"], row["shape"])
    assert s.head == int(row["head_open"])


def _take_expected(s: xshm.Stream, r: xshm.StreamReader, row: dict[str, str]) -> None:
    for seq, pid, ts, payload in _expected(row):
        m = r.recv(timeout=5.0)  # a hole before it is judged after kHoleCheck (10 ms)
        assert (m.seq, m.writer_pid, m.timestamp_ns) == (seq, pid, ts)
        if s.dtype is None:
            assert isinstance(m.data, bytes)
            assert m.data.hex() == payload
        else:
            assert isinstance(m.data, np.ndarray)
            assert (m.data.dtype, m.data.shape) == (s.dtype, s.shape)
            assert m.data.tobytes().hex() == payload


def _refused_reader(s: xshm.Stream, text: str) -> None:
    with pytest.raises(xshm.LayoutError, match=re.escape(text)):
        s.reader()


@pytest.mark.parametrize("row", STREAM_ROWS, ids=[_stream_id(r) for r in STREAM_ROWS])
def test_stream_open(row: dict[str, str], seg_name: str) -> None:
    data = (STREAMS / row["file"]).read_bytes()
    _install_bytes(data, seg_name)
    # docs/LAYOUT.md 16 names it xshm.segment_kind; the package does not export it (yet).
    assert xshm._core.segment_kind(seg_name) == row["peek"]
    if row["open_as"] == "record":
        assert row["stage"] == "open"
        for readonly in (True, False):
            with pytest.raises(_error(row["error"]), match=re.escape(row["error_text"])):
                xshm.SharedMemoryManager.open(seg_name, readonly=readonly)
        return
    if row["stage"] == "open":
        for readonly in (True, False):
            with pytest.raises(_error(row["error"]), match=re.escape(row["error_text"])):
                xshm.Stream.open(seg_name, readonly=readonly)
        return
    with xshm.Stream.open(seg_name, readonly=True) as s:
        _check_stream_header(s, row)
    if row["stage"] == "attach":  # S20: only a handle that locks the mutex is refused
        with pytest.raises(xshm.LayoutError, match=re.escape(row["error_text"])):
            xshm.Stream.open(seg_name)
        with xshm.Stream.open(seg_name, readonly=True) as s:
            _refused_reader(s, row["error_text"])
    elif WRITER_PLATFORM:
        with xshm.Stream.open(seg_name) as s:
            _check_stream_header(s, row)
    assert Path(f"/dev/shm/{seg_name}").read_bytes() == data, "opening changed the segment"


@pytest.mark.skipif(not WRITER_PLATFORM, reason="attaching locks the vectors' glibc x86-64 mutex")
@pytest.mark.parametrize("row", READING_ROWS, ids=[_stream_id(r) for r in READING_ROWS])
def test_stream_reader(row: dict[str, str], seg_name: str) -> None:
    _install_bytes((STREAMS / row["file"]).read_bytes(), seg_name)
    # Read-only forbids sending only: a reader may attach (docs/LAYOUT.md 21.3 step 5).
    with xshm.Stream.open(seg_name, readonly=True) as s, s.reader("oldest") as r:
        assert r.cursor == int(row["cursor"])
        assert s.head == int(row["head"])  # after any recovery the attach made
        _take_expected(s, r, row)
        if row["stage"] == "recv":
            with pytest.raises(_error(row["error"]), match=re.escape(row["error_text"])):
                r.recv(timeout=1.0)
            return
        assert r.try_recv() is None
        with pytest.raises(xshm.WaitTimeoutError):
            r.recv(timeout=0.02)
        assert (r.received, r.lost, r.skipped) == (
            len(_expected(row)),
            int(row["lost"]),
            int(row["skipped"]),  # dropped claims (25.7)
        )
        assert r.cursor == int(row["head"])
        assert r.received + r.lost + r.skipped == r.cursor - int(row["cursor"])  # 28.2
        assert s.head == int(row["head"])
        assert (s.abandoned, s.dropped) == (int(row["abandoned"]), int(row["dropped"]))
        assert s.header()["recoveries"] == int(row["recoveries"])
        with s.reader("latest") as latest:
            assert latest.cursor == int(row["head"])
            assert latest.try_recv() is None


WRITING_ROWS = [r for r in READING_ROWS if r["stage"] == "ok"]


@pytest.mark.skipif(not WRITER_PLATFORM, reason="sending locks the vectors' glibc x86-64 mutex")
@pytest.mark.parametrize("row", WRITING_ROWS, ids=[_stream_id(r) for r in WRITING_ROWS])
def test_stream_writer(row: dict[str, str], seg_name: str) -> None:
    """What a reader takes, then one more message from a new writer (seq = head)."""
    _install_bytes((STREAMS / row["file"]).read_bytes(), seg_name)
    with xshm.Stream.open(seg_name) as w, w.reader("oldest") as r:
        _take_expected(w, r, row)
        data: Any = b"after"[: w.max_bytes]
        if w.dtype is not None:
            data = np.frombuffer(b"\x5a" * w.max_bytes, w.dtype).reshape(w.shape)
        head = int(row["head"])
        assert w.send(data, timeout=5.0) == head  # a dead gating reader is reaped
        m = r.recv(timeout=5.0)
        assert (m.seq, m.writer_pid) == (head, os.getpid())
        sent = data if w.dtype is None else data.tobytes()  # bytes() of a 0-d array is not it
        assert (m.data if w.dtype is None else m.data.tobytes()) == sent
        assert r.lost == int(row["lost"])
        assert w.head == head + 1


@pytest.mark.skipif(not WRITER_PLATFORM, reason="sending locks the vectors' glibc x86-64 mutex")
def test_a_new_writer_does_not_revive_a_dead_writers_hole(seg_name: str) -> None:
    """docs/LAYOUT.md 25.2 step 4: a writer taking over the dead writer's entry 0 gets the next
    generation (offset 12 + 1), so the dead writer's WRITING slot still judges dead while the
    new writer lives, and a reader passes it."""
    _install_bytes((STREAMS / "stream-writing-dead.seg").read_bytes(), seg_name)
    with xshm.Stream.open(seg_name) as w:
        assert w.send(b"after", timeout=5.0) == 4  # registers: takes the dead entry 0 over
        b = Path(f"/dev/shm/{seg_name}").read_bytes()
        at = int.from_bytes(b[80:88], "little")  # writers_offset (18.1); entry 0 (19.2):
        assert int.from_bytes(b[at + 12 : at + 16], "little") == 2  # generation
        assert int.from_bytes(b[at : at + 8], "little") == (2 << 8) | 1  # state
        with xshm.Stream.open(seg_name, readonly=True) as s, s.reader() as r:
            seqs = []
            with contextlib.suppress(xshm.WaitTimeoutError):
                for _ in range(4):
                    seqs.append(r.recv(timeout=1.0).seq)
            assert (seqs, r.lost) == ([0, 1, 3, 4], 1)


def test_every_stream_file_is_in_the_manifest() -> None:
    files = {p.name for p in STREAMS.glob("*.seg")}
    assert files == {r["file"] for r in STREAM_ROWS if "/" not in r["file"]}
    assert all((STREAMS / r["file"]).is_file() for r in STREAM_ROWS)
