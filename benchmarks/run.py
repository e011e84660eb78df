#!/usr/bin/env python3
"""Cross-process benchmarks of xshm against its peers, in one run, organised by question
(benchmarks/README.md says what each one answers, how, and against which peer):

    python benchmarks/run.py [--quick] [--question NAME] [--out DIR] [--docs docs/BENCHMARKS.md]

The questions live in benchmarks/questions/ (snapshot, latency, bulk, readers, ...), the peers they
compare in one registry (benchmarks/peers.py), the tables and targets in benchmarks/report.py.
Writes DIR/results.json (raw figures, machine, targets), DIR/*.png and, with --docs, the tables
and targets between the markers of that file and the figures between the markers of the
README's performance section. Nothing is installed here: a missing peer is reported ("not
installed: run make bench-peers") and its rows skipped. --quick (under a minute) is the smoke
test that `make test` runs: the same code paths, few iterations, no figures to trust.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the benchmarks package sits beside it
    sys.path.insert(0, str(ROOT))

import xshm  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from benchmarks.questions import NAMES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BASELINE = RESULTS / "baseline.json"


def build_cpp(out: Path, notes: dict[str, str]) -> Optional[Path]:
    """benchmarks/cpp/pingpong, for the C++ rows and the C++ echo; None (with a note) if it
    does not build, an error under XSHM_REQUIRE_ALL=1 (CI: nothing else builds it)."""
    exe = out / "pingpong"
    cmd = ["g++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", xshm.get_include()]
    cmd += [str(ROOT / "benchmarks" / "cpp" / "pingpong.cpp"), "-o", str(exe), "-pthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("XSHM_REQUIRE_ALL") == "1":  # CI: our own program must build
            sys.stderr.write(r.stderr)
            raise SystemExit("XSHM_REQUIRE_ALL=1 but benchmarks/cpp/pingpong did not build")
        errors = [line for line in r.stderr.splitlines() if "error" in line] or ["unknown error"]
        notes["benchmarks/cpp/pingpong"] = f"did not build: {errors[0][:200]}"
        return None
    return exe


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (under a minute)")
    ap.add_argument("--question", action="append", choices=NAMES, help="run only this question")
    ap.add_argument(
        "--out", help=f"where results go (default {RESULTS} for a full run, else build/bench)"
    )
    ap.add_argument("--docs", help="rewrite the tables between the markers of this Markdown file")
    ap.add_argument("--readme", default=str(ROOT / "README.md"), help="with --docs: its README")
    ap.add_argument("--report", metavar="RESULTS_JSON", help="no run: regenerate from this file")
    ap.add_argument(
        "--save-baseline",
        action="store_true",
        help=f"keep this run's default-record write figures in {BASELINE.name}",
    )
    args = ap.parse_args()
    questions = args.question or list(NAMES)
    partial = args.quick or args.question is not None
    if args.docs and partial and not args.report:
        ap.error("--docs takes a full run of every question (no --quick, no --question)")
    out = Path(args.out or (ROOT / "build" / "bench" if partial else RESULTS))
    out.mkdir(parents=True, exist_ok=True)

    if args.report:  # the figures of a kept run; the targets are judged again by this code
        res = json.loads(Path(args.report).read_text())
        res["targets"] = report.targets(res)
    else:
        res = measure(args.quick, questions, out)
        if BASELINE.exists() and not args.quick:
            res["baseline"] = json.loads(BASELINE.read_text())
        if args.save_baseline and "bulk" in res:
            base = {"from": f"run of {res['date']}, xshm {res['machine']['xshm']}"}
            base.update(res["bulk"]["default record"])
            BASELINE.write_text(json.dumps(base, indent=1) + "\n")
        res["targets"] = report.targets(res)
        res["plots"] = report.plots(res, out)
        (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    print(report.tables(res))
    if args.docs:
        report.write_docs(res, Path(args.docs), Path(args.readme) if args.readme else None)
    return 0


def measure(quick: bool, questions: list[str], out: Path) -> dict[str, Any]:
    notes: dict[str, str] = {}
    shm_before = set(os.listdir("/dev/shm"))
    cpp = build_cpp(out, notes) if {"latency", "rust"} & set(questions) else None
    t0 = time.time()
    res: dict[str, Any] = {
        "machine": {**machine(), "load average": [round(x, 2) for x in os.getloadavg()]},
        "date": report.today(),
        "quick": quick,
        "notes": notes,
        "command": "python benchmarks/run.py"
        + (" --quick" if quick else "")
        + "".join(f" --question {q}" for q in questions if len(questions) < len(NAMES)),
    }
    for name in questions:
        print(f"== {name}", flush=True)
        q0 = time.time()
        module = importlib.import_module(f"benchmarks.questions.{name}")
        res[name] = module.run(quick, notes, cpp=cpp)
        if res[name]:  # a question that skipped (a note says why) stays empty
            res[name]["seconds"] = round(time.time() - q0, 1)
    res["seconds"] = round(time.time() - t0, 1)
    # iceoryx2 keeps a global management file in /dev/shm after its last node is gone; remove
    # the ones this run created, so the benchmark leaves the machine as it found it.
    for f in set(os.listdir("/dev/shm")) - shm_before:
        if f.startswith("iox2_"):
            os.unlink(os.path.join("/dev/shm", f))
    if cpp is not None:
        cpp.unlink()
    return res


if __name__ == "__main__":
    sys.exit(main())
