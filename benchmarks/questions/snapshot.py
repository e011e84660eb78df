"""Snapshot: what does one consistent read of the default record cost, its fields touched
(common.touch, the same for every peer), while another process publishes? Asked twice: with
every writer flat out (each row reports the rate its writer reached while the row was measured)
and with every writer paced to one common rate, so that no row is cheaper for being less
contended. Then a consistency check: how many of the checked snapshots were torn."""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.common import per_call_ns
from benchmarks.peers import Peer, peers

COMMON_RATE_CAP = 100_000.0  # publishes/s: the common rate, unless a writer is slower flat out


def _round_down(rate: float) -> float:
    """To two significant figures, downwards: 87 654 -> 87 000."""
    scale = 10 ** max(0, len(str(int(rate))) - 2)
    return float(int(rate) // scale * scale)


def _measure(p: Peer, rate: float, seconds: float, checks: int) -> dict[str, Any]:
    with p.setup(rate) as s:
        c0, t0 = s.counter(), time.perf_counter()
        ns = per_call_ns(s.read, seconds)
        c1, t1 = s.counter(), time.perf_counter()
        out: dict[str, Any] = {"ns": ns, "writer_per_s": (c1 - c0) / (t1 - t0)}
        if checks:
            out["torn"] = sum(not s.consistent() for _ in range(checks))
            out["checked"] = checks
    return out


def run(quick: bool, notes: dict[str, str], **_: Any) -> dict[str, Any]:
    seconds, rounds, checks = (0.05, 1, 2_000) if quick else (0.4, 3, 50_000)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for p in peers("snapshot"):
        why = p.missing()
        if why:
            notes[f"snapshot: {p.label}"] = why
        else:
            todo.append(p)
            rows[p.label] = {"api": p.api, "profile": p.profile, "flat out": [], "common rate": []}
    common = COMMON_RATE_CAP
    for phase in ("flat out", "common rate"):
        rate = 0.0 if phase == "flat out" else common
        for r in range(rounds):  # interleaved: one round of every row, then the next round
            for p in list(todo):
                check = checks if (phase == "flat out" and r == 0 and not p.profile) else 0
                try:
                    m = _measure(p, rate, seconds, check)
                except Exception as e:  # a peer that breaks is reported, not fatal
                    notes[f"snapshot: {p.label}"] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
                    todo.remove(p)
                    del rows[p.label]
                    continue
                if "torn" in m:
                    rows[p.label]["torn"], rows[p.label]["checked"] = m["torn"], m["checked"]
                rows[p.label][phase].append({"ns": m["ns"], "writer_per_s": m["writer_per_s"]})
        if phase == "flat out":
            flat = [
                statistics.median(x["writer_per_s"] for x in row["flat out"])
                for row in rows.values()
                if row["flat out"]
            ]
            common = _round_down(min([COMMON_RATE_CAP, *flat]))
    for row in rows.values():
        for phase in ("flat out", "common rate"):
            per_round = row.pop(phase)
            row[phase] = {
                "ns": statistics.median(x["ns"] for x in per_round),
                "writer_per_s": statistics.median(x["writer_per_s"] for x in per_round),
                "ns_per_round": [x["ns"] for x in per_round],
            }
    return {"common rate": common, "rounds": rounds, "rows": rows}
