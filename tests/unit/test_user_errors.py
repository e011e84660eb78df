"""What a user's mistakes get from xshm (issue 13): one test per error the issue found, asserting
that the message names the problem (durations as people write them, the existing segment and how
to go on, the layout field that differs, the counter's range, an assignment to ``rec.values``),
the casting rule of ``publish(casting=)`` and ``rec.values = x``, empty shapes end to end, and a
sweep of every public method, attribute and function (enumerated from the classes, so a new one
is swept too) with wrong types, negative and huge integers, None, NaN and infinities and bad
strings: none may raise a raw binding error."""

from __future__ import annotations

import errno
import inspect
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import xshm

# ---- one test per error of the issue ----


def test_wait_timeout_says_the_duration_as_people_write_it(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        m.publish(counter=1)
        m.publish(counter=2)
        with pytest.raises(xshm.WaitTimeoutError) as e:
            m.wait(2, timeout=0.25)
        assert str(e.value) == "no publish after sequence 2 within 250 ms"
        with pytest.raises(xshm.WaitTimeoutError, match=r"within 0 s$"):
            m.wait(2, timeout=0)
        with pytest.raises(xshm.WaitTimeoutError, match=r"within 30 ms$"):
            m.wait(2, timeout=0.03, spin=0.01)


@pytest.fixture
def held_lock(seg_name: str) -> Iterator[xshm.SharedMemoryManager]:
    """A segment whose writer lock another thread holds for the test's duration."""
    with xshm.SharedMemoryManager.create(seg_name) as m:
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with m.lock():
                taken.set()
                release.wait(60)

        t = threading.Thread(target=hold)
        t.start()
        assert taken.wait(60)
        try:
            yield m
        finally:
            release.set()
            t.join()


def test_lock_timeouts_say_the_duration_and_the_holder(held_lock: xshm.SharedMemoryManager) -> None:
    m = held_lock
    expected = f"the writer lock of {m.name} was not free within 50 ms (held by pid {os.getpid()})"
    with pytest.raises(xshm.WaitTimeoutError) as e, m.lock(timeout=0.05):
        pass
    assert str(e.value) == expected
    with pytest.raises(xshm.WaitTimeoutError) as e, m.write(timeout=0.05):
        pass
    assert str(e.value) == expected


def test_creating_an_existing_segment_says_how_to_go_on(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name):
        with pytest.raises(FileExistsError) as e:
            xshm.SharedMemoryManager.create(seg_name)
        assert e.value.errno == errno.EEXIST
        text = str(e.value)
        assert f"segment /{seg_name} already exists" in text
        assert "SharedMemoryManager.open" in text
        assert "exist_ok=True" in text
        assert f"`xshm rm {seg_name}`" in text


def test_opening_a_missing_segment_says_what_to_do(seg_name: str) -> None:
    with pytest.raises(FileNotFoundError, match="create it first, or give open a timeout"):
        xshm.SharedMemoryManager.open(seg_name)
    with pytest.raises(FileNotFoundError, match="no segment of that name appeared within 20 ms"):
        xshm.SharedMemoryManager.open(seg_name, timeout=0.02)


@pytest.mark.parametrize(
    ("asked", "difference"),
    [
        ({"shape": (5,)}, "shape (100,) there, (5,) asked"),
        ({"shape": ()}, "shape (100,) there, () asked"),
        ({"dtype": "float32"}, "dtype float64 there, float32 asked"),
        ({"message_capacity": 16}, "message capacity 256 there, 16 asked"),
        ({"backup": False}, "backup on there, off asked"),
        (
            {"shape": (2, 3), "dtype": "int8", "message_capacity": 8, "backup": False},
            "dtype float64 there, int8 asked; shape (100,) there, (2, 3) asked; "
            "message capacity 256 there, 8 asked; backup on there, off asked",
        ),
    ],
)
def test_exist_ok_names_every_field_that_differs_both_sides(
    seg_name: str, asked: dict[str, Any], difference: str
) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(100,)):
        with pytest.raises(xshm.LayoutError) as e:
            xshm.SharedMemoryManager.create(seg_name, exist_ok=True, **asked)
        assert str(e.value) == f"segment /{seg_name} exists with another layout: {difference}"


def test_a_negative_counter_is_refused_in_xshms_words(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        with pytest.raises(xshm.ArgumentError) as e:
            m.publish(counter=-1)
        assert str(e.value) == "counter must be an integer in 0..2**64-1, got -1"
        with pytest.raises(xshm.ArgumentError, match=r"0\.\.2\*\*64-1, got 18446744073709551616"):
            m.publish(counter=2**64)
        with pytest.raises(TypeError, match=r"counter must be an integer .* not float"):
            m.publish(counter=1.5)
        with m.write() as rec, pytest.raises(xshm.ArgumentError, match="counter must be"):
            rec.counter = -1
        assert m.publish(counter=np.uint64(2**64 - 1)) == 2, "numpy integers are integers"
        assert m.read().counter == 2**64 - 1


def test_assigning_rec_values_copies_into_the_record(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(2, 3)) as m:
        with m.write() as rec:
            rec.values = np.arange(6.0).reshape(2, 3)
        assert m.read().values.tolist() == [[0, 1, 2], [3, 4, 5]]
        with m.write() as rec:
            rec.values = 7.0  # broadcast, as numpy assignment does
            rec.values[1] = [1.0, 2.0, 3.0]
        assert m.read().values.tolist() == [[7, 7, 7], [1, 2, 3]]
        with m.write() as rec:
            rec.values = np.array([9.0, 8.0, 7.0])  # one row, broadcast down
            rec.values = rec.values[:, ::-1]  # overlapping: a view of the record itself
        assert m.read().values.tolist() == [[7, 8, 9], [7, 8, 9]]
        with m.write() as rec:
            with pytest.raises(xshm.ArgumentError) as e:
                rec.values = np.zeros(5)
            assert str(e.value) == (
                "values have shape (5,), the record holds (2, 3): "
                "give that shape, or one that broadcasts to it"
            )
            with pytest.raises(xshm.DtypeError, match="int64 values into a float64 record"):
                rec.values = np.ones((2, 3), dtype=np.int64)
            rec.set_values(np.ones((2, 3), dtype=np.int64), casting="safe")
        assert m.read().values.tolist() == [[1, 1, 1], [1, 1, 1]]
        with pytest.raises(xshm.ArgumentError, match="the write block has ended"):
            rec.values = np.zeros((2, 3))
        with pytest.raises(AttributeError, match="cannot be deleted"), m.write() as rec:
            del rec.values


@pytest.mark.parametrize("in_place", [None, True, False])
def test_rec_values_assignment_in_every_block_kind(seg_name: str, in_place: bool | None) -> None:
    with xshm.SharedMemoryManager.create(
        seg_name, shape=(4,), dtype="int16", backup=in_place is not False
    ) as m:
        with m.write(in_place=in_place) as rec:
            rec.values = np.array([1, 2, 3, 4], dtype=np.int16)
        assert m.read().values.tolist() == [1, 2, 3, 4]

        def aborted() -> None:
            with m.write(in_place=in_place) as rec:
                rec.values = np.zeros(4, dtype=np.int16)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            aborted()
        assert m.read().values.tolist() == [1, 2, 3, 4], "an aborted assignment is restored"


# ---- the casting rule ----


def test_default_casting_takes_only_the_segments_dtype(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,)) as m:
        with pytest.raises(xshm.DtypeError) as e:
            m.publish(values=np.array([1, 2, 3], dtype=np.int64))
        assert str(e.value) == (
            "int64 values into a float64 record: pass casting='safe' (or 'same_kind', 'unsafe') "
            "to convert, or build the array as float64"
        )
        assert isinstance(e.value, TypeError), "a DtypeError is also a TypeError"
        with pytest.raises(
            xshm.DtypeError, match=r"float32 values into a float64 record: pass casting='safe'"
        ):
            m.publish(values=np.zeros(3, dtype=np.float32))
        with pytest.raises(
            xshm.DtypeError, match=r"int64 values .numpy's dtype for the list given. into"
        ):
            m.publish(values=[1, 2, 3])
        assert m.seq == 0, "nothing refused was published"
        m.publish(values=[1.0, 2.0, 3.0])  # floats: numpy makes them float64
        assert m.read().values.tolist() == [1.0, 2.0, 3.0]
        m.publish(values=np.array([4.0, 5.0, 6.0], dtype=">f8"))  # byte-swapped float64: equiv
        assert m.read().values.tolist() == [4.0, 5.0, 6.0]
        with pytest.raises(
            xshm.DtypeError, match=r">f8 values into a float64 record: pass casting='equiv'"
        ):
            m.publish(values=np.zeros(3, dtype=">f8"), casting="no")


@pytest.mark.parametrize(
    ("segment", "values", "allowed"),
    [
        # casting levels as np.can_cast defines them, least permissive first
        ("float64", np.zeros(3, ">f8"), ["equiv", "safe", "same_kind", "unsafe"]),
        ("float64", np.zeros(3, np.int32), ["safe", "same_kind", "unsafe"]),
        ("float32", np.zeros(3, np.float64), ["same_kind", "unsafe"]),
        ("int32", np.zeros(3, np.float64), ["unsafe"]),
        ("bool", np.zeros(3, np.int8), ["unsafe"]),
        ("complex64", np.zeros(3, np.float32), ["safe", "same_kind", "unsafe"]),
        ("int8", np.zeros(3, np.int8), ["no", "equiv", "safe", "same_kind", "unsafe"]),
    ],
)
def test_each_casting_converts_what_numpy_says(
    seg_name: str, segment: str, values: np.ndarray[Any, Any], allowed: list[str]
) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,), dtype=segment) as m:
        for casting in ["no", "equiv", "safe", "same_kind", "unsafe"]:
            assert np.can_cast(values.dtype, m.dtype, casting) == (casting in allowed), (
                "the table is numpy's"
            )
            if casting in allowed:
                m.publish(values=values, casting=casting)
                with m.write() as rec:
                    rec.set_values(values, casting=casting)
            else:
                with pytest.raises(xshm.DtypeError, match=f"pass casting='{allowed[0]}'"):
                    m.publish(values=values, casting=casting)
                with (
                    m.write() as rec,
                    pytest.raises(xshm.DtypeError, match=f"pass casting='{allowed[0]}'"),
                ):
                    rec.set_values(values, casting=casting)


def test_unknown_casting_lists_the_five(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        with pytest.raises(ValueError, match="'no', 'equiv', 'safe', 'same_kind', 'unsafe'") as e:
            m.publish(counter=1, casting="same-kind")
        assert "'same-kind'" in str(e.value)
        with pytest.raises(ValueError, match="casting must be one of"), m.write() as rec:
            rec.set_values(0.0, casting="always")
        assert m.seq == 0


def test_only_numbers_are_converted_even_unsafely(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(2,)) as m:
        for bad in [np.array(["1", "2"]), ["a", "b"], np.array([None, None])]:
            with pytest.raises(xshm.DtypeError, match="values must be numbers"):
                m.publish(values=bad, casting="unsafe")
        with pytest.raises(xshm.ArgumentError, match="could not be made an array"):
            m.publish(values=[[1.0], [2.0, 3.0]])


# ---- empty shapes ----


def test_a_zero_dimensional_shape_is_one_value(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=()) as m:
        assert m.shape == ()
        m.publish(values=2.5, counter=1)
        snap = m.read()
        assert snap.values.shape == () and snap.values[()] == 2.5
        out = np.empty(())
        assert m.read_into(out).counter == 1 and out[()] == 2.5
        with m.write() as rec:
            rec.values = 3.5
        assert m.live_values[()] == 3.5


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 2**20)])
@pytest.mark.parametrize("backup", [True, False])
def test_a_zero_extent_carries_only_counter_and_message(
    seg_name: str, shape: tuple[int, ...], backup: bool
) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=shape, dtype="int32", backup=backup) as m:
        assert m.shape == shape
        assert m.header()["values_size"] == 0
        assert m.live_values.shape == shape and m.live_values.size == 0
        assert m.publish(message="first", counter=1) == 1
        assert m.publish(values=np.empty(shape, dtype=np.int32), message="second", counter=2) == 2
        snap = m.read()
        assert (snap.values.shape, snap.counter, snap.message) == (shape, 2, "second")
        assert m.read_into(np.empty(shape, dtype=np.int32)).counter == 2
        for in_place in [None, True, False]:
            with m.write(in_place=in_place) as rec:
                assert rec.values.shape == shape
                rec.values = np.empty(shape, dtype=np.int32)
                rec.counter += 1
        assert m.read().counter == 5
        with pytest.raises(xshm.ArgumentError, match="shape"):
            m.publish(values=np.zeros(1, dtype=np.int32))
        with xshm.SharedMemoryManager.open(seg_name, readonly=True) as r:
            assert r.read().counter == 5 and r.read().values.size == 0


# ---- the sweep ----

# Texts that only a binding's machinery writes: none may ever reach a user.
RAW = (
    "incompatible function arguments",
    "Invoked with",
    "can't convert negative int to unsigned",
    "int too big to convert",
    "has no setter",
    "No constructor defined",
    "Unable to cast",
    "readonly attribute",
    "is not an instance of",
)

BAD_VALUES: list[Any] = [
    None,
    -1,
    2**64,
    -(2**70),
    2**2000,
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "bogus",
    "\ud800",
    b"bytes",
    [1, None],
    (),
    {"a": 1},
    object(),
    np.int64(-1),
    np.float32(math.nan),
    np.zeros(2),
]

_names = itertools.count()


def _check(where: str, fn: Callable[[], object], param: str | None = None) -> str:
    """Runs fn; returns 'ok' or the error's class name, failing on any raw binding error. (An
    async method checks its arguments when called: the coroutine of a good call is closed.)"""
    try:
        got = fn()
        if inspect.iscoroutine(got):
            got.close()
    except Exception as e:  # judged below, outside the handler
        return _judge(where, e, param)
    return "ok"


def _judge(where: str, e: Exception, param: str | None) -> str:
    """xshm's own error, or a plain TypeError/ValueError naming `param`, or an OS error with its
    errno; never a text of the binding's machinery."""
    text = str(e)
    assert not any(r in text for r in RAW), f"{where}: raw binding error {type(e).__name__}: {text}"
    if isinstance(e, xshm.XshmError):
        return type(e).__name__
    if isinstance(e, OSError):  # a name that does not exist, ...
        assert e.errno is not None, f"{where}: {e!r}"
        return type(e).__name__
    assert type(e) in (TypeError, ValueError), f"{where}: {type(e).__name__}: {text}"
    if param is not None:
        assert param in text, f"{where}: {type(e).__name__} does not name {param!r}: {text}"
    return type(e).__name__


class _World:
    """A segment, a handle, a block and a record to call every method on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.m = xshm.SharedMemoryManager.create(name, shape=(2,))
        self.m.publish(values=np.zeros(2), counter=1)
        self.m.publish(counter=2)  # seq 2: wait(seq=True) returns at once

    def fresh(self) -> str:
        return f"{self.name}-{next(_names)}"


def _manager_calls(w: _World) -> dict[str, tuple[Callable[..., object], dict[str, Any]]]:
    """A valid call of every public method of SharedMemoryManager: the callable and its args."""
    return {
        "create": (
            xshm.SharedMemoryManager.create,
            {
                "name": w.fresh(),
                "shape": (2,),
                "dtype": "float64",
                "message_capacity": 16,
                "mode": 0o600,
                "exist_ok": False,
                "backup": True,
                "errors": "replace",
            },
        ),
        "open": (
            xshm.SharedMemoryManager.open,
            {
                "name": w.name,
                "readonly": True,
                "timeout": 0.0,
                "errors": "strict",
                "stall_timeout": None,
            },
        ),
        "read": (w.m.read, {}),
        "read_into": (w.m.read_into, {"out": np.zeros(2)}),
        "publish": (
            w.m.publish,
            {
                "values": np.zeros(2),
                "message": "m",
                "counter": 3,
                "truncate": False,
                "casting": "equiv",
            },
        ),
        "wait": (w.m.wait, {"seq": 0, "timeout": 0.0, "spin": 0.0}),
        "wait_async": (w.m.wait_async, {"seq": 0, "timeout": 0.0}),
        "write": (w.m.write, {"timeout": 0.0, "in_place": None}),
        "lock": (w.m.lock, {"timeout": 0.0}),
        "header": (w.m.header, {}),
    }


def _cleanup(prefix: str) -> None:
    for n in os.listdir("/dev/shm"):
        if n.startswith(prefix):
            os.unlink(os.path.join("/dev/shm", n))


def test_every_public_method_is_swept() -> None:
    """The sweep below covers every public method: a new one fails here until it is added."""
    public = {n for n in dir(xshm.SharedMemoryManager) if not n.startswith("_")}
    methods = {n for n in public if callable(getattr(xshm.SharedMemoryManager, n))}
    covered = {"create", "open", "read", "read_into", "publish", "wait", "write", "lock", "header"}
    covered.add("wait_async")
    no_args_not_called = {"close", "unlink"}  # no parameters; their arity is swept
    assert methods == covered | no_args_not_called, methods ^ (covered | no_args_not_called)
    record_methods = {
        n for n in dir(xshm.Record) if not n.startswith("_") and callable(getattr(xshm.Record, n))
    }
    assert record_methods == {"set_message", "set_values"}, record_methods
    functions = {n for n in xshm.__all__ if inspect.isroutine(getattr(xshm, n))}
    assert functions == {"get_cmake_dir", "get_include", "normalize_name", "unlink"}, functions


def test_sweep_every_parameter_with_bad_values(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        calls = _manager_calls(w)
        outcomes: dict[str, set[str]] = {}
        for method, (fn, good) in calls.items():
            sig = inspect.signature(fn)
            params = [p for p in sig.parameters if p != "self"]
            assert set(good) == set(params), (
                f"{method}: the sweep's arguments are not its parameters {params}"
            )
            for param in params:
                for bad in BAD_VALUES:
                    args = dict(good)
                    if method == "create":
                        args["name"] = w.fresh()
                    args[param] = bad
                    where = f"{method}({param}={bad!r})"
                    outcome = _check(where, lambda fn=fn, args=args: fn(**args), param)
                    outcomes.setdefault(f"{method}.{param}", set()).add(outcome)
        # The sweep tried what it meant to: each parameter refused something.
        for key, seen in outcomes.items():
            assert seen - {"ok"}, f"{key} accepted every bad value"
    finally:
        w.m.close()
        _cleanup(seg_name)


def test_sweep_arity_and_keywords(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        bound = {
            n: getattr(w.m, n)
            for n in dir(w.m)
            if not n.startswith("_") and callable(getattr(w.m, n))
        }
        bound.update(__enter__=w.m.__enter__, __exit__=w.m.__exit__, __repr__=w.m.__repr__)
        for name, fn in bound.items():
            where = f"{name}(too many)"
            assert _check(where, lambda fn=fn: fn(*range(12))) == "TypeError", where
            assert _check(f"{name}(bogus=1)", lambda fn=fn: fn(bogus_keyword=1)) == "TypeError"
        for fn in (xshm.unlink, xshm.normalize_name, xshm._core.unlink):
            assert _check(f"{fn.__name__}()", fn) == "TypeError"
            assert _check(f"{fn.__name__}(x12)", lambda fn=fn: fn(*range(12))) == "TypeError"
        assert not w.m.closed and os.path.exists(f"/dev/shm/{seg_name}"), (
            "no refused call closed or unlinked"
        )
        with w.m.write() as rec:
            for name in ("set_message", "set_values"):
                fn = getattr(rec, name)
                assert _check(f"Record.{name}()", fn) == "TypeError"
                assert _check(f"Record.{name}(x12)", lambda fn=fn: fn(*range(12))) == "TypeError"
        block, lock = w.m.write(), w.m.lock()
        for obj in (block, lock):
            assert _check(f"{type(obj).__name__}.__exit__()", obj.__exit__) == "TypeError"
            assert (
                _check(f"{type(obj).__name__}.__enter__(1)", lambda obj=obj: obj.__enter__(1))
                == "TypeError"
            )
        for cls in (
            xshm.SharedMemoryManager,
            xshm.Record,
            xshm.WriteBlock,
            xshm.LockBlock,
            xshm.Snapshot,
        ):
            assert _check(f"{cls.__name__}()", cls) == "TypeError"
            assert _check(f"{cls.__name__}('x')", lambda cls=cls: cls("x")) == "TypeError"
    finally:
        w.m.close()
        _cleanup(seg_name)


def test_sweep_record_and_module_functions(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        for bad in BAD_VALUES:
            for in_place in (True, False):
                with w.m.write(in_place=in_place) as rec:
                    _check(
                        f"rec.values = {bad!r}",
                        lambda bad=bad, rec=rec: setattr(rec, "values", bad),
                    )
                    _check(
                        f"rec.counter = {bad!r}",
                        lambda bad=bad, rec=rec: setattr(rec, "counter", bad),
                        "counter",
                    )
                    _check(
                        f"rec.message = {bad!r}",
                        lambda bad=bad, rec=rec: setattr(rec, "message", bad),
                        "message",
                    )
                    _check(f"set_values({bad!r})", lambda bad=bad, rec=rec: rec.set_values(bad))
                    _check(
                        f"set_values(casting={bad!r})",
                        lambda bad=bad, rec=rec: rec.set_values(0.0, bad),
                        "casting",
                    )
                    _check(
                        f"set_message({bad!r})",
                        lambda bad=bad, rec=rec: rec.set_message(bad),
                        "message",
                    )
                    _check(
                        f"set_message(truncate={bad!r})",
                        lambda bad=bad, rec=rec: rec.set_message("m", bad),
                        "truncate",
                    )
            _check(f"unlink({bad!r})", lambda bad=bad: xshm.unlink(bad), "name")
            _check(f"unlink(force={bad!r})", lambda bad=bad: xshm.unlink(w.fresh(), bad), "force")
            _check(f"normalize_name({bad!r})", lambda bad=bad: xshm.normalize_name(bad), "name")
        assert w.m.read().values.tolist() == [0.0, 0.0] or w.m.seq > 2
    finally:
        w.m.close()
        _cleanup(seg_name)


def _judge_set(where: str, fn: Callable[[], object], deleting: bool = False) -> None:
    """A set or delete of an attribute: done, or refused in xshm's words naming the attribute."""
    attr = where.rsplit(".", 1)[1]
    try:
        fn()
    except AttributeError as e:
        error: Exception = e
    except (TypeError, ValueError) as e:  # a settable attribute given a bad value
        _judge(where, e, None)
        return
    else:
        return
    text = str(error)
    assert not any(r in text for r in RAW), f"{where}: {text}"
    assert attr in text, f"{where}: {text}"
    assert deleting or "cannot be changed" in text, f"{where}: {text}"


def test_sweep_every_attribute_set_and_delete(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        snap = w.m.read()
        block = w.m.write()
        objects: list[object] = [w.m, snap, block]
        with w.m.write() as rec:
            objects.append(rec)
            for obj in objects:
                cls = type(obj)
                for attr in [
                    n for n in dir(cls) if not n.startswith("_") and not callable(getattr(cls, n))
                ]:
                    if isinstance(getattr(cls, attr, None), (int, str)):  # constants
                        continue
                    where = f"{cls.__name__}.{attr}"
                    for bad in (None, -1, "x"):
                        _judge_set(
                            where, lambda obj=obj, attr=attr, bad=bad: setattr(obj, attr, bad)
                        )
                    _judge_set(where, lambda obj=obj, attr=attr: delattr(obj, attr), deleting=True)
        assert w.m.name == f"/{seg_name}" and w.m.shape == (2,), "nothing was changed"
    finally:
        w.m.close()
        _cleanup(seg_name)


def test_sweep_a_closed_handle(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        w.m.close()
        for method, (fn, good) in _manager_calls(w).items():
            if method in ("create", "open"):
                continue
            with pytest.raises(xshm.ClosedError):
                fn(**good)
        for attr in ("name", "shape", "dtype", "seq", "live_values", "nbytes"):
            with pytest.raises(xshm.ClosedError):
                getattr(w.m, attr)
        assert w.m.closed
    finally:
        _cleanup(seg_name)


def test_sweep_xshm_text() -> None:
    outcomes: dict[str, set[str]] = {}
    for name in (
        "cut",
        "cut_str",
        "decode_lossy",
        "decode_utf16",
        "encode_utf16",
        "valid_up_to",
        "validate",
    ):
        fn = getattr(xshm.text, name)
        params = list(inspect.signature(fn).parameters)
        good: dict[str, Any] = {"data": b"ab", "text": "abc", "max_bytes": 2}  # even: UTF-16
        assert set(params) <= set(good), f"{name}: a parameter the sweep does not know: {params}"
        fn(**{p: good[p] for p in params})
        for param in params:
            for bad in BAD_VALUES:
                args = {p: good[p] for p in params}
                args[param] = bad
                outcome = _check(
                    f"xshm.text.{name}({param}={bad!r})", lambda fn=fn, args=args: fn(**args), param
                )
                outcomes.setdefault(f"{name}.{param}", set()).add(outcome)
    for key, seen in outcomes.items():  # the sweep tried what it meant to
        assert seen - {"ok"}, f"{key} accepted every bad value"


def test_xshm_text_errors_name_the_parameter_and_the_range() -> None:
    t = xshm.text
    expected: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: t.cut(b"x", -1), ValueError, "max_bytes must be an integer in 0..2**64-1, got -1"),
        (
            lambda: t.cut(b"x", 2**64),
            ValueError,
            "max_bytes must be an integer in 0..2**64-1, got 18446744073709551616",
        ),
        (
            lambda: t.cut_str("x", -(2**70)),
            ValueError,
            "max_bytes must be an integer in 0..2**64-1, got -1180591620717411303424",
        ),
        (
            lambda: t.cut(b"x", 1.5),
            TypeError,
            "max_bytes must be an integer in 0..2**64-1, not float",
        ),
        (
            lambda: t.cut(b"x", None),
            TypeError,
            "max_bytes must be an integer in 0..2**64-1, not NoneType",
        ),
        (lambda: t.cut(None, 1), TypeError, "data must be bytes, not NoneType"),
        (lambda: t.validate("abc"), TypeError, "data must be bytes, not str"),
        (lambda: t.cut_str(b"x", 1), TypeError, "text must be a str, not bytes"),
        (lambda: t.encode_utf16(None), TypeError, "text must be a str, not NoneType"),
        (
            lambda: t.cut_str("\ud800", 1),
            ValueError,
            "text cannot be encoded as UTF-8: 'utf-8' codec can't encode character '\\ud800' "
            "in position 0: surrogates not allowed",
        ),
    ]
    for call, kind, message in expected:
        with pytest.raises(kind) as e:
            call()
        assert type(e.value) is kind and str(e.value) == message
    with pytest.raises(
        ValueError, match=r"^max_bytes must be .*, got 1148130695274254524\d+\.\.\.$"
    ):
        t.cut(b"x", 2**2000)  # the number shortened, as xshm's own messages do
    with pytest.raises(ValueError, match=r"^max_bytes must be .*, got (np\.int64\()?-1\)?$"):
        t.cut(b"x", np.int64(-1))  # numpy 2 writes np.int64(-1), numpy 1 -1
    with pytest.raises(UnicodeDecodeError) as d:  # invalid UTF-8 keeps its own error
        t.validate(b"ok\xffno")
    assert d.value.start == 2
    # integers as numpy and Python spell them still work, whole inputs come back unchanged
    assert t.cut(b"abc", np.uint8(2)) == b"ab" and t.cut(b"abc", True) == b"a"
    assert t.cut(b"abc", 2**64 - 1) == b"abc" and t.cut_str("a\u00e9", 2) == "a"
