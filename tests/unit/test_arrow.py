"""A snapshot as Arrow data through the PyCapsule interface, with no dependency on pyarrow:
pyarrow and polars take it as a one-row struct (seq, counter, timestamp, writer_pid, message,
values as nested fixed-size lists), the values sharing the snapshot's own buffer, which lives
while the consumer holds it. Bool values are bit-packed (a copy), complex ones are pairs of
floats, a scalar record's values the scalar."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import subprocess
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
        got = arr.field("values").to_pylist()[0]
        if dtype.startswith("complex"):
            want = [[v.real, v.imag] for v in values.tolist()]
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
print("ok")
"""


def test_polars_takes_a_snapshot(seg_name: str, skip_or_fail: Callable[[str], None]) -> None:
    """In a process of its own: polars warns at every later fork() of the process."""
    if importlib.util.find_spec("polars") is None:
        skip_or_fail("polars is not installed (make setup installs it)")
        return
    r = subprocess.run(
        [sys.executable, "-c", POLARS_CHECK, seg_name], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stdout + r.stderr[-3000:]
