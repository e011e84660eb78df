"""The ``xshm`` command (also ``python -m xshm``): see what shared memory holds and how it moves,
records (the latest value) and streams (every message, in order) alike.

Exit codes, for scripts: 0 success; 1 a named segment is missing, foreign, not accessible or
could not be removed; 2 usage error; 130 interrupted (Ctrl-C) where that is not the normal way
out. Output is a table (with colour) in a terminal, plain text when piped, JSON with ``--json``;
when the reader of a pipe leaves (``xshm ls | head -1``) the command ends quietly with 0.
Inspecting never writes to a segment and never takes its writer mutex (a stream is opened
read-only: no reader is attached, nothing is reaped). Errors say what is known (the file's size,
age and owner), not what probably happened.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import pwd
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, Optional, Union

import numpy as np

from . import __version__, get_cmake_dir, get_include
from ._core import SharedMemoryManager, Stream, segment_kind
from ._core import unlink as _unlink
from .bridge._cli import add_parser as add_bridge_parser
from .errors import LayoutError, XshmError

SHM_DIR = "/dev/shm"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SPARK = "▁▂▃▄▅▆▇█"


class CliError(Exception):
    """A one-line error for the user; the command exits with EXIT_FAILED."""


def _console(args: argparse.Namespace) -> Any:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError  # main() ends quietly with 0 (rich's own way exits 1)

    # Piped: never wrap or elide a line to fit an 80-column guess; scripts read whole rows.
    width = None if sys.stdout.isatty() else 1000
    return _Console(no_color=args.no_color or None, highlight=False, width=width)


@contextmanager
def _opening(name: str) -> Iterator[None]:
    """Turns the usual failures of opening `name` into one-line errors."""
    try:
        yield
    except FileNotFoundError:
        raise CliError(f"no segment named '{_canon(name)}'") from None
    except PermissionError:
        raise CliError(
            f"permission denied: '{_canon(name)}' is {_file_facts(name)}, and this process "
            f"runs as {_owner(os.geteuid())}"
        ) from None
    except LayoutError as e:
        raise CliError(_not_usable(name, e)) from None


def _open(name: str) -> Union[SharedMemoryManager, Stream]:
    """Opens a record or a stream read-only for inspection: a stream handle attaches no reader
    and sends nothing, so looking changes nothing."""
    with _opening(name):
        if segment_kind(name) == "stream":
            return Stream.open(name, readonly=True)
        return SharedMemoryManager.open(name, readonly=True)


def _canon(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, _canon(name)[1:])


def _file_facts(name: str, size: bool = True) -> str:
    """What the file system says about a segment's file: size, age, owner, mode."""
    try:
        st = os.stat(_path(name))
    except OSError as e:
        return f"not readable ({e.strerror})"
    return (
        (f"{_size(st.st_size)}, " if size else "")
        + f"modified {_ago(st.st_mtime_ns)}, owner {_owner(st.st_uid)}, "
        + f"mode {stat.S_IMODE(st.st_mode):04o}"
    )


def _first_page_state(name: str) -> Optional[str]:
    """'empty' (0 bytes) or 'zeros' (its first page is all zero bytes: a file whose creator has
    not written its header, or never will); None otherwise or when it cannot be read."""
    try:
        with open(_path(name), "rb") as f:
            head = f.read(mmap.PAGESIZE)
    except OSError:
        return None
    if not head:
        return "empty"
    return "zeros" if head.count(0) == len(head) else None


def _not_usable(name: str, err: Exception) -> str:
    """The one-line report on a file in /dev/shm that does not open as an xshm segment: what
    is known about it, and how to remove it. Guesses nothing about who made it."""
    seg = _canon(name)
    rm = f"if nothing is creating it, remove it with: xshm rm --force {seg[1:]}"
    state = _first_page_state(name)
    if state == "empty":
        return (
            f"'{seg}' is empty (0 bytes): not an xshm segment, or one whose creator did not "
            f"finish; {_file_facts(name, size=False)}; {rm}"
        )
    if state == "zeros":
        return (
            f"'{seg}' has an all-zero header: not an xshm segment, or one whose creator did "
            f"not finish; {_file_facts(name)}; {rm}"
        )
    # The core's text for a segment never made ready already says how to remove it.
    removal = "" if "xshm rm --force" in str(err) else f"; {rm}"
    return f"'{seg}' is not a usable xshm segment: {err}; {_file_facts(name)}{removal}"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _started_ns(pid: int) -> Optional[int]:
    """When process `pid` started (CLOCK_REALTIME ns), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    ticks = int(fields[19])  # field 22 of proc(5): start time in clock ticks after boot
    return int((btime + ticks / os.sysconf("SC_CLK_TCK")) * 1e9)


def _alive(pid: int, since_ns: int = 0) -> Optional[bool]:
    """Whether the process `pid` that acted at `since_ns` still runs: False when no process has
    that pid, or when the one that has it started after `since_ns` (the pid was reused)."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _started_ns(pid)
    # Start times in /proc count clock ticks (10 ms): only a clear "later" means another process.
    return not (since_ns and started is not None and started > since_ns + 20_000_000)


def _ago(ns: int) -> str:
    if ns <= 0:
        return "never"
    s = max(0.0, time.time() - ns / 1e9)
    if s < 1:
        return f"{s * 1000:.0f} ms ago"
    if s < 120:
        return f"{s:.1f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def sparkline(values: np.ndarray[Any, Any], width: int = 40) -> str:
    """A row of block characters showing the values' shape (downsampled to ``width``)."""
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return ""
    if np.iscomplexobj(flat):
        flat = np.abs(flat)
    flat = flat.astype(np.float64)
    chunks = np.array_split(flat, min(width, flat.size))
    means = np.array([c.mean() for c in chunks])
    lo, hi = float(np.nanmin(means)), float(np.nanmax(means))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi == lo:
        return SPARK[0] * len(means)
    idx = ((means - lo) / (hi - lo) * (len(SPARK) - 1)).round().astype(int)
    return "".join(SPARK[i] for i in idx)


def _summary(values: np.ndarray[Any, Any], first: int = 5) -> dict[str, Any]:
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return {"min": None, "max": None, "mean": None, "first": []}
    num = np.abs(flat) if np.iscomplexobj(flat) else flat.astype(np.float64)
    return {
        "min": float(num.min()),
        "max": float(num.max()),
        "mean": float(num.mean()),
        "first": [v.item() if not np.iscomplexobj(flat) else str(v) for v in flat[:first]],
    }


# ---- ls ----


def _shape_text(shape: Sequence[int]) -> str:
    """A shape as numpy writes it, in ls and inspect alike: (100,), (2, 3), (0,), ()."""
    return str(tuple(int(n) for n in shape))


def _frame_text(dtype: Any, shape: Sequence[int]) -> str:
    return f"{dtype} {_shape_text(shape)}"


def _record_row(m: SharedMemoryManager) -> dict[str, Any]:
    snap = m.read()
    return {
        "kind": "record",
        "shape": list(m.shape),
        "dtype": str(m.dtype),
        "message_capacity": m.message_capacity,
        "seq": m.seq,
        "counter": snap.counter,
        "last_publish_ns": snap.timestamp_ns if snap.seq else 0,
    }


def _stream_row(s: Stream) -> dict[str, Any]:
    hdr = s.header()
    readers = s.readers()
    return {
        "kind": "stream",
        "capacity": hdr["capacity"],
        "max_bytes": hdr["max_bytes"],
        "dtype": None if s.dtype is None else str(s.dtype),
        "shape": None if s.shape is None else list(s.shape),
        "backpressure": hdr["backpressure"],
        "max_readers": hdr["max_readers"],
        "readers": len(readers),
        "readers_alive": sum(1 for r in readers if r["alive"]),
        "head": hdr["head"],
        "dropped": hdr["dropped"],
        "abandoned": hdr["abandoned"],
    }


def _entries(show_all: bool) -> Iterator[dict[str, Any]]:
    for entry in sorted(os.listdir(SHM_DIR)):
        path = os.path.join(SHM_DIR, entry)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        row: dict[str, Any] = {
            "name": "/" + entry,
            "kind": None,
            "size": st.st_size,
            "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "owner": _owner(st.st_uid),
            "xshm": False,
        }
        try:
            if segment_kind(entry) == "stream":
                with Stream.open(entry, readonly=True) as s:
                    row.update(xshm=True, **_stream_row(s))
            else:
                with SharedMemoryManager.open(entry, readonly=True) as m:
                    row.update(xshm=True, **_record_row(m))
        except PermissionError:
            row["note"] = "no access"
        except LayoutError as e:
            state = _first_page_state(entry)
            other = "not ready" if "not READY" in str(e) else "foreign"
            row["note"] = {"empty": "empty", "zeros": "zero header"}.get(state or "", other)
        except (XshmError, ValueError) as e:
            row["note"] = f"unreadable: {type(e).__name__}"
        except OSError as e:
            row["note"] = f"unreadable: {e.strerror}"
        if row["xshm"] or show_all:
            yield row


def _ls_holds(r: dict[str, Any]) -> str:
    """What one record or message holds: the ls 'holds' column."""
    if r["kind"] == "record":
        return f"{_frame_text(r['dtype'], r['shape'])}, msg {r['message_capacity']} B"
    what = f"{r['max_bytes']} B" if r["dtype"] is None else _frame_text(r["dtype"], r["shape"])
    return f"{r['capacity']} x {what}, {r['backpressure']}"


def _ls_state(r: dict[str, Any]) -> str:
    """Where it is now: the ls 'state' column."""
    if r["kind"] == "record":
        return f"seq {r['seq']}, counter {r['counter']}"
    dead = r["readers"] - r["readers_alive"]
    readers = f"{r['readers']} reader{'' if r['readers'] == 1 else 's'}" + (
        f" ({dead} dead)" if dead else ""
    )
    return f"head {r['head']}, dropped {r['dropped']}, {readers}"


def cmd_ls(args: argparse.Namespace) -> int:
    rows = list(_entries(args.all))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.table import Table

    console = _console(args)
    if not rows:
        console.print("no xshm segments" + ("" if args.all else " (--all shows every segment)"))
        return EXIT_OK
    from rich import box

    table = Table(box=box.SIMPLE_HEAD if console.is_terminal else None, header_style="bold")
    for col in ("name", "kind", "size", "mode", "owner", "holds", "state"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for r in rows:
        if r["xshm"]:
            table.add_row(
                r["name"],
                r["kind"],
                _size(r["size"]),
                r["mode"],
                r["owner"],
                _ls_holds(r),
                _ls_state(r),
            )
        else:
            table.add_row(
                f"[dim]{r['name']}[/dim]",
                f"[yellow]{r.get('note', 'foreign')}[/yellow]",
                _size(r["size"]),
                r["mode"],
                r["owner"],
                "",
                "",
            )
    console.print(table)
    return EXIT_OK


# ---- inspect ----


def _inspect_data(name: str) -> dict[str, Any]:
    with _open(name) as seg:
        if isinstance(seg, Stream):
            return _stream_data(seg)
        return _record_data(seg)


def _record_data(m: SharedMemoryManager) -> dict[str, Any]:
    hdr = m.header()
    snap = m.read()
    st = os.stat(os.path.join(SHM_DIR, m.name[1:]))
    writer = snap.writer_pid if snap.seq else 0
    return {
        "name": m.name,
        "kind": "record",
        "layout_version": hdr["layout_version"],
        "shape": list(m.shape),
        "dtype": str(m.dtype),
        "message_capacity": m.message_capacity,
        "backup": m.backup,
        "size": hdr["total_size"],
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": _owner(st.st_uid),
        "creation_id": hdr["creation_id"],
        "created_ns": hdr["created_ns"],
        "creator_pid": hdr["creator_pid"],
        "seq": snap.seq,
        "counter": snap.counter,
        "message": snap.message,
        "values": _summary(snap.values),
        "last_publish_ns": snap.timestamp_ns if snap.seq else 0,
        "writer_pid": writer,
        "writer_alive": _alive(writer, snap.timestamp_ns if snap.seq else 0),
        "writer_mutex_owner": hdr["owner_pid"],
        "recoveries": hdr["recoveries"],
        "waiters": hdr["waiters"],
        "layout": {
            "record_size": hdr["record_size"],
            "record_offsets": list(hdr["record_offsets"]),
            "values_offset": hdr["values_offset"],
            "values_size": hdr["values_size"],
            "message_offset": hdr["message_offset"],
        },
    }


READER_FIELDS = (
    "index",
    "pid",
    "group",
    "alive",
    "cursor",
    "lag",
    "lost",
    "received",
    "skipped",
    "attached_ns",
)
GROUP_FIELDS = ("name", "members", "cursor", "lag", "received", "lost", "skipped", "start")


def _stream_data(s: Stream) -> dict[str, Any]:
    hdr = s.header()
    readers = s.readers()
    st = os.stat(os.path.join(SHM_DIR, s.name[1:]))
    return {
        "name": s.name,
        "kind": "stream",
        "layout_version": hdr["layout_version"],
        "size": hdr["total_size"],
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": _owner(st.st_uid),
        "capacity": hdr["capacity"],
        "max_bytes": hdr["max_bytes"],
        "slot_size": hdr["slot_size"],
        "dtype": None if s.dtype is None else str(s.dtype),
        "shape": None if s.shape is None else list(s.shape),
        "backpressure": hdr["backpressure"],
        "max_readers": hdr["max_readers"],
        "max_writers": hdr["max_writers"],
        "created_ns": hdr["created_ns"],
        "creator_pid": hdr["creator_pid"],
        "head": hdr["head"],
        "dropped": hdr["dropped"],
        "abandoned": hdr["abandoned"],
        "recoveries": hdr["recoveries"],
        "reaped": hdr["reaped"],
        "writer_mutex_owner": hdr["owner_pid"],
        "waiting_readers": hdr["data_waiters"],
        "waiting_writers": hdr["space_waiters"],
        "readers": [{k: r[k] for k in READER_FIELDS} for r in readers],
        "max_groups": hdr["max_groups"],
        "groups": [{k: g[k] for k in GROUP_FIELDS} for g in s.groups()],
    }


ALIVE = {True: "[green]alive[/green]", False: "[red]exited[/red]", None: "-"}
BACKPRESSURE = {
    "block": "block (writers wait while the slowest reader is a full ring behind)",
    "drop_oldest": "drop_oldest (writers never wait; a lapped reader counts what it lost)",
}


def _grid() -> Any:
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    return t


def _mutex_text(owner: int) -> str:
    return f"held by pid {owner}" if owner else "free"


def _record_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    v = info["values"]
    return [
        ("segment", info["name"]),
        ("kind", "record (the latest value)"),
        (
            "layout",
            f"version {info['layout_version']}, {_size(info['size'])}, "
            f"backup {'on' if info['backup'] else 'off'}",
        ),
        ("values", f"{info['dtype']}, shape {_shape_text(info['shape'])}"),
        ("message slot", f"{info['message_capacity']} bytes"),
        ("permissions", f"{info['mode']} {info['owner']}"),
        ("created", f"{_ago(info['created_ns'])} by pid {info['creator_pid']}"),
        ("seq", str(info["seq"])),
        ("counter", str(info["counter"])),
        ("message", repr(info["message"])),
        (
            "values summary",
            f"min {v['min']:.6g}  max {v['max']:.6g}  mean {v['mean']:.6g}"
            if v["min"] is not None
            else "(empty)",
        ),
        (
            "first values",
            ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v["first"]),
        ),
        (
            "last publish",
            f"{_ago(info['last_publish_ns'])}"
            + (
                f" by pid {info['writer_pid']} ({ALIVE[info['writer_alive']]})"
                if info["writer_pid"]
                else ""
            ),
        ),
        ("writer mutex", _mutex_text(info["writer_mutex_owner"])),
        ("recoveries", str(info["recoveries"])),
        ("sleeping readers", str(info["waiters"])),
        (
            "record",
            f"{info['layout']['record_size']} bytes at "
            f"{', '.join(map(str, info['layout']['record_offsets']))}; values at "
            f"+{info['layout']['values_offset']}, message at "
            f"+{info['layout']['message_offset']}",
        ),
    ]


def _stream_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    n = len(info["readers"])
    dead = sum(1 for r in info["readers"] if not r["alive"])
    message = (
        f"bytes, up to {info['max_bytes']} each"
        if info["dtype"] is None
        else f"frames {info['dtype']}, shape {_shape_text(info['shape'])} "
        f"({info['max_bytes']} bytes)"
    )
    return [
        ("segment", info["name"]),
        ("kind", "stream (every message, in order)"),
        (
            "layout",
            f"version {info['layout_version']}, {_size(info['size'])}, "
            f"{info['capacity']} slots of {info['slot_size']} bytes",
        ),
        ("messages", message),
        ("backpressure", BACKPRESSURE.get(info["backpressure"], info["backpressure"])),
        ("permissions", f"{info['mode']} {info['owner']}"),
        ("created", f"{_ago(info['created_ns'])} by pid {info['creator_pid']}"),
        ("head", f"{info['head']} (the next message's sequence number)"),
        ("dropped", f"{info['dropped']} (overwritten while no reader was attached)"),
        ("abandoned", f"{info['abandoned']} (lost with a writer that died sending)"),
        ("recoveries", f"{info['recoveries']} (of the mutex, after its holder died)"),
        ("reaped", f"{info['reaped']} (dead readers detached, dead writers' entries reused)"),
        ("writer mutex", _mutex_text(info["writer_mutex_owner"])),
        ("sleeping readers", str(info["waiting_readers"])),
        ("waiting writers", str(info["waiting_writers"])),
        (
            "readers",
            f"{n} of {info['max_readers']} attached"
            + (f", {dead} of them dead (a writer detaches them)" if dead else ""),
        ),
        (
            "groups",
            f"{len(info['groups'])} of {info['max_groups']} (work queues: each message to one "
            "member)",
        ),
    ]


def _group_table(groups: list[dict[str, Any]], console: Any) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD if console.is_terminal else None, header_style="bold")
    cols = ["group", "members", "cursor", "lag", "received", "lost", "skipped"]
    for col in cols:
        t.add_column(col, justify="left" if col == "group" else "right")
    for g in groups:
        t.add_row(g["name"], *(str(g[c]) for c in cols[1:]))
    return t


def _reader_table(readers: list[dict[str, Any]], console: Any, lag_only: bool = False) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD if console.is_terminal else None, header_style="bold")
    cols = ["reader", "pid", "alive", "cursor", "lag", "lost", "received"]
    if any(r.get("group") for r in readers):
        cols.insert(1, "group")
    if lag_only:
        cols.remove("cursor")
    else:
        cols.append("attached")
    for col in cols:
        t.add_column(col, justify="left" if col in ("group", "alive", "attached") else "right")
    for r in readers:
        cells = {
            "reader": str(r["index"]),
            "group": r.get("group") or "-",
            "pid": str(r["pid"]),
            "alive": "[green]alive[/green]" if r["alive"] else "[red]dead[/red]",
            "cursor": str(r.get("cursor", "")),
            "lag": str(r["lag"]),
            "lost": str(r["lost"]),
            "received": str(r["received"]),
            "attached": _ago(r.get("attached_ns", 0)),
        }
        t.add_row(*(cells[c] for c in cols))
    return t


def cmd_inspect(args: argparse.Namespace) -> int:
    info = _inspect_data(args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    console = _console(args)
    t = _grid()
    rows = _stream_rows(info) if info["kind"] == "stream" else _record_rows(info)
    for k, val in rows:
        t.add_row(k, val)
    console.print(t)
    if info["kind"] == "stream" and info["readers"]:
        console.print(_reader_table(info["readers"], console))
    if info["kind"] == "stream" and info["groups"]:
        console.print(_group_table(info["groups"], console))
    return EXIT_OK


# ---- watch ----


def _watch_frames(m: SharedMemoryManager, interval: float) -> Iterator[dict[str, Any]]:
    last_seq = m.seq
    last_t = time.monotonic()
    while True:
        time.sleep(interval)
        snap = m.read()
        now = time.monotonic()
        rate = (snap.seq - last_seq) / (now - last_t) if now > last_t else 0.0
        last_seq, last_t = snap.seq, now
        yield {
            "seq": snap.seq,
            "updates_per_s": rate,
            "since_last_publish": _ago(snap.timestamp_ns if snap.seq else 0),
            "counter": snap.counter,
            "message": snap.message,
            "spark": sparkline(snap.values),
        }


def _stream_watch_frames(s: Stream, interval: float) -> Iterator[dict[str, Any]]:
    last_head = s.head
    last_t = time.monotonic()
    while True:
        time.sleep(interval)
        hdr = s.header()
        readers = s.readers()
        now = time.monotonic()
        rate = (hdr["head"] - last_head) / (now - last_t) if now > last_t else 0.0
        last_head, last_t = hdr["head"], now
        yield {
            "head": hdr["head"],
            "messages_per_s": rate,
            "dropped": hdr["dropped"],
            "abandoned": hdr["abandoned"],
            "readers": [
                {k: r[k] for k in ("index", "pid", "alive", "lag", "lost", "received")}
                for r in readers
            ],
        }


def _record_render(name: str, f: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"xshm watch {name}  (Ctrl-C to quit)", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("updates/s", f"{f['updates_per_s']:.1f}")
    t.add_row("last publish", f["since_last_publish"])
    t.add_row("seq", str(f["seq"]))
    t.add_row("counter", str(f["counter"]))
    t.add_row("message", repr(f["message"]))
    t.add_row("values", f["spark"])
    return t


def _record_line(f: dict[str, Any]) -> str:
    return (
        f"seq={f['seq']} updates/s={f['updates_per_s']:.1f} "
        f"last={f['since_last_publish']!r} counter={f['counter']} "
        f"message={f['message']!r} values={f['spark']}"
    )


def _stream_render(name: str, f: dict[str, Any], console: Any) -> Any:
    from rich.console import Group
    from rich.table import Table

    t = Table(title=f"xshm watch {name}  (Ctrl-C to quit)", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("messages/s", f"{f['messages_per_s']:.1f}")
    t.add_row("head", str(f["head"]))
    t.add_row("dropped", str(f["dropped"]))
    t.add_row("abandoned", str(f["abandoned"]))
    t.add_row("readers", str(len(f["readers"])))
    if not f["readers"]:
        return t
    return Group(t, _reader_table(f["readers"], console, lag_only=True))


def _stream_line(f: dict[str, Any]) -> str:
    lags = ",".join(
        f"#{r['index']}:{r['lag']}" + ("" if r["alive"] else "(dead)") for r in f["readers"]
    )
    return (
        f"head={f['head']} messages/s={f['messages_per_s']:.1f} dropped={f['dropped']} "
        f"abandoned={f['abandoned']} readers={len(f['readers'])} lag={lags or '-'}"
    )


def cmd_watch(args: argparse.Namespace) -> int:
    seg = _open(args.name)
    console = _console(args)
    frames: Iterator[dict[str, Any]]
    if isinstance(seg, Stream):
        frames = _stream_watch_frames(seg, args.interval)

        def render(f: dict[str, Any]) -> Any:
            return _stream_render(seg.name, f, console)

        line: Callable[[dict[str, Any]], str] = _stream_line
    else:
        frames = _watch_frames(seg, args.interval)

        def render(f: dict[str, Any]) -> Any:
            return _record_render(seg.name, f)

        line = _record_line
    try:
        if console.is_terminal and not args.json:
            from rich.live import Live

            with Live(console=console, auto_refresh=False, transient=False) as live:
                for i, f in enumerate(frames, 1):
                    live.update(render(f), refresh=True)
                    if args.count and i >= args.count:
                        break
        else:
            for i, f in enumerate(frames, 1):
                if args.json:
                    print(json.dumps({k: v for k, v in f.items() if k != "spark"}), flush=True)
                else:
                    print(line(f), flush=True)
                if args.count and i >= args.count:
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way out of watch
    finally:
        seg.close()
    return EXIT_OK


# ---- rm ----


def cmd_rm(args: argparse.Namespace) -> int:
    failed = 0
    console = _console(args)
    for name in args.names:
        try:
            _unlink(name, args.force)
            if not args.quiet:
                console.print(f"removed {_canon(name)}")
        except FileNotFoundError:
            print(f"xshm: error: no segment named '{_canon(name)}'", file=sys.stderr)
            failed += 1
        except LayoutError:
            print(
                f"xshm: error: '{_canon(name)}' is not an xshm segment ({_file_facts(name)}); "
                "use --force to remove it anyway",
                file=sys.stderr,
            )
            failed += 1
        except PermissionError:
            print(
                f"xshm: error: permission denied removing '{_canon(name)}' "
                f"({_file_facts(name)}; in {SHM_DIR} only a file's owner may remove it)",
                file=sys.stderr,
            )
            failed += 1
    return EXIT_FAILED if failed else EXIT_OK


# ---- demo / bench / paths ----


def _demo_line(f: dict[str, Any]) -> str:
    return (
        f"{f['elapsed']:4.1f} s  seq {f['seq']:>5}  counter {f['counter']:>5}  "
        f"{f['message']!r:<12} {sparkline(f['values'])}"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo

    if args.bridge:
        from .bridge._cli import demo

        return demo(args, _console(args))
    console = _console(args)
    if not args.json:
        console.print(
            f"xshm demo: 1 producer publishes {args.rate:g} records/s for {args.seconds:g} s to "
            f"{args.consumers} Python consumers (+ the C++ consumer when built), each in its own "
            "process; below, the record as it moves (message, values as a sparkline)"
        )
    progress_cb: Optional[Callable[[dict[str, Any]], None]] = None
    progress: Any = None
    last: dict[str, Any] = {}
    if console.is_terminal and not args.json:
        from rich.progress import BarColumn, Progress, TextColumn

        progress = Progress(
            BarColumn(bar_width=20),
            TextColumn("{task.fields[line]}"),
            console=console,
            transient=True,
        )
        task = progress.add_task("demo", total=args.seconds, line="")
        progress.start()

        def progress_cb(f: dict[str, Any]) -> None:
            last.update(f)
            progress.update(task, completed=min(f["elapsed"], args.seconds), line=_demo_line(f))
    elif not args.json:

        def progress_cb(f: dict[str, Any]) -> None:
            print(f"  {_demo_line(f)}", flush=True)

    try:
        fig = _demo.run(
            seconds=args.seconds, consumers=args.consumers, rate=args.rate, progress=progress_cb
        )
    finally:
        if progress is not None:
            progress.stop()
    ok = fig["torn"] == 0 and fig["stream_errors"] == 0
    if args.json:
        print(json.dumps(fig, indent=2))
        return EXIT_OK if ok else EXIT_FAILED
    from rich import box
    from rich.table import Table

    if last:
        console.print(f"  {_demo_line(last)}", markup=False)
    console.print(f"published {fig['published']} records to {fig['segment']}")
    t = Table(header_style="bold", box=box.SIMPLE_HEAD if console.is_terminal else None)
    for col in ("consumer", "updates", "latency p50 (us)", "latency p99 (us)", "torn"):
        t.add_column(col, justify="left" if col == "consumer" else "right")
    for c in fig["consumers"]:
        t.add_row(
            c["consumer"],
            str(c["updates"]),
            f"{c['latency_us_p50']:.1f}",
            f"{c['latency_us_p99']:.1f}",
            str(c["torn"]),
        )
    console.print(t)
    if not fig["cpp_consumer"]:
        console.print(
            "(C++ consumer not built: make demo builds it, or cmake --build BUILD_DIR "
            "--target xshm_consumer)"
        )
    console.print(
        f"torn snapshots: {fig['torn']} (every consumer checked every record it read; a "
        "consumer reads the latest record, so one that wakes late skips the ones before)"
    )
    console.print(
        f"latency: from a publish until a consumer holds the record. At {args.rate:g} "
        "publishes/s a consumer sleeps between publishes, so each figure includes waking it "
        "(slowest when its CPU has gone idle)."
    )
    pp = fig["pingpong_one_way_us"]
    if pp:
        console.print(
            "ping-pong, as `xshm bench` and the README's figures measure it (two processes "
            f"answering each other's publish at once): one-way p50 {pp['blocking_us']:.1f} us "
            f"blocking, {pp['spinning_us']:.1f} us spinning"
        )
    st = fig["stream"]
    workers = [r for r in st["readers"] if r["reader"].startswith("worker")]
    monitor = next(r for r in st["readers"] if r["reader"].startswith("monitor"))
    console.print(
        f"stream {st['stream']}: {st['jobs']} jobs sent at {st['jobs_per_s']:,} jobs/s "
        f"({st['processes']} processes on {st['cpus']} CPUs) to a "
        f"work-queue group of {len(workers)} workers (each job to one: they took "
        + " + ".join(str(w["jobs"]) for w in workers)
        + f" = {sum(w['jobs'] for w in workers)}) and a monitor reading every job "
        f"({monitor['jobs']}); out of order {sum(r['out_of_order'] for r in st['readers'])}, "
        f"corrupt {sum(r['bad'] for r in st['readers'])}, lost "
        f"{sum(r['lost'] for r in st['readers'])}"
    )
    return EXIT_OK if ok else EXIT_FAILED


def cmd_bench(args: argparse.Namespace) -> int:
    from . import _bench

    rows = _bench.run(quick=not args.long)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.table import Table

    console = _console(args)
    from rich import box

    t = Table(
        title="xshm bench: medians from one run (the full suite: benchmarks/)",
        header_style="bold",
        box=box.SIMPLE_HEAD if console.is_terminal else None,
    )
    for col in ("what", "xshm", "peer", "peer time", "speed-up"):
        t.add_column(col, justify="left" if col in ("what", "peer") else "right", no_wrap=True)
    for r in rows:
        if r.get("skipped"):
            t.add_row(r["what"], "", r["peer"], f"[dim]{r['skipped']}[/dim]", "")
            continue
        t.add_row(
            r["what"],
            f"{r['xshm_us']:.2f} us",
            r["peer"],
            f"{r['peer_us']:.2f} us",
            f"{r['peer_us'] / r['xshm_us']:.1f}x",
        )
    console.print(t)
    return EXIT_OK


EPILOG = """\
examples:
  xshm ls                       xshm segments, records and streams (--all: every segment)
  xshm inspect sensors          header, layout and the current record of /sensors
  xshm inspect events           a stream's counters and its readers (lag, lost, alive)
  xshm watch sensors            live view (a stream: messages/s, readers' lag); Ctrl-C to leave
  xshm rm sensors events        remove segments (--force for non-xshm ones)
  xshm demo                     a producer and consumers for a few seconds
  xshm bench                    xshm beside multiprocessing and the installed peers
  xshm --include                where <xshm/xshm.hpp> is, for a C++ compiler

exit codes: 0 success (also when a pipe's reader leaves early, as `| head` does), 1 missing/
foreign/inaccessible segment or failed removal, 2 usage error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xshm",
        description="Shared-memory records and streams for Python and "
        "C++: inspect, watch and manage xshm segments.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"xshm {__version__}")
    p.add_argument("--include", action="store_true", help="print the C++ include directory")
    p.add_argument("--cmake-dir", action="store_true", help="print the CMake package directory")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, example: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.add_argument("--no-color", action="store_true", help="no colour even in a terminal")
        sp.set_defaults(func=func)
        return sp

    sp = add(
        "ls",
        cmd_ls,
        "list the xshm segments (records and streams) on this machine",
        "xshm ls --all",
    )
    sp.add_argument("--all", action="store_true", help="also list foreign segments (marked)")
    sp.add_argument("--json", action="store_true", help="JSON output")

    sp = add(
        "inspect",
        cmd_inspect,
        "show a segment's header, layout and current record (a stream: counters, readers)",
        "xshm inspect sensors --json",
    )
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true", help="JSON output")

    sp = add(
        "watch",
        cmd_watch,
        "live view of a segment: a record's updates, a stream's messages/s and readers' lag "
        "(Ctrl-C to quit)",
        "xshm watch sensors --interval 0.2",
    )
    sp.add_argument("name")
    sp.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes")
    sp.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")
    sp.add_argument("--json", action="store_true", help="one JSON object per refresh")

    sp = add("rm", cmd_rm, "remove xshm segments (records and streams)", "xshm rm sensors events")
    sp.add_argument("names", nargs="+", metavar="NAME")
    sp.add_argument("--force", action="store_true", help="also remove segments that are not xshm's")
    sp.add_argument("-q", "--quiet", action="store_true")

    sp = add(
        "demo",
        cmd_demo,
        "run a live producer/consumers demo and print what it measured",
        "xshm demo --seconds 3 --consumers 2",
    )
    sp.add_argument("--seconds", type=float, default=3.0)
    sp.add_argument("--consumers", type=int, default=2)
    sp.add_argument("--rate", type=float, default=1000.0, help="publishes per second")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.add_argument(
        "--bridge", action="store_true",
        help="a record and a stream mirrored between two processes through Zenoh (loopback)",
    )  # fmt: skip

    sp = add(
        "bench",
        cmd_bench,
        "a quick side-by-side of xshm and multiprocessing (and peers)",
        "xshm bench --json",
    )
    sp.add_argument("--long", action="store_true", help="more rounds (slower, steadier)")
    sp.add_argument("--json", action="store_true", help="JSON output")

    add_bridge_parser(
        sub, lambda sp: sp.add_argument("--no-color", action="store_true", help="no colour")
    )
    return p


def main(argv: Optional[list[str]] = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # also on argparse's SystemExit (--help): a closed pipe is seen here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output left (`xshm ls | head -1`, `xshm watch NAME | head`): that
        # ends the command, quietly. Later writes (the interpreter's own flush at exit) go to
        # /dev/null instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Optional[list[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.include:
        print(get_include())
        return EXIT_OK
    if args.cmake_dir:
        print(get_cmake_dir())
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CliError as e:
        print(f"xshm: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:  # bad names and arguments: one line, no traceback
        print(f"xshm: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # main() ends quietly
    except (ImportError, OSError) as e:  # a missing engine, an endpoint already in use, ...
        print(f"xshm: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
