"""A latency round whose echo never answers ends with an error instead of spinning forever (the
watchdog of questions/latency.py), and a real Ctrl-C still gets through."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.peers import Peer
from benchmarks.questions import latency


class _NoEcho:
    """An echo process that never answers: start/join/is_alive/kill do nothing."""

    def start(self) -> None: ...
    def join(self, timeout: float) -> None: ...
    def is_alive(self) -> bool:
        return False

    def kill(self) -> None: ...


def _spin_forever() -> None:
    while True:
        pass


def test_a_round_without_an_answer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency, "ROUND_TIMEOUT", 0.2)
    cleaned: list[bool] = []

    def setup(total: int, cpp: Any) -> Any:
        return _NoEcho(), _spin_forever, [lambda: cleaned.append(True)], None

    peer = Peer("no echo", "spins on nothing", "latency", setup)
    with pytest.raises(TimeoutError, match="the echo stopped"):
        latency._one_round(peer, 10, 0, None, 0)
    assert cleaned == [True]


def test_a_real_interrupt_is_not_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    def setup(total: int, cpp: Any) -> Any:
        return _NoEcho(), interrupted, [], None

    with pytest.raises(KeyboardInterrupt):
        latency._one_round(Peer("ctrl-c", "", "latency", setup), 10, 0, None, 0)
