"""Turns a pytest-benchmark JSON (with its raw samples) into the compact results kept under
benchmarks/results/ and a Markdown table of xshm against its peer, per group.

    python benchmarks/summarize.py RAW.json OUT.json
"""

from __future__ import annotations

import json
import platform
import sys
from collections import defaultdict
from typing import Any


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


def table(summary: dict[str, Any]) -> str:
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for r in summary["benchmarks"]:
        side = "xshm" if r["name"].endswith(("_xshm", "_xshm_text")) else "peer"
        groups[r["group"]][side] = r["median_ns"]
    lines = [
        "| operation | xshm median (ns) | peer median (ns) | xshm speed-up |",
        "|---|---:|---:|---:|",
    ]
    for g, sides in sorted(groups.items()):
        if "xshm" in sides and "peer" in sides:
            lines.append(
                f"| {g} | {sides['xshm']:.0f} | {sides['peer']:.0f} | "
                f"{sides['peer'] / sides['xshm']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> int:
    raw_path, out_path = sys.argv[1], sys.argv[2]
    with open(raw_path) as f:
        summary = summarize(json.load(f))
    with open(out_path, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
