"""The questions the cross-process benchmarks answer, one module each (benchmarks/README.md says
what each asks, how it measures and against which peer). Each has `run(quick, notes, **env)`
returning the raw figures that results.json keeps and report.py turns into tables and targets."""

from __future__ import annotations

NAMES = ("snapshot", "latency", "bulk", "readers", "streams", "frames", "aio", "bridge", "rust")
