#!/usr/bin/env python3
"""Checks what a make target needs before it starts, installs what apt can, and stops with ONE
line naming whatever is still missing and why. Run by the Makefile's set-up stamps:

    tools/prereqs.py demo  --apt "g++ cmake ninja-build"   the demo: a compiler, CMake, Ninja,
                                                           Rust for the xshm-text crate
    tools/prereqs.py setup --apt "$(APT_PACKAGES)"         the whole set-up (test-only packages)
    tools/prereqs.py test  --apt "$(APT_PACKAGES)"         make test: the set-up, a nightly Rust
                                                           (AddressSanitizer) and Go for the
                                                           spec reader and actionlint

apt packages are installed when missing (as root, or through sudo). Rust and Go are not: the
Debian/Ubuntu packages are usually older than what the crates and go.mod ask, and rustup or
go.dev may be out of reach; the line says which version is needed and where it comes from:
`rust-version` in rust/Cargo.toml when set, else the highest `rust-version` among the locked
dependencies that the target builds (cargo metadata), else the edition's first release.
Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RUST = ROOT / "rust"
GO_MOD = ROOT / "tests" / "spec_reader" / "go.mod"
# The first Rust release of each edition: the least any crate of that edition needs.
EDITION_FLOOR = {"2015": (1, 0), "2018": (1, 31), "2021": (1, 56), "2024": (1, 85)}
# For a machine without dpkg: the command each package provides (None: no way to tell).
COMMAND_OF = {
    "g++": "g++",
    "cmake": "cmake",
    "ninja-build": "ninja",
    "valgrind": "valgrind",
    "tmux": "tmux",
    "clang": "clang",
    "clang-format": "clang-format",
}
# What the crates are built for, per mode: the Python module's package, or every member.
CRATES = {"demo": "xshm-text-py", "setup": None, "test": None}


def version(text: str) -> Optional[tuple[int, ...]]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def run(*cmd: str, timeout: float = 300) -> Optional[str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


# ---- apt ----


def apt_missing(packages: list[str]) -> list[str]:
    if shutil.which("dpkg") is None:
        return [p for p in packages if COMMAND_OF.get(p) and shutil.which(COMMAND_OF[p]) is None]
    # dpkg-query exits 1 when a package is unknown; the others are still listed.
    r = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *packages],
        capture_output=True,
        text=True,
    )
    installed = r.stdout
    ok = {ln.split()[0] for ln in installed.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in ok]


def apt_install(packages: list[str]) -> Optional[str]:
    """Installs `packages`; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get here: install them with this system's package manager"
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return "not root and no sudo: install them as root"
        sudo = ["sudo"]
    print(f"installing (apt): {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        if subprocess.run([*sudo, *cmd], env=env).returncode != 0:
            return f"`{' '.join(cmd[:2])}` failed (its output is above)"
    return None


def python_venv_missing() -> bool:
    """Debian splits venv's pip bootstrap into python3-venv."""
    return run(sys.executable, "-c", "import ensurepip, venv") is None


# ---- Rust ----


def rust_version_field() -> Optional[tuple[int, ...]]:
    """`rust-version` from rust/Cargo.toml or a member's Cargo.toml, if any sets it."""
    found = []
    for toml in [RUST / "Cargo.toml", *RUST.glob("*/Cargo.toml")]:
        m = re.search(r'(?m)^rust-version\s*=\s*"([^"]+)"', toml.read_text())
        if m:
            found.append(version(m.group(1)))
    return max((v for v in found if v), default=None)


def edition_floor() -> tuple[tuple[int, ...], str]:
    m = re.search(r'(?m)^edition\s*=\s*"(\d+)"', (RUST / "Cargo.toml").read_text())
    edition = m.group(1) if m else "2021"
    return EDITION_FLOOR.get(edition, (1, 56)), edition


def locked_dependencies_need(crate: Optional[str]) -> Optional[tuple[tuple[int, ...], str]]:
    """The highest rust-version among the locked packages `crate` builds on this host (every
    workspace member when None), and the package that asks it; None when cargo cannot say."""
    host = run("rustc", "-vV")
    triple = re.search(r"(?m)^host: (\S+)", host or "")
    cmd = [
        "cargo",
        "metadata",
        "--format-version",
        "1",
        "--manifest-path",
        str(RUST / "Cargo.toml"),
    ]
    if triple:
        cmd += ["--filter-platform", triple.group(1)]
    out = run(*cmd)
    if out is None:
        return None
    meta = json.loads(out)
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    roots = [i for i in meta["workspace_members"] if crate is None or pkgs[i]["name"] == crate]
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        for dep in nodes[i]["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if crate is None or kinds & {None, "build"}:  # the demo builds no tests
                todo.append(dep["pkg"])
    needs = [(version(pkgs[i]["rust_version"] or ""), pkgs[i]["name"]) for i in seen]
    needs = [(v, n) for v, n in needs if v]
    return max(needs) if needs else None


def check_rust(mode: str) -> Optional[str]:
    what = "the xshm-text crate (rust/)" + (
        ", its tests, loom and clippy" if mode != "demo" else ""
    )
    cargo, rustc = run("cargo", "--version"), run("rustc", "--version")
    pinned = rust_version_field()
    floor, edition = edition_floor()
    if cargo is None or rustc is None:
        need = (
            f"Rust >= {dotted(pinned)} (rust-version in rust/Cargo.toml)"
            if pinned
            else f"a current stable Rust (edition {edition}; the locked dependencies may need "
            "more than Debian's packaged Rust)"
        )
        return f"cargo: {need} builds {what}; install it with rustup (https://rustup.rs)"
    have = version(rustc) or (0,)
    if pinned:
        need, why = pinned, "rust-version in rust/Cargo.toml"
    else:
        locked = locked_dependencies_need(CRATES[mode])
        if locked is None:
            # cargo could not even read the workspace: an old cargo cannot parse a new Cargo.lock
            need, why = (
                floor,
                f"edition {edition}; cargo metadata failed: is rust/Cargo.lock newer?",
            )
            if have >= floor:
                return (
                    f"cargo: {rustc.strip()} cannot read the workspace (`cargo metadata "
                    "--manifest-path rust/Cargo.toml` fails; an older cargo cannot read a newer "
                    "Cargo.lock): install a current Rust with rustup (https://rustup.rs)"
                )
        else:
            need, why = locked[0], f"the locked dependency {locked[1]} asks it"
    if have < need:
        return (
            f"cargo: Rust >= {dotted(need)} builds {what} ({why}), this machine has "
            f"{dotted(have)}: update it with rustup (https://rustup.rs)"
        )
    return None


def check_nightly() -> Optional[str]:
    """make test runs the xshm crate's tests under AddressSanitizer, which only a nightly
    compiler builds (Miri, the usual check, is a component rustup may not be able to fetch)."""
    if run("cargo", "+nightly", "--version") is None:
        return (
            "a nightly Rust toolchain (`rustup toolchain install nightly`) runs the xshm "
            "crate's tests under AddressSanitizer"
        )
    return None


# ---- Go ----


def check_go() -> Optional[str]:
    m = re.search(r"(?m)^go (\S+)", GO_MOD.read_text())
    need = version(m.group(1)) if m else (1, 21)
    assert need is not None
    have = version(run("go", "version") or "")
    what = "make test's Go spec reader and actionlint"
    if have is None:
        return f"go >= {dotted(need)} ({GO_MOD.relative_to(ROOT)}) runs {what}: https://go.dev/dl"
    if have < need:
        return (
            f"go >= {dotted(need)} ({GO_MOD.relative_to(ROOT)}) runs {what}, this machine has "
            f"{dotted(have)}: https://go.dev/dl"
        )
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(CRATES))
    ap.add_argument("--apt", default="", help="the apt packages the target needs")
    args = ap.parse_args()
    problems = []
    packages = args.apt.split()
    if args.mode == "demo":  # only what is missing as a command: a compiler from elsewhere is fine
        packages = [p for p in packages if not (COMMAND_OF.get(p) and shutil.which(COMMAND_OF[p]))]
    if python_venv_missing():
        packages.append("python3-venv")
    missing = apt_missing(packages)
    if missing:
        why = apt_install(missing)
        still = apt_missing(missing) if why is None else missing
        if still:
            problems.append(
                f"apt packages {' '.join(still)}: {why or 'still missing after apt-get'}"
            )
    rust = check_rust(args.mode)
    if rust:
        problems.append(rust)
    if args.mode == "test":
        for problem in (check_nightly(), check_go()):
            if problem:
                problems.append(problem)
    if problems:
        print(f"make {args.mode}: missing " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
