"""The golden segments of tests/vectors/ (segments.tsv says what each must give): each file is
copied into a fresh segment and opened through the public API, read-only for the reader's
expectations and writable for the writer's. cpp/tests/vectors_test.cpp checks the same rows.
Also: the generator, run again, reproduces every committed byte (a layout change shows here)."""

from __future__ import annotations

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


def _rows() -> list[dict[str, str]]:
    lines = [
        x
        for x in (VECTORS / "segments.tsv").read_text("utf-8").split("\n")
        if x and not x.startswith("#")
    ]
    columns = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) == len(columns), line
        rows.append(dict(zip(columns, cells)))
    assert rows, "segments.tsv has no rows"
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


def test_generator_reproduces_every_byte(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_segments", VECTORS / "make_segments.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # its dataclasses look their module up
    try:
        spec.loader.exec_module(gen)
    finally:
        del sys.modules[spec.name]
    if not WRITER_PLATFORM:
        pytest.skip("the generator writes glibc x86-64 mutex bytes")
    gen.main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted([*(r["file"] for r in ROWS), "segments.tsv"])
    for name in made:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name
