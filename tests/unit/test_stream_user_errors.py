"""The issue 13 sweep, for streams: every public method of Stream and StreamReader called with
wrong types, negative and huge integers, None and bad strings finds no raw binding error (each is
xshm's own error, or a TypeError/ValueError naming the parameter); every attribute refuses a set
in xshm's words; a closed handle raises ClosedError. Methods are enumerated from the classes, so
a new one fails here until it is swept."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xshm
from test_user_errors import BAD_VALUES, _check, _judge_set  # the same judge as the records


class _World:
    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        # "drop_oldest": a send never waits (the sweep passes timeout=inf), and a message is
        # always there for a receive (the sweep sends one before each call).
        self.s = xshm.Stream.create(name, capacity=4, max_bytes=16, backpressure="drop_oldest")
        self.r = self.s.reader("oldest")
        self.s.send(b"one")

    def fresh(self) -> str:
        self.n += 1
        return f"{self.name}-{self.n}"

    def close(self) -> None:
        self.r.close()
        self.s.close()
        for n in os.listdir("/dev/shm"):
            if n.startswith(self.name) or n == "bogus":  # the sweep's name="bogus" makes one
                os.unlink(os.path.join("/dev/shm", n))


def _calls(w: _World) -> dict[str, tuple[Callable[..., object], dict[str, Any]]]:
    """A valid call of every public method: the callable and its arguments."""
    return {
        "create": (
            xshm.Stream.create,
            {
                "name": w.fresh(),
                "capacity": 4,
                "max_bytes": None,
                "dtype": "float32",
                "shape": (2,),
                "backpressure": "drop_oldest",
                "max_readers": 2,
                "mode": 0o600,
                "exist_ok": False,
                "max_groups": 2,
            },
        ),
        "open": (xshm.Stream.open, {"name": w.name, "readonly": True, "timeout": 0.0}),
        "send": (w.s.send, {"data": b"x", "timeout": 0.0}),
        "try_send": (w.s.try_send, {"data": b"x"}),
        "send_many": (w.s.send_many, {"items": [b"a"], "timeout": 0.0}),
        "claim": (w.s.claim, {"nbytes": 4, "timeout": 0.0}),
        "try_claim": (w.s.try_claim, {"nbytes": 4}),
        "reader": (w.s.reader, {"start": "latest", "group": None}),
        "readers": (w.s.readers, {}),
        "groups": (w.s.groups, {}),
        "header": (w.s.header, {}),
        "recv": (w.r.recv, {"timeout": 0.0, "spin": 0.0}),
        "recv_async": (w.r.recv_async, {"timeout": 0.0}),
        "try_recv": (w.r.try_recv, {}),
        "recv_view": (w.r.recv_view, {"timeout": 0.0, "spin": 0.0}),
        "recv_many": (w.r.recv_many, {"max_n": 2, "timeout": 0.0}),
    }


def test_every_public_method_is_swept() -> None:
    stream = {
        n for n in dir(xshm.Stream) if not n.startswith("_") and callable(getattr(xshm.Stream, n))
    }
    reader = {
        n
        for n in dir(xshm.StreamReader)
        if not n.startswith("_") and callable(getattr(xshm.StreamReader, n))
    }
    covered = {"create", "open", "send", "try_send", "send_many", "claim", "try_claim", "reader"}
    covered |= {"readers", "groups", "header"}
    assert stream == covered | {"close", "unlink"}, stream ^ (covered | {"close", "unlink"})
    assert reader == {"recv", "recv_async", "recv_view", "try_recv", "recv_many", "close"}, reader


def test_sweep_every_parameter_with_bad_values(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        outcomes: dict[str, set[str]] = {}
        for method, (fn, good) in _calls(w).items():
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            assert set(good) == set(params), f"{method}: the sweep's arguments are not {params}"
            for param in params:
                for bad in BAD_VALUES:
                    args = dict(good)
                    if method == "create":
                        args["name"] = w.fresh()
                    args[param] = bad
                    where = f"{method}({param}={bad!r})"
                    w.s.send(b"one")
                    outcome = _check(where, lambda fn=fn, args=args: fn(**args), param)
                    outcomes.setdefault(f"{method}.{param}", set()).add(outcome)
        for key, seen in outcomes.items():
            assert seen - {"ok"}, f"{key} accepted every bad value"
    finally:
        w.close()


def test_sweep_arity_keywords_and_construction(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        for obj in (w.s, w.r):
            for name in [
                n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))
            ]:
                fn = getattr(obj, name)
                assert _check(f"{name}(too many)", lambda fn=fn: fn(*range(12))) == "TypeError", (
                    name
                )
                assert _check(f"{name}(bogus=1)", lambda fn=fn: fn(bogus_keyword=1)) == "TypeError"
            assert _check("__exit__()", obj.__exit__) == "TypeError"
            assert _check("__enter__(1)", lambda obj=obj: obj.__enter__(1)) == "TypeError"
        assert not w.s.closed and not w.r.closed, "no refused call closed anything"
        for cls in (xshm.Stream, xshm.StreamReader, xshm.Message):
            assert _check(f"{cls.__name__}()", cls) == "TypeError"
            with pytest.raises(TypeError, match="cannot be made directly"):
                cls()
    finally:
        w.close()


def test_sweep_every_attribute_set_and_delete(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        msg = w.r.recv(timeout=1)
        for obj in (w.s, w.r, msg):
            cls = type(obj)
            for attr in [
                n for n in dir(cls) if not n.startswith("_") and not callable(getattr(cls, n))
            ]:
                where = f"{cls.__name__}.{attr}"
                for bad in (None, -1, "x"):
                    _judge_set(where, lambda obj=obj, attr=attr, bad=bad: setattr(obj, attr, bad))
                _judge_set(where, lambda obj=obj, attr=attr: delattr(obj, attr), deleting=True)
        assert w.s.capacity == 4 and msg.data == b"one", "nothing was changed"
    finally:
        w.close()


def test_sweep_closed_handles(seg_name: str) -> None:
    w = _World(seg_name)
    try:
        w.r.close()
        w.s.close()
        for method, (fn, good) in _calls(w).items():
            if method in ("create", "open"):
                continue
            with pytest.raises(xshm.ClosedError):
                fn(**good)
        for obj, attrs in (
            (w.s, ("name", "capacity", "head", "dropped")),
            (w.r, ("lost", "lag", "cursor")),
        ):
            for attr in attrs:
                with pytest.raises(xshm.ClosedError):
                    getattr(obj, attr)
        assert w.s.closed and w.r.closed
    finally:
        w.close()


def test_frame_streams_refuse_what_does_not_fit(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, capacity=2, dtype="float32", shape=(2, 3)) as s:
        try:
            for bad, kind, words in (
                (np.zeros((3, 2), np.float32), xshm.ArgumentError, "shape (3, 2)"),
                (np.zeros((2, 3)), xshm.DtypeError, "float64"),
                (b"x" * 24, TypeError, "data must be a numpy array"),
                ([1.0] * 6, TypeError, "data must be a numpy array"),
            ):
                with pytest.raises(kind, match=words.replace("(", r"\(").replace(")", r"\)")):
                    s.send(bad)
        finally:
            s.unlink()
