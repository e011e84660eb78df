"""A snapshot as Arrow data through the PyCapsule interface, with no dependency on pyarrow:
pyarrow and polars take it as a one-row struct (seq, counter, timestamp, writer_pid, message,
values as nested fixed-size lists), the values sharing the snapshot's own buffer, which lives
while the consumer holds it. Bool values are bit-packed (a copy), complex ones are pairs of
floats, a scalar record's values the scalar."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import xshm

pa: Any = importlib.import_module("pyarrow") if importlib.util.find_spec("pyarrow") else None


@pytest.fixture
def need_pyarrow(skip_or_fail: Callable[[str], None]) -> None:
    if pa is None:
        skip_or_fail("pyarrow is not installed (make setup installs it)")


@pytest.fixture
def rec(seg_name: str, need_pyarrow: None) -> Iterator[xshm.SharedMemoryManager]:
    m = xshm.SharedMemoryManager.create(seg_name, shape=(4, 3), dtype="float32")
    m.publish(values=np.arange(12, dtype=np.float32).reshape(4, 3), message="héllo", counter=7)
    yield m
    m.unlink()
    m.close()


def test_a_snapshot_is_a_one_row_struct(rec: xshm.SharedMemoryManager) -> None:
    s = rec.read()
    schema = pa.schema(s)
    assert schema.names == ["seq", "counter", "timestamp", "writer_pid", "message", "values"]
    assert schema.field("seq").type == pa.uint64()
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("message").type == pa.string()
    assert schema.field("values").type == pa.list_(
        pa.field(
            "item", pa.list_(pa.field("item", pa.float32(), nullable=False), 3), nullable=False
        ),
        4,
    )
    batch = pa.record_batch(s)
    batch.validate(full=True)
    assert batch.num_rows == 1
    row = {name: batch.column(name) for name in schema.names}
    assert row["seq"][0].as_py() == s.seq == 1
    assert row["counter"][0].as_py() == 7
    assert row["timestamp"][0].value == s.timestamp_ns
    assert row["writer_pid"][0].as_py() == s.writer_pid
    assert row["message"][0].as_py() == "héllo"
    np.testing.assert_array_equal(np.array(row["values"][0].as_py(), dtype=np.float32), s.values)


def test_the_values_are_the_snapshots_buffer_while_arrow_holds_it(
    rec: xshm.SharedMemoryManager,
) -> None:
    s = rec.read()
    arr = pa.array(s)
    flat = arr.field("values").flatten().flatten()
    assert flat.buffers()[1].address == s.values.ctypes.data  # no copy
    owner = weakref.ref(s.values)
    del s
    rec.publish(values=np.zeros((4, 3), dtype=np.float32))
    rec.read()  # recycles the last snapshot; its buffer only if nobody holds it
    gc.collect()
    assert owner() is not None
    assert flat.to_pylist() == [float(k) for k in range(12)]  # not overwritten
    del arr, flat
    gc.collect()
    assert owner() is None


def test_capsules_never_consumed_free_everything(rec: xshm.SharedMemoryManager) -> None:
    s = rec.read()
    before = sys.getrefcount(s.values)
    got = [s.__arrow_c_array__(), s.__arrow_c_schema__(), s.__arrow_c_array__(None)]
    held = sys.getrefcount(s.values)
    del got
    after = sys.getrefcount(s.values)
    assert held == before + 2 and after == before


@pytest.mark.parametrize(
    ("dtype", "shape", "arrow"),
    [
        ("bool", (5,), "fixed_size_list<item: bool not null>[5]"),
        (
            "complex64",
            (2,),
            "fixed_size_list<item: fixed_size_list<item: float not null>[2] not null>[2]",
        ),
        ("float64", (), "double"),
        ("complex128", (), "fixed_size_list<item: double not null>[2]"),
        (
            "int16",
            (2, 0),
            "fixed_size_list<item: fixed_size_list<item: int16 not null>[0] not null>[2]",
        ),
        ("float16", (3,), "fixed_size_list<item: halffloat not null>[3]"),
        (
            "uint64",
            (2, 2),
            "fixed_size_list<item: fixed_size_list<item: uint64 not null>[2] not null>[2]",
        ),
    ],
)
def test_every_dtype_and_shape(
    seg_name: str, need_pyarrow: None, dtype: str, shape: tuple[int, ...], arrow: str
) -> None:
    base = np.arange(int(np.prod(shape))).reshape(shape) % 3
    values = (base + 1j * base if dtype.startswith("complex") else base).astype(dtype)
    with xshm.SharedMemoryManager.create(seg_name, shape=shape, dtype=dtype) as m:
        m.unlink()
        m.publish(values=values)
        s = m.read()
        arr = pa.array(s)
        arr.validate(full=True)
        assert str(arr.type.field("values").type) == arrow
        assert [f.name for f in arr.type][-1] == "values"
        got = arr.field("values").to_pylist()[0]
        if dtype.startswith("complex"):
            want = np.stack([values.real, values.imag], axis=-1).tolist()
        else:
            want = values.tolist()
        assert got == want


POLARS_CHECK = """
import sys
import numpy as np
import polars as pl
import xshm

with xshm.SharedMemoryManager.create(sys.argv[1], shape=(4, 3), dtype="float32") as m:
    m.unlink()
    m.publish(values=np.arange(12, dtype=np.float32).reshape(4, 3), message="héllo", counter=7)
    s = m.read()
    df = pl.DataFrame(s)
    names = ["seq", "counter", "timestamp", "writer_pid", "message", "values"]
    assert df.columns == names, df.columns
    assert df.dtypes[-1] == pl.Array(pl.Float32, (4, 3)), df.dtypes
    assert df["message"][0] == "héllo" and df["counter"][0] == 7 and df["seq"][0] == s.seq
    assert df["timestamp"].dt.epoch("ns")[0] == s.timestamp_ns
    np.testing.assert_array_equal(df["values"].to_numpy()[0], s.values)
with xshm.Stream.create(sys.argv[1] + "-s", 16, dtype="int32", shape=(3,)) as st:
    st.unlink()
    r = st.reader()
    for k in range(5):
        st.send(np.array([k, k + 1, k + 2], dtype=np.int32))
    df = pl.DataFrame(r)
    assert df.columns == ["seq", "timestamp", "writer_pid", "data"], df.columns
    assert df["seq"].to_list() == [0, 1, 2, 3, 4]
    assert df["data"].to_list() == [[k, k + 1, k + 2] for k in range(5)]
    assert df.dtypes[-1] == pl.Array(pl.Int32, 3), df.dtypes
    r.close()
print("ok")
"""


def test_polars_takes_a_snapshot(seg_name: str, in_own_process: Callable[..., str]) -> None:
    """In a process of its own: polars warns at every later fork() of the process."""
    out = in_own_process("polars", "make setup installs it", POLARS_CHECK, seg_name)
    assert out == "ok\n"


def test_a_reader_hands_over_what_is_there_as_record_batches(
    seg_name: str, need_pyarrow: None
) -> None:
    with xshm.Stream.create(seg_name, 64, dtype="float32", shape=(2, 3)) as s:
        s.unlink()
        r = s.reader()
        for k in range(5):
            s.send(np.full((2, 3), k, dtype=np.float32))
        t = pa.table(r)
        assert t.schema.names == ["seq", "timestamp", "writer_pid", "data"]
        assert str(t.schema.field("data").type) == (
            "fixed_size_list<item: fixed_size_list<item: float not null>[3] not null>[2]"
        )
        assert t.column("seq").to_pylist() == [0, 1, 2, 3, 4]
        assert t.column("writer_pid").to_pylist() == [os.getpid()] * 5
        for k, frame in enumerate(t.column("data").to_pylist()):
            assert frame == [[float(k)] * 3] * 2
        assert r.received == 5 and r.lag == 0  # received: the reader moved on
        assert pa.table(r).num_rows == 0  # nothing there: an empty stream, never a wait
        s.send(np.full((2, 3), 9, dtype=np.float32))
        assert pa.table(r).column("seq").to_pylist() == [5]  # a later stream takes what came
        r.close()
        with pytest.raises(xshm.ClosedError):
            r.__arrow_c_stream__()


def test_a_byte_stream_is_large_binary_in_batches(seg_name: str, need_pyarrow: None) -> None:
    with xshm.Stream.create(seg_name, 8192, max_bytes=32) as s:
        s.unlink()
        r = s.reader()
        sent = [f"m{k}".encode() for k in range(5000)] + [b""]
        for b in sent:
            s.send(b)
        reader = pa.RecordBatchReader.from_stream(r)
        assert reader.schema.field("data").type == pa.large_binary()
        batches = list(reader)
        assert [b.num_rows for b in batches] == [4096, len(sent) - 4096]  # kArrowBatch a batch
        assert [x for b in batches for x in b.column("data").to_pylist()] == sent
        del reader, batches
        gc.collect()
        r.close()


def test_a_stream_holds_its_reader_and_refuses_a_second_receiver(
    seg_name: str, need_pyarrow: None
) -> None:
    with xshm.Stream.create(seg_name, 8, max_bytes=8) as s:
        s.unlink()
        r = s.reader()
        s.send(b"a")
        cap = r.__arrow_c_stream__()
        owner = weakref.ref(r)
        del r
        gc.collect()
        assert owner() is not None  # the capsule keeps the reader
        t = pa.table(_Capsule(cap))
        assert t.column("data").to_pylist() == [b"a"]
        del cap, t
        gc.collect()
        assert owner() is None


class _Capsule:
    """Hands an already made stream capsule to a consumer that asks for one."""

    def __init__(self, cap: object) -> None:
        self.cap = cap

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self.cap


DUCKDB_CHECK = """
import sys
import duckdb
import numpy as np
import xshm

with xshm.SharedMemoryManager.create(sys.argv[1], shape=(3,)) as m:
    m.unlink()
    m.publish(values=np.arange(3.0), message="hey", counter=4)
    snap = m.read()
    got = duckdb.sql("select seq, counter, message, values from snap").fetchall()
    assert got == [(1, 4, "hey", (0.0, 1.0, 2.0))], got
with xshm.Stream.create(sys.argv[1] + "-s", 16, max_bytes=16) as st:
    st.unlink()
    r = st.reader()
    for k in range(3):
        st.send(f"x{k}".encode())
    got = duckdb.sql("select seq, data from r").fetchall()
    assert got == [(0, b"x0"), (1, b"x1"), (2, b"x2")], got
    r.close()
print("ok")
"""


def test_duckdb_queries_a_snapshot_and_a_reader(
    seg_name: str, in_own_process: Callable[..., str]
) -> None:
    """duckdb finds them by name (its replacement scans take the PyCapsule interface)."""
    out = in_own_process("duckdb", "make setup installs it", DUCKDB_CHECK, seg_name)
    assert out == "ok\n"
