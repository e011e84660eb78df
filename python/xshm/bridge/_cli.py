"""``xshm bridge export`` and ``xshm bridge mirror``: the bridge from a shell, until Ctrl-C or
SIGTERM (or ``--seconds``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["add_parser"]

EXAMPLE = """examples:
  xshm bridge export sensors events                      # listens on tcp/127.0.0.1:7447
  xshm bridge mirror xshm/HOST/sensors --into sensors    # on the same machine, or with
  xshm bridge mirror xshm/HOST/sensors --into sensors --connect tcp/HOST:7447
  xshm bridge export events --engine redis --url redis://:PASSWORD@HOST:6379/0
  xshm bridge mirror xshm/HOST/events --into events --engine redis --url rediss://HOST:6380/0
"""


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = sub.add_parser(
        "bridge",
        help="mirror records and streams to other machines over Zenoh or Redis",
        description="Publish local segments over Zenoh or Redis Streams (export), or follow "
        "one into a local segment (mirror). Runs until Ctrl-C or SIGTERM.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p)
    bsub = p.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)

    def engine_options(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument(
            "--engine", choices=["zenoh", "redis"], default="zenoh",
            help="the engine (default zenoh)",
        )  # fmt: skip
        sp.add_argument(
            "--url", metavar="URL",
            help="redis: the server (default redis://127.0.0.1:6379/0; AUTH, ACL users and "
            "rediss:// in the URL)",
        )  # fmt: skip
        sp.add_argument(
            "--redis-cluster", action="store_true",
            help="redis: --url names one node of a Redis Cluster",
        )  # fmt: skip
        sp.add_argument("--listen", action="append", metavar="ENDPOINT", help="zenoh endpoint")
        sp.add_argument("--connect", action="append", metavar="ENDPOINT", help="zenoh endpoint")
        sp.add_argument("--zenoh-config", metavar="FILE", help="a Zenoh JSON5 config (TLS, ...)")
        sp.add_argument(
            "--zenoh-mode", choices=["peer", "client"], default=None,
            help="zenoh mode: peer (default) or client (through routers only)",
        )  # fmt: skip
        sp.add_argument("--seconds", type=float, default=0.0, help="stop after N s (0: never)")
        sp.add_argument("--no-status", action="store_true", help="no status record")

    sp = bsub.add_parser(
        "export",
        help="publish records and streams under keys",
        description="Publish each named record's updates and each stream's messages.",
    )
    engine_options(sp)
    sp.add_argument("names", nargs="+", metavar="NAME")
    sp.add_argument("--key", help="the key (one NAME only); default xshm/<host>/<NAME>")
    sp.add_argument("--prefix", help="keys <PREFIX>/<NAME> (default xshm/<host>)")
    sp.add_argument(
        "--max-entries", type=int, default=None,
        help="redis: the most entries kept per stream (default 100000)",
    )  # fmt: skip
    sp.add_argument(
        "--from", dest="start", choices=["oldest", "latest"], default="oldest",
        help="where a stream's export starts: the oldest message its ring holds (default; a "
        "restarted export resends, the mirror skips what it has) or the next one",
    )  # fmt: skip
    sp.set_defaults(func=cmd_export)

    sp = bsub.add_parser(
        "mirror",
        help="follow a key into a local segment",
        description="Create (0600) or attach the local segment NAME and keep it following KEY.",
    )
    engine_options(sp)
    sp.add_argument("key", metavar="KEY")
    sp.add_argument("--into", required=True, metavar="NAME", help="the local segment")
    sp.add_argument(
        "--allow-layout-change", action="store_true",
        help="recreate the local segment when the remote layout changes (else: stop, error)",
    )  # fmt: skip
    sp.add_argument(
        "--max-bytes", type=int, default=None, help="the most a remote layout may reserve"
    )
    sp.add_argument(
        "--group", default=None,
        help="redis: the mirror's consumer group (default xshm-mirror/<host>/<NAME>)",
    )  # fmt: skip
    sp.set_defaults(func=cmd_mirror)


def _run(bridge: Any, seconds: float, describe: str) -> int:
    """Run until a signal, ``seconds``, or the bridge's own failure."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(describe, flush=True)
    deadline = time.monotonic() + seconds if seconds > 0 else None
    try:
        while not stop.wait(0.2):
            if bridge.error is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    # A second Ctrl-C while closing must not leave threads running and status records behind.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        bridge.close()
    except Exception as e:
        print(f"xshm: error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous_int)
    return 0


def _logging() -> None:
    logging.basicConfig(format="xshm bridge: %(message)s", level=logging.INFO, stream=sys.stderr)


def _redis(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """The Redis arguments: ``url`` and ``more``, or with --redis-cluster one RedisOptions."""
    if not args.redis_cluster:
        return {"url": args.url, **more}
    if args.engine != "redis":
        raise SystemExit("xshm: error: --redis-cluster goes with --engine redis")
    from ._redis import DEFAULT_URL, RedisOptions

    given = {k: v for k, v in more.items() if v is not None}
    return {"options": RedisOptions(url=args.url or DEFAULT_URL, cluster=True, **given)}


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    _logging()
    ex = export(
        args.names,
        key=args.key,
        prefix=args.prefix,
        listen=args.listen,
        connect=args.connect,
        config=args.zenoh_config,
        zenoh_mode=args.zenoh_mode,
        engine=args.engine,
        **_redis(args, max_entries=args.max_entries),
        start=args.start,
        status=not args.no_status,
    )
    keys = ", ".join(f"{n} as {k}" for n, k in ex.keys.items())
    return _run(ex, args.seconds, f"exporting {keys} (Ctrl-C stops)")


def cmd_mirror(args: argparse.Namespace) -> int:
    from . import mirror
    from ._mirror import DEFAULT_MAX_BYTES

    _logging()
    max_bytes: Optional[int] = args.max_bytes
    mi = mirror(
        args.key,
        into=args.into,
        listen=args.listen,
        connect=args.connect,
        config=args.zenoh_config,
        zenoh_mode=args.zenoh_mode,
        engine=args.engine,
        **_redis(args, group=args.group),
        allow_layout_change=args.allow_layout_change,
        max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        status=not args.no_status,
    )
    return _run(mi, args.seconds, f"mirroring {args.key} into {args.into} (Ctrl-C stops)")


def demo(args: argparse.Namespace, console: Any) -> int:
    """``xshm demo --bridge``: see ``_demo``; a table of what it measured."""
    import json

    from ._demo import run

    rate = min(args.rate, 500.0)
    if not args.json:
        console.print(
            f"xshm demo --bridge: this process publishes a record and a stream {rate:g} times a "
            f"second for {args.seconds:g} s and exports them over Zenoh (loopback TCP); a second "
            "process mirrors both and reads the mirrors with the ordinary API"
        )
    fig = run(seconds=args.seconds, rate=rate)
    ok = fig["stream_lost"] == 0 and fig["stream_out_of_order"] == 0
    ok = ok and fig["stream_received"] == fig["published"] and fig["record_updates"] > 0
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0 if ok else 1
    console.print(f"exported {', '.join(fig['keys'])} on {fig['endpoint']}")
    console.print(
        f"record: {fig['published']} publishes, the mirror's reader saw {fig['record_updates']} "
        f"updates (latest value: it may skip); source publish to mirror read p50 "
        f"{fig['record_latency_us_p50']:.0f} us, p99 {fig['record_latency_us_p99']:.0f} us"
    )
    console.print(
        f"stream: {fig['published']} messages sent, {fig['stream_received']} received in order "
        f"(out of order {fig['stream_out_of_order']}, lost {fig['stream_lost']}); send to "
        f"mirror receive p50 {fig['stream_latency_us_p50']:.0f} us, p99 "
        f"{fig['stream_latency_us_p99']:.0f} us"
    )
    return 0 if ok else 1
