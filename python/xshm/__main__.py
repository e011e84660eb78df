"""The ``xshm`` command (also ``python -m xshm``)."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, get_cmake_dir, get_include


def _demo(args: argparse.Namespace) -> int:
    from . import _demo

    print(
        f"xshm demo: 1 producer, {args.consumers} Python consumers"
        " (+ the C++ consumer when built), "
        f"{args.seconds:g} s at {args.rate:g} Hz ...",
        flush=True,
    )
    fig = _demo.run(seconds=args.seconds, consumers=args.consumers, rate=args.rate)
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        print(f"published {fig['published']} records to {fig['segment']}")
        for c in fig["consumers"]:
            print(
                f"  {c['consumer']:<16} updates {c['updates']:>6}   "
                f"latency p50 {c['latency_us_p50']:>7.1f} us   p99 {c['latency_us_p99']:>7.1f} us"
                f"   torn {c['torn']}"
            )
        if not fig["cpp_consumer"]:
            print("  (C++ consumer not built: cmake -S . -B build/cpp && cmake --build build/cpp)")
        print(f"torn snapshots: {fig['torn']}")
    return 0 if fig["torn"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xshm", description="Shared-memory records for Python and C++."
    )
    parser.add_argument("--version", action="version", version=f"xshm {__version__}")
    parser.add_argument("--include", action="store_true", help="print the C++ include directory")
    parser.add_argument(
        "--cmake-dir", action="store_true", help="print the CMake package directory"
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo",
        help="run a live producer/consumers demo and print what it measured",
        epilog="example: xshm demo --seconds 3 --consumers 2",
    )
    demo.add_argument("--seconds", type=float, default=3.0)
    demo.add_argument("--consumers", type=int, default=2)
    demo.add_argument("--rate", type=float, default=1000.0, help="publishes per second")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    if args.include:
        print(get_include())
        return 0
    if args.cmake_dir:
        print(get_cmake_dir())
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
