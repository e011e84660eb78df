"""From one run's results.json to what people read: the Markdown tables and the targets (judged
by benchmarks/targets.py) between the markers of docs/BENCHMARKS.md, the figures of the README's
performance section between its markers, and the plots. Nothing here measures."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.targets import (
    QUICKSTART_HOP,
    XSHM_SNAPSHOT,
    dig,
    lat_ratio,
    lat_row,
    snap,
    snap_ratio,
    targets,
)

__all__ = ["plots", "readme", "replace_between", "tables", "targets", "today", "write_docs"]

DOC_MARKERS = ("<!-- bench:begin -->", "<!-- bench:end -->")
README_MARKERS = ("<!-- bench:readme:begin -->", "<!-- bench:readme:end -->")
SCALING_MARKERS = ("<!-- bench:scaling:begin -->", "<!-- bench:scaling:end -->")


# ---------------------------------------------------------------- tables


def _us(ns: float) -> str:
    return f"{ns / 1e3:.2f}"


def _x(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}x"


def _snapshot_table(res: dict[str, Any]) -> list[str]:
    s = res["snapshot"]
    common = s["common rate"]
    lines = [
        "### Snapshot: one consistent read of the default record, fields touched, while another "
        "process publishes",
        "",
        "Every row ends in the same `touch(counter, values, message)` (xshm._bench.touch). "
        f"Medians of {s['rounds']} interleaved rounds; x = the row's time / `{XSHM_SNAPSHOT}`'s, "
        "per round. Writer/s = the publishes its writer made while the row was measured. "
        f"Common rate: every writer paced to {common:,.0f}/s.",
        "",
        "| row | API | flat out (ns) | writer/s | x | common rate (ns) | writer/s | x | torn |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, row in s["rows"].items():
        f, c = row["flat out"], row["common rate"]
        torn = f"{row['torn']} of {row['checked']:,}" if "checked" in row else ""
        lines.append(
            f"| {label} | {row['api']} | {f['ns']:.0f} | {f['writer_per_s']:,.0f} | "
            f"{_x(snap_ratio(res, label))} | {c['ns']:.0f} | {c['writer_per_s']:,.0f} | "
            f"{_x(snap_ratio(res, label, 'common rate'))} | {torn} |"
        )
    return lines


def _latency_tables(res: dict[str, Any]) -> list[str]:
    lat = res["latency"]
    rows = lat["rows"]
    lines = [
        "### Latency: one-way, ping-pong between two processes (round trip / 2)",
        "",
        f"Per-round p50/p99/p99.9 over {lat['hops_per_round']} hops, medians of "
        f"{lat['rounds']} interleaved rounds; x = median of per-round p50 ratios. Fast = the "
        "share of hops under 10 µs (this VM wakes a sleeper in 2 to 3 µs or in 20 to 25 µs).",
    ]
    groups: dict[int, list[str]] = {}
    for label, row in rows.items():
        groups.setdefault(row["wakeups"], []).append(label)
    for wakeups in sorted(groups):
        labels = sorted(groups[wakeups], key=lambda k: rows[k]["p50_ns"])
        if wakeups == 0:
            ref = "plain shared_memory poll"
            title = "Spinning (no wake-up per hop)"
        else:
            ref = next((r for r in ("cpp-futex-floor", "multiprocessing.Pipe") if r in labels), "")
            ref = ref if wakeups == 1 else ""
            title = f"Blocking, {wakeups} wake-up{'s' if wakeups > 1 else ''} per one-way hop"
        head = f"x {ref}" if ref in rows else "x"
        lines += [
            "",
            f"#### {title}",
            "",
            f"| row | API | p50 (µs) | p99 (µs) | p99.9 (µs) | fast | {head} |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for label in labels:
            r = rows[label]
            fast = f"{r['fast_share']:.0%}" if "fast_share" in r else ""
            x = _x(lat_ratio(res, label, ref)) if ref in rows else ""
            lines.append(
                f"| {label} | {r['api']} | {_us(r['p50_ns'])} | {_us(r['p99_ns'])} | "
                f"{_us(r['p999_ns'])} | {fast} | {x} |"
            )
        lines += _latency_reasons(res, wakeups, labels)
    floor = dig(rows, "cpp-atomic-floor", "p50_ns")
    if lat.get("ladder") and floor:
        lines += [
            "",
            "### Profile of a spinning C++ hop: xshm's publish rebuilt one step at a time",
            "",
            "One-way p50 (ns) of a C++ ping-pong over two real segments, each rung adding one step "
            "of the protocol (`pingpong ladder`, benchmarks/README.md); x = times the atomic floor "
            f"({floor:.0f} ns).",
            "",
            "| rung | 1 value | x | 100 values | x |",
            "|---|---:|---:|---:|---:|",
        ]
        ladder = sorted(lat["ladder"].items(), key=lambda kv: int(kv[0].split(".")[0]))
        for rung, v in ladder:
            one, hundred = v.get("1", float("nan")), v.get("100", float("nan"))
            lines.append(f"| {rung} | {one:.0f} | {one / floor:.1f} ")
            lines[-1] += f"| {hundred:.0f} | {hundred / floor:.1f} |"
    return lines


SLOW_SPIN_NS = 100_000  # a spinning hop this slow waited for the scheduler, not for a publish


def _latency_reasons(res: dict[str, Any], wakeups: int, labels: list[str]) -> list[str]:
    """One line under a latency table when some of its rows look like bugs but are not, with
    the reason, from the run's own figures."""
    rows = res["latency"]["rows"]
    if wakeups == 0:
        slow = [k for k in labels if rows[k]["p50_ns"] > SLOW_SPIN_NS]
        if not slow:
            return []
        load = res["machine"].get("load average")
        busy = f" (load average {load[0]:.1f} as the run began)" if load else ""
        return [
            "",
            f"Why {', '.join(slow)} took milliseconds: a spinning hop that slow waited for the "
            "scheduler's time slice, its two processes sharing one CPU because something else "
            f"held the other{busy}. The machine's figure, not the library's: rerun when it is "
            "quiet.",
        ]
    if wakeups != 1:
        return []
    has = [k for k in labels if "fast_share" in rows[k]]
    fast = [k for k in has if rows[k]["fast_share"] >= 0.5]
    slow = [k for k in has if rows[k]["fast_share"] < 0.5]
    if not fast or not slow:
        return []
    slow_us = sorted(rows[k]["p50_ns"] / 1e3 for k in slow)[len(slow) // 2]
    return [
        "",
        "Why rows that pay the same one wake-up differ up to tenfold: waking a sleeper costs 2 "
        "to 3 µs when the scheduler runs both processes on one CPU (a context switch), and "
        f"more (here about {slow_us:.0f} µs) when the sleeper's CPU is idle and must itself be "
        "woken; where the scheduler placed a row's pair decides which it pays, not the row's "
        f"code (the fast column). Under half fast in this run: {', '.join(slow)}.",
    ]


def _bulk_tables(res: dict[str, Any]) -> list[str]:
    b = res["bulk"]
    mib = b["bytes"] // (1024 * 1024)
    w, d, dr = b["write"], b["delivery"], b["default record"]
    lines = [
        "",
        f"### Bulk: writing {mib} MiB (backup on), medians of {w['rounds']} interleaved rounds",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in w.items() if k != "rounds"]
    lines += [
        "",
        "### The default record's write paths (in process, uncontended)",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in dr.items()]
    if res.get("baseline"):
        base = res["baseline"]
        lines.append(f"| earlier write block ns ({base['from']}) | {base['write block ns']:.2f} |")
    lines += [
        "",
        f"### Bulk: {mib} MiB from one process to another",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in d.items()]
    return lines


def _readers_table(res: dict[str, Any]) -> list[str]:
    r = res["readers"]
    apis = list(r["rows"])
    counts = list(next(iter(r["rows"].values()), {}))
    lines = [
        "",
        f"### Readers: aggregate snapshot rate (a writer publishing at {r['writer']})",
        "",
        "| readers | " + " | ".join(f"`{a}` snapshots/s" for a in apis) + " |",
        "|---|" + "---:|" * len(apis),
    ]
    for k in counts:
        lines.append(f"| {k} | " + " | ".join(f"{r['rows'][a][k]:,.0f}" for a in apis) + " |")
    return lines


# Work-queue rows (2 writers, 2 workers) compare with xshm's group, not the one-to-one stream.
POOL_BASE = "xshm stream, group of 2 workers"
POOL_LABELS = {POOL_BASE, "faster-fifo, 2 producers 2 consumers"}


def _streams_tables(res: dict[str, Any]) -> list[str]:
    st = res["streams"]
    rows = st["rows"]
    base = rows.get("xshm stream")
    lines = [
        "",
        f"### Streams: {st['size']}-byte messages, Python → Python, every message delivered",
        "",
        "| row | API | messages/s | xshm stream / row (work queues: xshm group / row) |",
        "|---|---|---:|---:|",
    ]
    group = rows.get(POOL_BASE)
    for label, r in rows.items():
        ref = rows.get("xshm stream, batches") if "batches" in label else base
        if label in POOL_LABELS:
            ref = group
        ratio = ""
        if ref is not None and ref is not r:
            ratio = _x(statistics.median(a / b for a, b in zip(ref["per_round"], r["per_round"])))
        lines.append(f"| {label} | {r['api']} | {r['msgs_per_s']:,.0f} | {ratio} |")
    lat = st.get("latency") or {}
    if lat:
        lines += ["", "| one-way, spinning | API | p50 (µs) | p99 (µs) |", "|---|---|---:|---:|"]
        lines += [
            f"| {k} | {v.get('api', '')} | {_us(v['p50_ns'])} | {_us(v['p99_ns'])} |"
            for k, v in lat.items()
        ]
    return lines


def _frames_table(res: dict[str, Any]) -> list[str]:
    f = res["frames"]
    rows = f["rows"]
    copy = rows["in-process copy, ring of 4 frames"]
    lines = [
        "",
        f"### Frames: {f['bytes'] >> 20 or f['bytes'] / 2**20} MiB float32, one writer process to "
        "one reader process, end to end",
        "",
        "| row | API | GB/s | frames/s | / in-process copy, ring of 4 |",
        "|---|---|---:|---:|---:|",
    ]
    api = {
        "in-process copy, ring of 4 frames": "`np.copyto(dsts[k % 4], src)`, one process",
        "in-process copy, same destination": "`np.copyto(dst, src)`, one process (cache-hot)",
        "xshm claim / recv_view": "`with s.claim() as buf: np.copyto(buf, src)` / "
        "`with r.recv_view() as v:` (checks the first and last value)",
        "xshm send / recv": "`s.send(frame)` / `r.recv()` (checks the first and last value)",
    }
    for label, r in rows.items():
        ratio = ""
        if r is not copy:
            ratio = _x(statistics.median(a / b for a, b in zip(r["per_round"], copy["per_round"])))
        fps = f"{r['frames_s']:,.0f}" if r.get("frames_s") else ""
        lines.append(f"| {label} | {api.get(label, '')} | {r['gb_s']:.2f} | {fps} | {ratio} |")
    return lines


def _aio_table(res: dict[str, Any]) -> list[str]:
    a = res["aio"]
    rows = a["rows"]
    floor = rows.get("asyncio add_reader on a pipe")
    lines = [
        "",
        f"### asyncio: a coroutine woken by a publish in another process (one every "
        f"{a['period_ms']:g} ms, {a['samples']} per row and round)",
        "",
        "| row | API | p50 µs | p99 µs | / add_reader on a pipe |",
        "|---|---|---:|---:|---:|",
    ]
    return lines + _p50_rows(rows, floor)


def _rust_tables(res: dict[str, Any]) -> list[str]:
    r = res["rust"]
    lines = [
        "",
        f"### Rust: the pure-Rust crate against the C++ header ({r['rounds']} interleaved rounds)",
        "",
        f"A consistent read of the default record (100 float64 and its message), "
        f"{r['reads_per_round']:,} per round in one process:",
        "",
        "| row | API | ns per read | / C++ |",
        "|---|---|---:|---:|",
    ]
    for label, row in r["read"].items():
        lines.append(f"| {label} | {row['api']} | {row['ns']:.1f} | {_x(row['x'])} |")
    tables = [
        ("hop", "over two default records (round trip / 2)", "C++ ↔ C++"),
        (
            "stream_hop",
            "of an 8-byte message over two streams (capacity 64, block; round trip / 2)",
            "C++ ↔ C++ stream",
        ),
    ]
    for key, what, base in tables:
        if not r.get(key):
            continue
        lines += [
            "",
            f"The spinning one-way hop {what}, {r['hops_per_round']:,} hops per round:",
            "",
            f"| pair | API | p50 ns | p99 ns | p50 / {base} |",
            "|---|---|---:|---:|---:|",
        ]
        for label, row in r[key].items():
            lines.append(
                f"| {label} | {row['api']} | {row['p50_ns']:.0f} | {row['p99_ns']:.0f} "
                f"| {_x(row['x'])} |"
            )
    return lines


def _p50_rows(rows: dict[str, Any], base: Optional[dict[str, Any]]) -> list[str]:
    """Table rows of label, API, p50, p99 and the median per-round p50 ratio to `base`."""
    lines = []
    for label, r in rows.items():
        ratio = ""
        if base is not None and r is not base:
            pairs = zip(r["p50_per_round"], base["p50_per_round"])
            ratio = _x(statistics.median(x / y for x, y in pairs))
        lines.append(
            f"| {label} | {r['api']} | {_us(r['p50_ns'])} | {_us(r['p99_ns'])} | {ratio} |"
        )
    return lines


def _rate_rows(rows: dict[str, Any], raw: Optional[dict[str, Any]]) -> list[str]:
    """Throughput rows, each with its median per-round ratio to the ``raw`` row."""
    lines = []
    for label, r in rows.items():
        ratio = ""
        if raw is not None and r is not raw:
            ratio = _x(statistics.median(a / b for a, b in zip(r["per_round"], raw["per_round"])))
        lines.append(f"| {label} | {r['api']} | {r['msgs_per_s']:,.0f} | {ratio} |")
    return lines


def _bridge_table(res: dict[str, Any]) -> list[str]:
    br = res["bridge"]
    rows = br["rows"]
    raw = rows.get("raw Zenoh publish-subscribe")
    lines = [
        "",
        f"### Beyond one machine: {br['size']}-byte messages over Zenoh, two processes, "
        f"loopback TCP ({br['messages']:,} per row and round)",
        "",
        "| row | API | messages/s | / raw Zenoh |",
        "|---|---|---:|---:|",
    ]
    lines += _rate_rows(rows, raw)
    redis = (br.get("redis") or {}).get("rows") or {}
    raw_redis = redis.get("raw redis-py pipelined XADD/XREAD")
    if redis:
        lines += [
            "",
            f"Over Redis Streams (a `redis-server` on loopback, {br['redis']['messages']:,} "
            "messages per row and round):",
            "",
            "| row | API | messages/s | / raw redis-py |",
            "|---|---|---:|---:|",
        ]
        lines += _rate_rows(redis, raw_redis)
    if br.get("fanout"):
        lines += ["", *fanout_table(res)]
    lat = br.get("latency") or {}
    base = lat.get("raw Zenoh put → subscriber")
    if lat:
        lines += [
            "",
            "| a record, one update every 2 ms | API | p50 (µs) | p99 (µs) | / raw Zenoh |",
            "|---|---|---:|---:|---:|",
        ]
        lines += _p50_rows(lat, base)
    return lines


def fanout_table(res: dict[str, Any]) -> list[str]:
    """One export to 1, 4 and 16 mirrors (docs/SCALING.md carries the same table)."""
    fan = (res.get("bridge") or {}).get("fanout") or {}
    if not fan.get("rows"):
        return []
    lines = [
        f'One export of a "block" stream fanned out to mirrors, each a process of its own, '
        f"over loopback ({fan['messages']:,} 64-byte messages, one round):",
        "",
        "| engine, mirrors | per mirror (messages/s) | all mirrors (deliveries/s) | "
        "per mirror / 1 mirror |",
        "|---|---:|---:|---:|",
    ]
    one = {r["engine"]: r for r in fan["rows"].values() if r["mirrors"] == 1}
    for label, r in fan["rows"].items():
        base = one.get(r["engine"])
        ratio = _x(r["per_mirror_msgs_per_s"] / base["per_mirror_msgs_per_s"]) if base else ""
        lines.append(
            f"| {label} | {r['per_mirror_msgs_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} "
            f"| {ratio} |"
        )
    return lines


def _targets_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Targets, judged on this run",
        "",
        "| issue | level | target | measured | met? |",
        "|---|---|---|---|---|",
    ]
    for t in res["targets"]:
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['issue']} | {t['level']} | {t['target']} | {t['measured']} | {met} |")
    return lines


def tables(res: dict[str, Any]) -> str:
    lines: list[str] = []
    if res.get("quick"):
        lines += [
            "(--quick: a smoke test of every code path, a few hundred samples per row; its "
            "figures are indicative only: make benchmarks measures.)",
            "",
        ]
    if "snapshot" in res:
        lines += _snapshot_table(res)
    if "latency" in res:
        lines += ["", *_latency_tables(res)]
    if "bulk" in res:
        lines += _bulk_tables(res)
    if "readers" in res:
        lines += _readers_table(res)
    if "streams" in res:
        lines += _streams_tables(res)
    if "frames" in res:
        lines += _frames_table(res)
    if "aio" in res:
        lines += _aio_table(res)
    if res.get("bridge"):
        lines += _bridge_table(res)
    if res.get("rust"):
        lines += _rust_tables(res)
    if res.get("targets"):
        lines += _targets_table(res)
    if res["notes"]:
        lines += ["", "### Not measured in this run", ""]
        lines += [f"- {k}: {v}" for k, v in res["notes"].items()]
    return "\n".join(lines).strip("\n")


def stamp(res: dict[str, Any]) -> str:
    m = res["machine"]
    return (
        f"Run of {res['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, CPython "
        f"{m['python']}, numpy {m['numpy']}, xshm {m['xshm']}; `{res['command']}` took "
        f"{res['seconds']} s."
    )


def readme(res: dict[str, Any]) -> str:
    """The figures of the README's performance section, from the same run."""

    def f(v: Optional[float], fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    def lat_us(label: str) -> str:
        row = lat_row(res, label)
        return f(None if row is None else row["p50_ns"] / 1e3, ".2f")

    xs, xi = snap(res, XSHM_SNAPSHOT), snap(res, "xshm read_into() + fields")
    lock, bb = snap_ratio(res, "shared_memory + Lock"), snap_ratio(res, "iceoryx2 blackboard")
    quick_vs_poll = lat_ratio(res, QUICKSTART_HOP, "plain shared_memory poll")
    quick_vs_iox = lat_ratio(res, QUICKSTART_HOP, "iceoryx2 publish-subscribe")
    block = lat_row(res, "py-xshm-block")
    w = dig(res, "bulk", "write") or {}
    judged = [t for t in res.get("targets", []) if t["met"] is not None]
    st = dig(res, "streams", "rows") or {}

    def rate(label: str) -> Optional[float]:
        row = st.get(label)
        return None if row is None else row["msgs_per_s"]

    def per_round(rows: dict[str, Any], a: str, b: str) -> Optional[float]:
        if a not in rows or b not in rows:
            return None
        return statistics.median(x / y for x, y in zip(rows[a]["per_round"], rows[b]["per_round"]))

    fr = dig(res, "frames", "rows") or {}
    ring_copy = "in-process copy, ring of 4 frames"
    zero = fr.get("xshm claim / recv_view")
    by_issue = sorted({t["issue"] for t in judged})
    return "\n".join(
        [
            f"Measured side by side with what users would otherwise pick, in one run ({stamp(res)} "
            "Full tables, targets, plots and method: [docs/BENCHMARKS.md](docs/BENCHMARKS.md); "
            "these figures are generated from that run's `results.json`.)",
            "",
            f"- A consistent snapshot of the default record with its fields touched (`read()`, "
            f"then `.counter`, `.values`, `.message`) costs {f(xs and xs['ns'], '.0f')} ns while "
            f"another process publishes flat out: {f(lock, '.1f')}x less than "
            f"`multiprocessing.shared_memory` + `Lock` and {f(bb, '.1f')}x less than iceoryx2's "
            f"blackboard doing the same. Into a caller's array (`read_into()` + fields): "
            f"{f(xi and xi['ns'], '.0f')} ns.",
            f"- One-way latency Python→Python, spinning: {lat_us(QUICKSTART_HOP)} µs with the "
            f"quickstart's `read().counter` ({f(quick_vs_poll, '.2f')}x a plain Python "
            f"shared-memory poll, {f(quick_vs_iox and 1 / quick_vs_iox, '.0f')} times less than "
            f"iceoryx2's publish-subscribe), {lat_us('py-xshm-spin read_into')} µs with "
            f"`read_into()`; blocking {lat_us('py-xshm-block')} µs "
            f"({f(block and block.get('fast_share', 0) * 100, '.0f')}% of hops woken in under "
            f"10 µs); C++→C++ spinning {lat_us('cpp-xshm-spin-1-value')} µs for a one-value "
            "record.",
            f"- {(dig(res, 'bulk', 'bytes') or 0) >> 20} MiB, backup on: `publish(values=src)` "
            f"{f(w.get('publish(values=src) ms'), '.1f')} ms, one in-process copy "
            f"{f(w.get('in-process copy ms'), '.1f')} ms, an empty "
            f"`with m.write()` block {f(w.get('empty write block ms'), '.1f')} ms, a block doing "
            f"`np.copyto(rec.values, src)` "
            f"{f(w.get('write block np.copyto(rec.values, src) ms'), '.1f')} ms.",
            f"- Streams, 64-byte messages one at a time, Python→Python, every message delivered: "
            f"{f(rate('xshm stream'), ',.0f')} messages/s, "
            f"{f(per_round(st, 'xshm stream', 'faster-fifo'), '.1f')}x faster-fifo, "
            f"{f(per_round(st, 'xshm stream', 'multiprocessing.Queue'), '.1f')}x "
            f"`multiprocessing.Queue`, "
            f"{f(per_round(st, 'xshm stream', 'iceoryx2 publish-subscribe, lossless'), '.1f')}x "
            f"iceoryx2's lossless publish-subscribe. A work queue (2 writer processes, a group of "
            f"2 workers): {f(rate('xshm stream, group of 2 workers'), ',.0f')} messages/s, "
            f"{f(per_round(st, POOL_BASE, 'faster-fifo, 2 producers 2 consumers'), '.1f')}x "
            f"faster-fifo with 2 producers and 2 consumers.",
            f"- {(dig(res, 'frames', 'bytes') or 0) >> 20} MiB frames, one process to another "
            f"with `claim` and `recv_view`: {f(zero and zero['gb_s'], '.1f')} GB/s "
            f"({f(zero and zero['frames_s'], ',.0f')} frames/s), "
            f"{f(per_round(fr, 'xshm claim / recv_view', ring_copy), '.2f')}x "
            f"one in-process copy of each frame.",
            "- Targets judged in this run: "
            + "; ".join(
                f"issue {i}: {sum(t['met'] for t in judged if t['issue'] == i)} of "
                f"{sum(1 for t in judged if t['issue'] == i)} met"
                for i in by_issue
            )
            + " (misses named in docs/BENCHMARKS.md).",
        ]
    )


def replace_between(path: Path, markers: tuple[str, str], text: str) -> None:
    body = path.read_text()
    begin, end = markers
    if begin not in body or end not in body:
        raise SystemExit(f"{path}: the markers {begin} ... {end} are missing")
    head, _, rest = body.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def write_docs(res: dict[str, Any], doc: Path, readme_path: Optional[Path]) -> None:
    replace_between(doc, DOC_MARKERS, f"{stamp(res)}\n\n{tables(res)}")
    scaling = doc.parent / "SCALING.md"
    if scaling.exists() and fanout_table(res):
        replace_between(
            scaling, SCALING_MARKERS, f"{stamp(res)}\n\n" + "\n".join(fanout_table(res))
        )
    if readme_path is not None:
        replace_between(readme_path, README_MARKERS, readme(res))


def plots(res: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        res["notes"]["matplotlib"] = "plots skipped: not installed (run make bench-peers)"
        return []
    made = []
    if "latency" in res:
        lat = sorted(res["latency"]["rows"].items(), key=lambda kv: kv[1]["p50_ns"])
        fig, ax = plt.subplots(figsize=(8, 6), dpi=90)
        names = [k for k, _ in lat]
        colors = [
            "tab:blue" if "xshm" in k else "tab:gray" if "floor" in k else "tab:orange"
            for k in names
        ]
        ax.barh(names, [v["p99_ns"] / 1e3 for _, v in lat], color="none", edgecolor=colors,
                label="p99")  # fmt: skip
        ax.barh(names, [v["p50_ns"] / 1e3 for _, v in lat], color=colors, label="p50")
        ax.set_xscale("log")
        ax.set_xlabel("one-way latency (µs, log scale)")
        ax.set_title("One-way latency: xshm (blue), peers (orange), floors (gray)", fontsize=10)
        ax.invert_yaxis()
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out / "latency.png")
        plt.close(fig)
        made.append("latency.png")
    if "snapshot" in res:
        rows = res["snapshot"]["rows"]
        names = list(rows)
        fig, ax = plt.subplots(figsize=(8, 3.2), dpi=90)
        ys = range(len(names))
        flat = [rows[k]["flat out"]["ns"] for k in names]
        common = [rows[k]["common rate"]["ns"] for k in names]
        ax.barh([y - 0.2 for y in ys], flat, height=0.4, label="writer flat out")
        ax.barh([y + 0.2 for y in ys], common, height=0.4,
                label=f"writer at {res['snapshot']['common rate']:,.0f}/s")  # fmt: skip
        ax.set_yticks(list(ys), names)
        ax.set_xlabel("ns per snapshot, fields touched")
        ax.set_title("Snapshot cost, another process publishing", fontsize=10)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "snapshot.png")
        plt.close(fig)
        made.append("snapshot.png")
    return made


def today() -> str:
    return time.strftime("%Y-%m-%d")
