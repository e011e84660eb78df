"""Turns a pytest-benchmark JSON (with its raw samples) into the compact results kept under
benchmarks/results/ and the Markdown tables of xshm against its peer, per group: the
micro-benchmarks (against `shared_memory` + `Lock`) and xshm-text (against pure Python). With
--docs, the tables replace what stands between their markers in that file.

    python benchmarks/summarize.py RAW.json OUT.json [--docs docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

MARKERS = {
    "micro": ("<!-- micro:begin -->", "<!-- micro:end -->"),
    "text": ("<!-- text:begin -->", "<!-- text:end -->"),
}
PEERS = {"micro": "shared_memory + Lock", "text": "pure Python"}
SUBJECT = {"micro": "xshm", "text": "xshm_text"}
LABELS = {  # group: what the row measures, as the docs name it
    "read + fields": "`read()` + fields (`touch`)",
    "read_into + fields": "`read_into(buf)` + fields",
    "publish": "`publish(values, message, counter)`",
    "view": "one element of the zero-copy view",
    "text-cut": "cut to 256 bytes on a code point (`cut_str`)",
    "text-validate": "length of the valid prefix (`valid_up_to`, invalid at 200)",
}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for b in raw["benchmarks"]:
        s = b["stats"]
        rows.append(
            {
                "group": b["group"],
                "name": b["name"],
                "median_ns": round(s["median"] * 1e9, 1),
                "iqr_ns": round(s["iqr"] * 1e9, 1),
                "rounds": s["rounds"],
            }
        )
    cpu = raw["machine_info"].get("cpu", {})
    return {
        "machine": {
            "cpu": cpu.get("brand_raw", platform.processor()),
            "cores": cpu.get("count"),
            "kernel": raw["machine_info"].get("release"),
            "python": raw["machine_info"].get("python_version"),
        },
        "datetime": raw["datetime"],
        "benchmarks": rows,
    }


def table(summary: dict[str, Any], kind: str = "micro") -> str:
    """The table of one kind: "micro" (every group but text-*) or "text"."""
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for r in summary["benchmarks"]:
        if r["group"].startswith("text-") != (kind == "text"):
            continue
        side = "xshm" if r["name"].endswith(("_xshm", "_xshm_text")) else "peer"
        groups[r["group"]][side] = r["median_ns"]
    m = summary["machine"]
    lines = [
        f"Run of {summary['datetime'][:10]} (`make bench`): {m['cpu']}, {m['cores']} cores, "
        f"Linux {m['kernel']}, CPython {m['python']}; pytest-benchmark medians.",
        "",
        f"| operation | {SUBJECT[kind]} median (ns) | {PEERS[kind]} median (ns) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for g, sides in sorted(groups.items()):
        if "xshm" in sides and "peer" in sides:
            lines.append(
                f"| {LABELS.get(g, g)} | {sides['xshm']:.0f} | {sides['peer']:.0f} | "
                f"{sides['peer'] / sides['xshm']:.2f}x |"
            )
    return "\n".join(lines)


def write_docs(summary: dict[str, Any], doc: Path) -> None:
    body = doc.read_text()
    for kind, (begin, end) in MARKERS.items():
        if begin not in body or end not in body:
            raise SystemExit(f"{doc}: the markers {begin} ... {end} are missing")
        head, _, rest = body.partition(begin)
        _, _, tail = rest.partition(end)
        body = f"{head}{begin}\n{table(summary, kind)}\n{end}{tail}"
    doc.write_text(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("raw", help="pytest-benchmark's --benchmark-json output")
    ap.add_argument("out", help="the compact summary to write (benchmarks/results/micro.json)")
    ap.add_argument("--docs", help="rewrite the tables between the markers of this Markdown file")
    args = ap.parse_args()
    with open(args.raw) as f:
        summary = summarize(json.load(f))
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(table(summary, "micro"), table(summary, "text"), sep="\n\n")
    if args.docs:
        write_docs(summary, Path(args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
