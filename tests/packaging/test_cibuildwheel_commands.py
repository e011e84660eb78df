"""The xshm-text wheels' cibuildwheel test command (rust/pyproject.toml) runs in CI only when
wheels are built: run it here against the installed module, so an assert that can never pass
(it once asked validate() for a length; validate raises) is caught by make test."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_the_text_wheels_test_command_passes() -> None:
    cfg = tomllib.loads((ROOT / "rust" / "pyproject.toml").read_text())
    command = cfg["tool"]["cibuildwheel"]["test-command"]
    argv = shlex.split(command)
    assert argv[0] == "python", command
    r = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{command}\n{r.stderr}"
