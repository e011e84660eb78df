"""The Python API contract of xshm.SharedMemoryManager, one process."""

from __future__ import annotations

import gc
import os
import stat
import threading
import time

import numpy as np
import pytest
import xshm


def test_create_defaults_match_the_seed_record(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        assert m.shape == (100,)
        assert m.dtype == np.dtype("float64")
        assert m.message_capacity == 256
        assert m.seq == 0
        assert m.name == "/" + seg_name
        assert not m.readonly
        assert m.backup
        assert f"name='/{seg_name}'" in repr(m)
    assert m.closed
    assert "closed" in repr(m)


def test_publish_and_read(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(2, 3), dtype="int16") as m:
        src = np.arange(6, dtype=np.int16).reshape(2, 3)
        seq = m.publish(values=src, message="héllo", counter=5)
        assert seq == 1
        snap = m.read()
        assert snap.seq == 1
        assert snap.counter == 5
        assert snap.message == "héllo"
        assert snap.writer_pid == os.getpid()
        assert abs(snap.timestamp - time.time()) < 60
        assert snap.timestamp_ns > 0
        np.testing.assert_array_equal(snap.values, np.arange(6).reshape(2, 3))
        assert snap.values.dtype == np.int16
        assert "counter=5" in repr(snap)


def test_none_fields_keep_their_values(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,)) as m:
        m.publish(values=[1.0, 2.0, 3.0], message="one", counter=1)
        assert m.publish(counter=2) == 2
        snap = m.read()
        assert snap.message == "one"
        assert snap.values.tolist() == [1, 2, 3]
        assert snap.counter == 2


def test_read_into_fills_the_callers_array(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(4,)) as m:
        m.publish(values=[1.0, 2.0, 3.0, 4.0], counter=9)
        out = np.zeros(4)
        snap = m.read_into(out)
        assert snap.values is out
        assert out.tolist() == [1, 2, 3, 4]
        assert snap.counter == 9
        with pytest.raises(ValueError, match="shape"):
            m.read_into(np.zeros(5))
        with pytest.raises(TypeError, match="dtype"):
            m.read_into(np.zeros(4, dtype=np.float32))
        with pytest.raises(ValueError, match="contiguous"):
            m.read_into(np.zeros(8)[::2])


def test_values_view_is_zero_copy_and_read_only(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,)) as m:
        view = m.live_values
        assert m.values is view, "values is the old name of live_values"
        assert not view.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1.0
        m.publish(values=[7.0, 8.0, 9.0])
        assert view.tolist() == [7, 8, 9], "the view shows the shared array itself"


def test_view_outlives_close_and_unlink(seg_name: str) -> None:
    m = xshm.SharedMemoryManager.create(seg_name, shape=(1000,))
    m.publish(values=np.full(1000, 3.0))
    view = m.live_values
    m.unlink()
    m.close()
    del m
    gc.collect()
    assert view.sum() == 3000.0, "the mapping lives as long as a view of it"


def test_write_block_publishes_on_exit(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,), dtype="int32") as m:
        block = m.write()
        with block as rec:
            rec.values[:] = [1, 2, 3]
            rec.counter += 10
            rec.message = "block"
            assert m.seq == 0, "nothing is published inside the block"
        assert block.seq == 1
        snap = m.read()
        assert (snap.values.tolist(), snap.counter, snap.message) == ([1, 2, 3], 10, "block")


def test_write_block_that_raises_publishes_nothing(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,)) as m:
        m.publish(values=[1.0, 1.0, 1.0], counter=1)

        def failing_block() -> None:
            with m.write() as rec:
                rec.values[:] = 99
                rec.counter = 99
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_block()
        snap = m.read()
        assert snap.values.tolist() == [1, 1, 1]
        assert snap.counter == 1
        assert m.seq == 1
        with m.write() as rec:  # the mutex was released
            rec.counter = 2
        assert m.read().counter == 2


def test_publish_inside_write_block_is_an_error_not_a_deadlock(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        block = m.write()
        with block, pytest.raises(xshm.ArgumentError, match="already holds"):
            m.publish(counter=1)


def test_lock_serializes_writers_across_threads(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(1,), dtype="int64") as m:

        def work() -> None:
            for _ in range(200):
                with m.write() as rec:
                    rec.values[0] += 1
                    rec.counter += 1

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        snap = m.read()
        assert snap.values[0] == 800
        assert snap.counter == 800
        assert m.seq == 800
        with m.lock():
            pass


def test_wait_returns_new_seq_and_times_out(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        with pytest.raises(TimeoutError):
            m.wait(0, timeout=0.05)
        with pytest.raises(xshm.WaitTimeoutError):
            m.wait(0, timeout=0)
        timer = threading.Timer(0.05, lambda: m.publish(counter=1))
        timer.start()
        assert m.wait(0, timeout=5) == 1
        timer.join()
        timer = threading.Timer(0.02, lambda: m.publish(counter=2))
        timer.start()
        assert m.wait(1, timeout=5, spin=0.001) == 2
        timer.join()
        assert m.wait(0) == 2, "already past the given seq: returns at once"
        with pytest.raises(ValueError, match="timeout"):
            m.wait(0, timeout=-1)


def test_spinning_wait_leaves_the_gil_to_a_producer_thread(seg_name: str) -> None:
    # wait(spin=...) polls with the GIL held only for its first microseconds: a producer
    # thread of the same process must still get to publish while the waiter spins on.
    with xshm.SharedMemoryManager.create(seg_name) as m:
        for k in range(1, 21):
            t = threading.Thread(target=lambda k=k: (time.sleep(0.001), m.publish(counter=k)))
            t.start()
            assert m.wait(k - 1, timeout=5, spin=10.0) == k
            t.join()
        # The timeout bounds the spin: were it not, this wait would spin for an hour. A watchdog
        # thread guards the hang; nothing here measures speed.
        outcome: list[BaseException] = []

        def spin_past_timeout() -> None:
            try:
                m.wait(m.seq, timeout=0.02, spin=3600.0)
            except BaseException as e:
                outcome.append(e)

        waiter = threading.Thread(target=spin_past_timeout, daemon=True)
        waiter.start()
        waiter.join(timeout=120)
        assert not waiter.is_alive(), "wait(timeout=0.02, spin=3600) kept spinning past its timeout"
        assert len(outcome) == 1 and isinstance(outcome[0], xshm.WaitTimeoutError), outcome
        assert m.header()["waiters"] == 0


def test_fast_methods_parse_arguments_like_python(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        m.publish(counter=1)
        spin = "".join(["sp", "in"])  # built at run time: not the interned name
        assert m.wait(**{"seq": 0, spin: 0.0}) == 1
        assert m.wait(0, None, 0.0) == 1
        with pytest.raises(TypeError, match="unexpected keyword argument 'spinn'"):
            m.wait(0, spinn=0.0)
        with pytest.raises(TypeError, match="multiple values for argument 'seq'"):
            m.wait(0, seq=0)
        with pytest.raises(TypeError, match="missing required argument 'seq'"):
            m.wait(timeout=1)
        with pytest.raises(TypeError, match="at most 3 arguments"):
            m.wait(0, 1, 0.0, 4)
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            m.read(out=None)
        buf = np.empty(100)
        assert m.read_into(out=buf).counter == 1
        assert m.publish(counter=2, message="two") == 2


def test_message_too_long_and_truncation(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, message_capacity=4) as m:
        with pytest.raises(xshm.MessageTooLongError, match="5 bytes"):
            m.publish(message="hello")
        with pytest.raises(ValueError, match="slot holds 4"):
            m.publish(message="hello")
        m.publish(message="ab€", truncate=True)  # 5 bytes; the euro sign is 3
        assert m.read().message == "ab"
        with m.write() as rec:
            with pytest.raises(xshm.MessageTooLongError):
                rec.message = "toolong"
            with pytest.raises(xshm.MessageTooLongError):
                rec.set_message("xy€z")  # truncates only when asked, as publish() does
            rec.set_message("xy€z", truncate=True)
        assert m.read().message == "xy"


def test_segment_is_owner_only_by_default(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name):
        assert stat.S_IMODE(os.stat(f"/dev/shm/{seg_name}").st_mode) == 0o600


def test_mode_is_applied_exactly(seg_name: str) -> None:
    old = os.umask(0o077)
    try:
        with xshm.SharedMemoryManager.create(seg_name, mode=0o640):
            assert stat.S_IMODE(os.stat(f"/dev/shm/{seg_name}").st_mode) == 0o640
    finally:
        os.umask(old)


def test_creation_is_exclusive_unless_exist_ok(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(2,)) as m:
        m.publish(values=[1.0, 2.0], counter=3)
        with pytest.raises(FileExistsError):
            xshm.SharedMemoryManager.create(seg_name, shape=(2,))
        with xshm.SharedMemoryManager.create(seg_name, shape=(2,), exist_ok=True) as again:
            assert again.read().counter == 3
        with pytest.raises(xshm.LayoutError, match="another layout"):
            xshm.SharedMemoryManager.create(seg_name, shape=(3,), exist_ok=True)


def test_open_missing_and_open_with_timeout(seg_name: str) -> None:
    with pytest.raises(FileNotFoundError):
        xshm.SharedMemoryManager.open(seg_name)

    def late() -> None:
        time.sleep(0.1)
        xshm.SharedMemoryManager.create(seg_name).publish(counter=4)

    t = threading.Thread(target=late)
    t.start()
    with xshm.SharedMemoryManager.open(seg_name, timeout=5) as m:
        t.join()
        assert m.wait(0, timeout=5) >= 1


@pytest.mark.parametrize("forever", [float("inf"), 1e12])
def test_open_with_an_endless_timeout_waits_for_the_name(seg_name: str, forever: float) -> None:
    # inf (or more than a century) means forever; converted naively it wrapped to a negative
    # duration and the open gave up at once with FileNotFoundError.
    def late() -> None:
        time.sleep(0.1)
        xshm.SharedMemoryManager.create(seg_name, backup=False).publish(counter=4)

    t = threading.Thread(target=late)
    t.start()
    with xshm.SharedMemoryManager.open(seg_name, timeout=forever, stall_timeout=forever) as m:
        t.join()
        assert m.wait(0, timeout=5) >= 1
        assert m.read().counter == 4


def test_readonly_handle_refuses_writes(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as w:
        w.publish(counter=1)
        with xshm.SharedMemoryManager.open(seg_name, readonly=True) as r:
            assert r.readonly
            assert r.read().counter == 1
            with pytest.raises(xshm.ReadOnlyError, match="read-only"):
                r.publish(counter=2)
            with pytest.raises(PermissionError), r.write():
                pass
            with pytest.raises(xshm.ReadOnlyError), r.lock():
                pass


@pytest.mark.parametrize("bad", ["", "/", "a/b", "//a", ".", "..", "/..", "a\0b", "x" * 256])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        xshm.SharedMemoryManager.create(bad)
    with pytest.raises(ValueError, match="name"):
        xshm.SharedMemoryManager.open(bad)
    with pytest.raises(ValueError, match="name"):
        xshm.unlink(bad)


def test_name_normalization() -> None:
    assert xshm.normalize_name("abc") == "/abc"
    assert xshm.normalize_name("/abc") == "/abc"
    assert xshm.normalize_name("x" * 255) == "/" + "x" * 255


@pytest.mark.parametrize(
    "dtype",
    [
        "bool",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "<f8",
        np.int32,
    ],
)
def test_supported_dtypes_round_trip(seg_name: str, dtype: object) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(5,), dtype=dtype) as m:
        src = np.arange(5).astype(m.dtype)
        m.publish(values=src)
        np.testing.assert_array_equal(m.read().values, src)
        assert m.live_values.dtype == np.dtype(dtype)
        m.unlink()


@pytest.mark.parametrize("dtype", [">f8", "object", "U4", "S4", "datetime64[ns]", [("a", "<f8")]])
def test_unsupported_dtypes_are_type_errors(seg_name: str, dtype: object) -> None:
    with pytest.raises(TypeError):
        xshm.SharedMemoryManager.create(seg_name, dtype=dtype)
    assert not os.path.exists(f"/dev/shm/{seg_name}")


@pytest.mark.parametrize("shape", [(-1,), (2**40, 2**40), tuple([1] * 9)])
def test_bad_shapes_are_value_errors(seg_name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        xshm.SharedMemoryManager.create(seg_name, shape=shape)


def test_shape_must_be_ints(seg_name: str) -> None:
    with pytest.raises(TypeError):
        xshm.SharedMemoryManager.create(seg_name, shape=(1.5,))  # type: ignore[arg-type]


def test_wrong_values_are_refused(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,), dtype="int32") as m:
        with pytest.raises(ValueError, match="shape"):
            m.publish(values=np.array([1, 2], dtype=np.int32))
        with pytest.raises(TypeError, match="float64 values into an int32 record"):
            m.publish(values=np.array([1.5, 2.5, 3.5]))
        with pytest.raises(xshm.DtypeError, match="int64 values into an int32 record"):
            m.publish(values=np.array([1, 2, 3], dtype=np.int64))  # a conversion nobody asked for
        m.publish(values=np.array([1, 2, 3], dtype=np.int64), casting="same_kind")
        assert m.read().values.tolist() == [1, 2, 3]
        m.publish(values=np.arange(6, dtype=np.int32)[::2])  # not contiguous: copied
        assert m.read().values.tolist() == [0, 2, 4]


def test_closed_handle_raises(seg_name: str) -> None:
    m = xshm.SharedMemoryManager.create(seg_name)
    m.close()
    m.close()  # idempotent
    with pytest.raises(xshm.ClosedError):
        m.read()
    with pytest.raises(ValueError, match="closed"):
        _ = m.seq


def test_unlink_refuses_foreign_segments_unless_forced(seg_name: str) -> None:
    path = f"/dev/shm/{seg_name}"
    with open(path, "wb") as f:
        f.write(b"not xshm" * 1000)
    with pytest.raises(xshm.LayoutError, match="not an xshm segment"):
        xshm.SharedMemoryManager.open(seg_name)
    with pytest.raises(xshm.LayoutError, match="force"):
        xshm.unlink(seg_name)
    xshm.unlink(seg_name, force=True)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        xshm.unlink(seg_name)
    # A file of 1 to 4095 bytes is no segment, even all zero or starting with the magic
    # (docs/LAYOUT.md 7.4); an empty file or a zero first page is one never made ready.
    for small in (bytes(100), b"XSHMSEG\0junk"):
        with open(path, "wb") as f:
            f.write(small)
        with pytest.raises(xshm.LayoutError, match="force"):
            xshm.unlink(seg_name)
        assert os.path.exists(path)
    for never_ready in (b"", bytes(4096)):
        with open(path, "wb") as f:
            f.write(never_ready)
        xshm.unlink(seg_name)
        assert not os.path.exists(path)


def test_truncated_and_other_version_segments_are_refused(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        m.publish(counter=1)
    path = f"/dev/shm/{seg_name}"
    with open(path, "r+b") as f:
        f.seek(8)
        f.write((2).to_bytes(4, "little"))
    with pytest.raises(xshm.LayoutError, match="layout version 2"):
        xshm.SharedMemoryManager.open(seg_name)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write((1).to_bytes(4, "little"))
        f.truncate(5000)
    with pytest.raises(xshm.LayoutError, match="truncated"):
        xshm.SharedMemoryManager.open(seg_name)


def test_errors_derive_from_xshm_error_and_builtins() -> None:
    assert issubclass(xshm.LayoutError, xshm.XshmError)
    assert issubclass(xshm.LayoutError, ValueError)
    assert issubclass(xshm.DtypeError, TypeError)
    assert issubclass(xshm.WaitTimeoutError, TimeoutError)
    assert issubclass(xshm.ReadOnlyError, PermissionError)


def test_version_and_include() -> None:
    assert xshm.__version__.count(".") == 2
    assert os.path.isfile(os.path.join(xshm.get_include(), "xshm", "xshm.hpp"))
    assert xshm.LAYOUT_VERSION == 1


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_every_timeout_argument_refuses_negative_and_nan(seg_name: str, bad: float) -> None:
    # One rule for every call that takes timeout=: wait, write and lock alike (write and lock
    # used to treat a negative timeout as "try once").
    with xshm.SharedMemoryManager.create(seg_name) as m:
        with pytest.raises(xshm.ArgumentError, match="timeout must be >= 0"):
            m.wait(m.seq, timeout=bad)
        with pytest.raises(xshm.ArgumentError, match="timeout must be >= 0"), m.write(timeout=bad):
            pass
        with pytest.raises(xshm.ArgumentError, match="timeout must be >= 0"), m.lock(timeout=bad):
            pass
        assert m.seq == 0 and m.owner_pid == 0
