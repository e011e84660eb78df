"""Rust: is the pure-Rust crate (rust/xshm) as fast as the C++ header it implements a second
time? (issue 18) Two measurements, each a program per language doing the same work:

- a consistent read of the default record (100 float64 and a message) with `read_into` into
  buffers kept by the caller, N per round in one process: ns per read (C++: `pingpong read`,
  benchmarks/cpp/pingpong.cpp; Rust: `bench read`, rust/xshm/examples/bench.rs);
- the spinning one-way hop over two default records (publish the values; the echo waits,
  spinning, reads them with `read_into` and publishes them back; one-way = round trip / 2), for
  every pair: C++ ↔ C++ (`pingpong xshm spin`), Rust ↔ Rust, and the mixed pairs, a Rust
  initiator with the C++ echo and a C++ initiator with the Rust echo;
- the spinning one-way hop of an 8-byte message over two streams (capacity 64, block: `send`;
  the echo's spinning `recv_into`, then `send` back), C++ ↔ C++ (`stream_pingpong stream`,
  benchmarks/cpp/stream_pingpong.cpp) against Rust ↔ Rust (`bench stream`).

Rounds are interleaved (round r runs every row once, in an order rotated by r); ratios are
medians of per-round ratios to the C++ row."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import CPUS, ONE_CPU_NOTE

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300

CPP_READ = "C++ header read_into"
RUST_READ = "Rust crate read_into"
CPP_HOP = "C++ ↔ C++"
RUST_HOP = "Rust ↔ Rust"
RUST_CPP_HOP = "Rust → C++ echo"
CPP_RUST_HOP = "C++ → Rust echo"
CPP_STREAM_HOP = "C++ ↔ C++ stream"
RUST_STREAM_HOP = "Rust ↔ Rust stream"

READ_API = {
    CPP_READ: "`m.read_into(buf, bytes, &message)` (values and message)",
    RUST_READ: "`m.read_into(Some(&mut buf), Some(&mut message))` (values and message)",
}
HOP_API = {
    CPP_HOP: "C++ `publish(values)`; echo `wait(seq, spin)`, `read_into`, `publish`",
    RUST_HOP: "Rust `publish(&Publish{values})`; echo `wait_for(seq, None, spin)`, `read_into`",
    RUST_CPP_HOP: "Rust initiator, C++ echo (each hop one way in each language)",
    CPP_RUST_HOP: "C++ initiator, Rust echo",
}
STREAM_HOP_API = {
    CPP_STREAM_HOP: "C++ `Stream::send`; echo `StreamReader::recv_into(buf, n, timeout, spin)`",
    RUST_STREAM_HOP: "Rust `Stream::send`; echo `StreamReader::recv_into` (`set_spin`), `send`",
}


def build_rust(notes: dict[str, str]) -> Optional[Path]:
    """rust/xshm/examples/bench, built with cargo (release); None with a note if it does not
    build, an error under XSHM_REQUIRE_ALL=1."""
    target = ROOT / "build" / "bench-rust"
    r = subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "xshm", "--example", "bench"],
        cwd=ROOT / "rust",
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        if os.environ.get("XSHM_REQUIRE_ALL") == "1":
            sys.stderr.write(r.stderr)
            raise SystemExit("XSHM_REQUIRE_ALL=1 but rust/xshm/examples/bench did not build")
        notes["rust/xshm/examples/bench"] = f"did not build: {r.stderr.strip()[:200]}"
        return None
    return target / "release" / "examples" / "bench"


def _build_stream_pingpong(notes: dict[str, str]) -> Optional[Path]:
    """benchmarks/cpp/stream_pingpong (the streams question's C++ program), for the C++ stream
    hop; None with a note if it does not build."""
    from benchmarks.questions.streams import _build_cpp

    out = ROOT / "build" / "bench-rust"
    out.mkdir(parents=True, exist_ok=True)
    return _build_cpp(out, notes)


def _rows(cmd: list[str]) -> list[dict[str, Any]]:
    """The JSON lines a benchmark program prints. It runs in a session of its own: one that
    overruns TIMEOUT is killed with its echo child (which holds the output pipe open)."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as p:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, cmd, out, err)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run(quick: bool, notes: dict[str, str], cpp: Optional[Path] = None, **_: Any) -> dict[str, Any]:
    if cpp is None:
        notes["rust"] = "skipped: benchmarks/cpp/pingpong did not build (see the note on it)"
        return {}
    exe = build_rust(notes)
    if exe is None:
        return {}
    rounds = 3 if quick else 9
    reads = 20_000 if quick else 1_000_000
    hops = 2_000 if quick else 50_000
    read_cmd = {
        CPP_READ: [str(cpp), "read", "1", str(reads)],
        RUST_READ: [str(exe), "read", "1", str(reads)],
    }
    stream_pingpong = _build_stream_pingpong(notes)
    hop_cmd = {
        CPP_HOP: [str(cpp), "xshm", "spin", "1", str(hops)],
        RUST_HOP: [str(exe), "pingpong", "spin", "1", str(hops), str(exe)],
        RUST_CPP_HOP: [str(exe), "pingpong", "spin", "1", str(hops), str(cpp)],
        CPP_RUST_HOP: [str(cpp), "xshm-peer", "spin", "1", str(hops), str(exe)],
    }
    if stream_pingpong is not None:
        hop_cmd[CPP_STREAM_HOP] = [str(stream_pingpong), "stream", "1", str(hops), "1000"]
        hop_cmd[RUST_STREAM_HOP] = [str(exe), "stream", "1", str(hops), "1000"]
    spinning = CPUS >= 2
    if not spinning:
        notes["rust hops"] = ONE_CPU_NOTE
    read_ns: dict[str, list[float]] = {k: [] for k in read_cmd}
    hop_p50: dict[str, list[float]] = {k: [] for k in hop_cmd}
    hop_p99: dict[str, list[float]] = {k: [] for k in hop_cmd}
    for r in range(rounds):
        labels = list(read_cmd)
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            read_ns[label].append(float(_rows(read_cmd[label])[-1]["ns_per_read"]))
        if not spinning:
            continue
        labels = list(hop_cmd)
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            row = _rows(hop_cmd[label])[-1]
            hop_p50[label].append(float(row["p50_ns"]))
            hop_p99[label].append(float(row["p99_ns"]))

    def ratio(a: list[float], b: list[float]) -> Optional[float]:
        return statistics.median(x / y for x, y in zip(a, b)) if a and b else None

    out: dict[str, Any] = {
        "rounds": rounds,
        "reads_per_round": reads,
        "hops_per_round": hops,
        "read": {
            label: {
                "api": READ_API[label],
                "ns": statistics.median(v),
                "ns_per_round": v,
                "x": ratio(v, read_ns[CPP_READ]),
            }
            for label, v in read_ns.items()
        },
        "hop": {},
    }
    if spinning:

        def hops(api: dict[str, str], base: str) -> dict[str, Any]:
            """The rows of `api`, each with its median per-round p50 ratio to `base`."""
            return {
                label: {
                    "api": api[label],
                    "p50_ns": statistics.median(hop_p50[label]),
                    "p99_ns": statistics.median(hop_p99[label]),
                    "p50_per_round": hop_p50[label],
                    "x": ratio(hop_p50[label], hop_p50[base]),
                }
                for label in hop_cmd
                if label in api
            }

        out["hop"] = hops(HOP_API, CPP_HOP)
        out["stream_hop"] = hops(STREAM_HOP_API, CPP_STREAM_HOP)
    return out
