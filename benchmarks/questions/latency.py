"""Latency: how long from the start of a publish in one process until the reader in another holds
the record? A ping-pong between two processes, one-way = round trip / 2, for every latency peer
of the registry. Rounds are interleaved (round r runs one round of every row, in an order
rotated by r), so a change in the machine's state (this VM wakes an idle vCPU in ~2 us or in
~25 us depending on what ran just before) hits every row alike; each row keeps its per-round
figures, and ratios are medians of per-round ratios. Also the profile of a spinning C++ hop
(`pingpong ladder`: xshm's publish rebuilt one protocol step at a time)."""

from __future__ import annotations

import _thread
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

from xshm._bench import _echo_running

from benchmarks.common import CPUS, ONE_CPU_NOTE, percentiles, pooled
from benchmarks.peers import Peer, peers

ROUND_TIMEOUT = 120.0  # seconds: far above any round, even on a loaded machine


def _cpp_rows(cpp: Path, args: list[str]) -> list[dict[str, Any]]:
    r = subprocess.run([str(cpp), *args], capture_output=True, text=True, check=True, timeout=300)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def _one_round(p: Peer, n: int, warmup: int, cpp: Optional[Path], cpp_n: int) -> dict[str, float]:
    if p.cpp:
        assert cpp is not None
        row = _cpp_rows(cpp, [*p.cpp, "1", str(cpp_n)])[-1]
        keys = ("p50_ns", "p99_ns", "p999_ns", "fast_share")  # fast_share if pingpong gives it
        return {k: float(row[k]) for k in keys if k in row}
    assert p.setup is not None
    proc, hop, cleanup, ready = p.setup(n + warmup, cpp)
    one_way = []
    # A spinning hop polls with no deadline of its own (a check per poll would be part of what
    # it measures): the watchdog interrupts the round instead if the echo never answers.
    watchdog = threading.Timer(ROUND_TIMEOUT, _thread.interrupt_main)
    with _echo_running(proc, cleanup, join_timeout=60):
        if ready is not None:
            ready.wait(30)
            time.sleep(0.5)  # let the endpoints connect
        watchdog.start()
        try:
            for k in range(n + warmup):
                t0 = time.perf_counter_ns()
                hop()
                if k >= warmup:
                    one_way.append((time.perf_counter_ns() - t0) / 2)
        except KeyboardInterrupt:
            if watchdog.is_alive():  # a real Ctrl-C
                raise
            raise TimeoutError(f"a round took over {ROUND_TIMEOUT} s: the echo stopped") from None
        finally:
            watchdog.cancel()
    return percentiles(one_way)


def run(quick: bool, notes: dict[str, str], cpp: Optional[Path] = None, **_: Any) -> dict[str, Any]:
    rounds, n, warmup = (2, 150, 20) if quick else (8, 2000, 100)  # warmup: hops dropped per round
    cpp_n = 2000 if quick else 20_000
    spinning = CPUS >= 2
    todo = []
    for p in peers("latency"):
        why = p.missing()
        if why is None and p.spinning and not spinning:
            why = ONE_CPU_NOTE
        if why is None and (p.cpp or not p.python_echo) and cpp is None:
            why = "skipped: benchmarks/cpp/pingpong did not build (see the note on it)"
        if why:
            notes[f"latency: {p.label}"] = why
        else:
            todo.append(p)
    if not spinning:
        notes["latency: the C++ ladder"] = ONE_CPU_NOTE
    per_round: dict[str, list[dict[str, float]]] = {p.label: [] for p in todo}
    ladder_rounds: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        order = todo[r % len(todo) :] + todo[: r % len(todo)] if todo else []
        for p in order:
            try:
                per_round[p.label].append(_one_round(p, n, warmup, cpp, cpp_n))
            except Exception as e:  # a peer that breaks is reported, not fatal
                notes[f"latency: {p.label}"] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
                todo.remove(p)
                del per_round[p.label]
        if spinning and cpp is not None:
            try:
                for count in ("1", "100"):
                    for row in _cpp_rows(cpp, ["ladder", count, "4", str(cpp_n // 8)]):
                        _, _, c, rung = row["case"].split(" ", 1)[0].split("-")
                        step = row["case"].split(" ", 1)[1]
                        ladder_rounds.setdefault(f"{rung}. {step}", {}).setdefault(c, [])
                        ladder_rounds[f"{rung}. {step}"][c].append(row["p50_ns"])
            except Exception as e:
                notes["latency: the C++ ladder"] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    by_label = {p.label: p for p in todo}
    rows = {}
    for label, rs in per_round.items():
        p = by_label[label]
        rows[label] = {
            "api": p.api,
            "wakeups": p.wakeups,
            **pooled(rs),
            "p50_per_round": [x["p50_ns"] for x in rs],
        }
    ladder = {
        rung: {c: statistics.median(v) for c, v in counts.items()}
        for rung, counts in ladder_rounds.items()
    }
    return {"rounds": rounds, "hops_per_round": n, "rows": rows, "ladder": ladder}
