#!/usr/bin/env python3
"""The README's code blocks, kept true by running them.

A fenced block right after a marker line ``<!-- readme-test: ROLE -->`` is one the tests run
(tests/docs/test_readme.py): ROLE is ``python producer``, ``python consumer``, ``stream
producer``, ``stream consumer``, ``cpp program``, ``transcript setup`` (Python that makes the
segments the transcripts show) or ``transcript`` (a ``console`` block: ``$ command`` lines, each
followed by its output).

    python tools/readme_transcripts.py           rewrite the transcripts of README.md from a run
    python tools/readme_transcripts.py --check   run them and compare (volatile parts masked)

`make readme` runs the first. The commands run in a private mount namespace whose /dev/shm is
an empty tmpfs (``unshare -m`` as root, ``unshare -rm`` otherwise), holding only the segments the
setup block makes: ``xshm ls`` shows them alone and the names are the README's own. ``xshm`` is
the one this Python runs (``python -m xshm``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- readme-test: (?P<role>[a-z +]+) -->$")


@dataclass
class Block:
    role: str
    lang: str
    body: str  # the text between the fences, with its final newline
    start: int  # offset of the body in the README
    end: int


def blocks(text: str) -> list[Block]:
    """Every fenced block of `text`, with the role of the marker line just before it ("" for an
    unmarked block)."""
    out = []
    for m in re.finditer(r"(?m)^```(?P<lang>[a-z+]*)\n(?P<body>.*?)^```$", text, re.S):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.match(before)
        out.append(
            Block(
                marker.group("role") if marker else "",
                m.group("lang"),
                m.group("body"),
                m.start("body"),
                m.end("body"),
            )
        )
    return out


def block(text: str, role: str) -> Block:
    found = [b for b in blocks(text) if b.role == role]
    if len(found) != 1:
        raise LookupError(f"README: {len(found)} blocks marked '{role}', expected one")
    return found[0]


def commands(transcript: str) -> list[str]:
    return [ln[2:] for ln in transcript.splitlines() if ln.startswith("$ ")]


# ---- running ----


def namespace_prefix() -> list[str]:
    """The unshare command giving a private mount namespace; raises when there is none."""
    if shutil.which("unshare") is None:
        raise RuntimeError("unshare(1) is needed for a private /dev/shm (util-linux)")
    if os.geteuid() == 0:
        return ["unshare", "-m", "--propagation", "private"]
    return ["unshare", "-r", "-m", "--propagation", "private"]


def run_transcript(setup: str, cmds: list[str], timeout: float = 600) -> str:
    """Runs `setup` (Python) then each command in a private /dev/shm; returns the transcript:
    each command after "$ ", then its output (stdout and stderr as they came), a blank line
    between commands."""
    py = shlex.quote(sys.executable)
    lines = [
        "set -u",
        "mount -t tmpfs -o mode=1777 xshm-readme /dev/shm",
        f'xshm() {{ {py} -m xshm "$@"; }}',
        f"{py} -c {shlex.quote(setup)} || exit 97",
    ]
    for i, cmd in enumerate(cmds):
        if i:
            lines.append("echo")
        lines.append(f"echo {shlex.quote('$ ' + cmd)}")
        lines.append(f"( {cmd}\n) 2>&1")  # a newline: the command may end in a comment
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    r = subprocess.run(
        [*namespace_prefix(), "sh", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if r.returncode == 97:
        raise RuntimeError(f"the transcript setup failed:\n{r.stderr}")
    if r.stderr.strip():
        raise RuntimeError(f"the transcript run wrote to stderr:\n{r.stderr}")
    return r.stdout


def run_readme_transcript(text: str) -> tuple[Block, str]:
    setup = block(text, "transcript setup")
    shown = block(text, "transcript")
    return shown, run_transcript(setup.body, commands(shown.body))


# ---- comparing ----

VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)? (ms|s|min|h) ago\b"), "<ago>"),  # ages
    (re.compile(r"\bpid \d+\b"), "pid <pid>"),
    (re.compile(r"\b\d+(\.\d+)? ?(us|µs|ns)\b"), "<time>"),  # bench figures
    (re.compile(r"\b\d+(\.\d+)?x\b"), "<ratio>"),
]


def masked(transcript: str, missing_peers: tuple[str, ...] = ()) -> list[str]:
    """The transcript with what changes from run to run masked (ages, pids, timings, ratios),
    runs of spaces made one (table widths follow the masked figures), and the lines of peers
    that are not installed here dropped."""
    out = []
    for line in transcript.splitlines():
        if any(p in line for p in missing_peers):
            continue
        for pat, repl in VOLATILE:
            line = pat.sub(repl, line)
        out.append(re.sub(r" +", " ", line).strip())
    return out


def missing_bench_peers() -> tuple[str, ...]:
    """The `xshm bench` peer labels whose package is not installed here."""
    import importlib.util

    from xshm._bench import PEER_PACKAGES

    return tuple(
        label
        for label, (module, _) in PEER_PACKAGES.items()
        if module is not None and importlib.util.find_spec(module) is None
    )


def diff(readme_transcript: str, fresh: str) -> Optional[str]:
    """None when the README's transcript and a fresh run agree once masked; else a diff."""
    gone = missing_bench_peers()
    a, b = masked(readme_transcript, gone), masked(fresh, gone)
    if a == b:
        return None
    return "\n".join(difflib.unified_diff(a, b, "README.md", "this run", lineterm=""))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare, do not rewrite")
    ap.add_argument("--readme", default=str(README))
    args = ap.parse_args()
    path = Path(args.readme)
    text = path.read_text()
    shown, fresh = run_readme_transcript(text)
    if args.check:
        d = diff(shown.body, fresh)
        if d:
            print(d)
            return 1
        print("README transcripts: as run")
        return 0
    if missing_bench_peers():
        print(
            "not rewriting: `xshm bench` peers not installed here "
            f"({', '.join(missing_bench_peers())}); run make bench-peers first",
            file=sys.stderr,
        )
        return 1
    path.write_text(text[: shown.start] + fresh + text[shown.end :])
    print(f"{path}: transcripts rewritten from this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
