"""The benchmarks' registry and report, without measuring: every peer's package is pinned in
requirements.txt, labels are unique, and the report turns a results.json holding every row of
the registry into tables, README figures and targets that are all judged (so a renamed row
cannot silently leave a target "not measured")."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from benchmarks import peers, report
from benchmarks.questions import NAMES

HERE = Path(__file__).parent


def test_labels_are_unique_and_packages_pinned() -> None:
    labels = [p.label for p in peers.PEERS]
    assert len(labels) == len(set(labels))
    pinned = {
        line.split("==")[0]
        for line in (HERE / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert set(peers.packages()) <= pinned
    assert "matplotlib" in pinned


def test_every_question_has_a_module() -> None:
    for name in NAMES:
        assert callable(importlib.import_module(f"benchmarks.questions.{name}").run)


def _streams() -> dict[str, Any]:
    """The streams question's section, every row of its table (figures made up)."""
    from benchmarks.questions import streams

    rows = {
        label: {
            "api": api,
            "msgs_per_s": 1e6,
            "per_round": [1e6] * 5,
            "lost": 0.0,
            "rounds": 5,
        }
        for label, api in [
            (k, v[0]) for k, v in [*streams.ROWS.items(), *streams.POOL_ROWS.items()]
        ]
    }
    hop = {"p50_ns": 500.0, "p99_ns": 900.0, "p50_per_round": [500.0] * 8, "rounds": 8}
    hops = (streams.STREAM_HOP, streams.RECORD_HOP, streams.CPP_STREAM, streams.CPP_RING)
    latency = {k: hop for k in hops}
    return {"size": 64, "messages": 1000, "rows": rows, "latency": latency}


def _frames() -> dict[str, Any]:
    """The frames question's section, every row (figures made up)."""
    from benchmarks.questions import frames

    labels = (frames.RING_COPY, frames.HOT_COPY, frames.ZERO_COPY, frames.COPYING)
    return {
        "bytes": 4 << 20,
        "frames": 300,
        "rows": {
            label: {"gb_s": 30.0, "per_round": [30.0] * 5, "frames_s": 7000.0, "rounds": 5}
            for label in labels
        },
    }


def _aio() -> dict[str, Any]:
    """The asyncio question's section, every row (figures made up)."""
    from benchmarks.questions import aio

    row = {"p50_ns": 80e3, "p99_ns": 200e3, "p50_per_round": [80e3] * 8, "rounds": 8}
    return {
        "period_ms": 2.0,
        "samples": 400,
        "rows": {label: {"api": api, **row} for label, api in aio.API.items()},
    }


def _bridge() -> dict[str, Any]:
    from benchmarks.questions import bridge

    row = {"msgs_per_s": 1e5, "per_round": [1e5] * 6, "rounds": 6}
    lat = {"p50_ns": 3e5, "p99_ns": 9e5, "p50_per_round": [3e5] * 4, "rounds": 4}
    return {
        "size": 64,
        "messages": 100_000,
        "rows": {label: {"api": api, **row} for label, api in bridge.API.items()},
        "fanout": {
            "messages": 10_000,
            "rows": {
                f"{e}, {m} mirrors": {
                    "engine": e,
                    "mirrors": m,
                    "per_mirror_msgs_per_s": 1e5 / m,
                    "deliveries_per_s": 1e5,
                }
                for e in ("zenoh", "redis")
                for m in (1, 4, 16)
            },
        },
        "redis": {
            "messages": 100_000,
            "rows": {label: {"api": api, **row} for label, api in bridge.REDIS_API.items()},
        },
        "latency": {label: {"api": api, **lat} for label, api in bridge.LAT_API.items()},
    }


def _rust() -> dict[str, Any]:
    from benchmarks.questions import rust

    def hops(apis: dict[str, str]) -> dict[str, Any]:
        row = {"p50_ns": 200.0, "p99_ns": 300.0, "p50_per_round": [200.0], "x": 1.0}
        return {label: {"api": api, **row} for label, api in apis.items()}

    return {
        "rounds": 9,
        "reads_per_round": 1000,
        "hops_per_round": 1000,
        "read": {
            label: {"api": api, "ns": 30.0, "ns_per_round": [30.0], "x": 1.0}
            for label, api in rust.READ_API.items()
        },
        "hop": hops(rust.HOP_API),
        "stream_hop": hops(rust.STREAM_HOP_API),
    }


def _results() -> dict[str, Any]:
    """A results.json with every registry row, as the questions write it (figures made up)."""
    phase = {"ns": 500.0, "writer_per_s": 1e5, "ns_per_round": [500.0, 510.0, 490.0]}
    snapshot = {
        p.label: {"api": p.api, "profile": p.profile, "flat out": phase, "common rate": phase}
        for p in peers.peers("snapshot")
    }
    latency = {
        p.label: {
            "api": p.api,
            "wakeups": p.wakeups,
            "p50_ns": 1000.0,
            "p99_ns": 2000.0,
            "p999_ns": 3000.0,
            "rounds": 8,
            "p50_per_round": [1000.0] * 8,
            **({} if p.cpp else {"fast_share": 0.5}),
        }
        for p in peers.peers("latency")
    }
    bulk = {
        "bytes": 64 << 20,
        "write": {
            "rounds": 9,
            "in-process copy ms": 8.0,
            "publish(values=src) ms": 25.0,
            "empty write block ms": 70.0,
            "write block np.copyto(rec.values, src) ms": 90.0,
            "empty write block / copy": 8.7,
            "np.copyto write block / publish": 3.6,
        },
        "default record": {
            "write block ns": 2000.0,
            "publish ns": 200.0,
            "write block / publish": 10.0,
        },
        "delivery": {
            "view delivery / copy (backup=off)": 1.0,
            "read_into / copy bandwidth (backup=off)": 1.2,
        },
    }
    return {
        "machine": {
            "cpu": "test",
            "cores": 2,
            "kernel": "k",
            "python": "3",
            "numpy": "2",
            "xshm": "0",
        },
        "date": "today",
        "command": "python benchmarks/run.py",
        "seconds": 1.0,
        "notes": {},
        "snapshot": {"common rate": 1e5, "rounds": 3, "rows": snapshot},
        "latency": {"rounds": 8, "hops_per_round": 2000, "rows": latency, "ladder": {}},
        "bulk": bulk,
        "readers": {"writer": "1 kHz", "rows": {"read() + fields": {"1": 1e6}}},
        "streams": _streams(),
        "frames": _frames(),
        "aio": _aio(),
        "bridge": _bridge(),
        "rust": _rust(),
        "baseline": {"from": "earlier", "write block ns": 2000.0, "write block / publish": 10.0},
    }


def test_every_target_is_judged_from_a_full_results_json() -> None:
    res = _results()
    res["targets"] = report.targets(res)
    assert [t["target"] for t in res["targets"] if t["met"] is None] == []
    text = report.tables(res)
    for p in peers.PEERS:
        assert p.label in text
    assert "n/a" not in report.readme(res)


def test_docs_are_replaced_between_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{report.DOC_MARKERS[0]}\nold\n{report.DOC_MARKERS[1]}\nafter\n")
    res = _results()
    res["targets"] = report.targets(res)
    report.replace_between(doc, report.DOC_MARKERS, report.tables(res))
    body = doc.read_text()
    assert body.startswith("before\n") and body.endswith("after\n") and "old" not in body
    with pytest.raises(SystemExit):
        report.replace_between(doc, report.README_MARKERS, "x")


def test_no_regression_without_an_earlier_figure_says_why() -> None:
    res = _results()
    del res["baseline"]
    [row] = [t for t in report.targets(res) if "regression" in t["target"]]
    assert row["met"] is None and "--save-baseline" in row["measured"]


def test_rows_that_look_like_bugs_come_with_their_reason() -> None:
    """A spinning row at the scheduler's tick, and one-wake-up rows split between the fast and
    the slow wake-up, each get one line of reason under their table; a clean run gets none."""
    res = _results()
    res["machine"]["load average"] = [1.9, 1.5, 1.2]
    text = report.tables(res)
    assert "Why" not in text and "--quick" not in text
    rows = res["latency"]["rows"]
    rows["iceoryx2 publish-subscribe"]["p50_ns"] = 4_000_000.0
    rows["cpp-xshm-block"].update(p50_ns=22_000.0, fast_share=0.0)
    rows["py-xshm-block"].update(p50_ns=3_300.0, fast_share=1.0)
    res["quick"] = True
    text = report.tables(res)
    spin = next(ln for ln in text.splitlines() if ln.startswith("Why iceoryx2"))
    assert "time slice" in spin and "load average 1.9" in spin
    block = next(ln for ln in text.splitlines() if ln.startswith("Why rows that pay"))
    assert "cpp-xshm-block" in block and "py-xshm-block" not in block and "22 µs" in block
    assert text.startswith("(--quick: a smoke test")
