"""`xshm demo` as a user sees it (the record moving, the latency explained, a ping-pong line),
and the C++ example consumer it runs, which reads the segment's own dtype."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xshm
from xshm._demo import wave
from xshm.cli import SPARK

EXAMPLES = Path(__file__).resolve().parents[2] / "cpp" / "examples"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xshm", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_shows_the_record_moving_and_explains_its_latency() -> None:
    r = run("demo", "--seconds", "1.2", "--consumers", "1")
    assert r.returncode == 0, r.stderr
    live = [ln for ln in r.stdout.splitlines() if "'tick " in ln]
    assert len(live) >= 2, r.stdout
    messages = {ln.split("'tick ")[1].split("'")[0] for ln in live}
    assert len(messages) >= 2, "the message moves"
    sparks = {ln.rsplit(" ", 1)[1] for ln in live}
    assert len(sparks) >= 2 and all(set(s) <= set(SPARK) for s in sparks), sparks
    assert "sleeps between publishes" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ping-pong"))
    assert "us blocking" in line and "us spinning" in line
    assert "torn snapshots: 0" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("stream "))
    m = re.search(r"they took (\d+) = (\d+)\) and a monitor reading every job \((\d+)\)", line)
    assert m and m.group(1) == m.group(2) == m.group(3) == "20000", line  # one worker: all
    assert line.endswith("out of order 0, corrupt 0, lost 0"), line


def test_demo_json_has_the_pingpong_and_the_stream() -> None:
    r = run("demo", "--seconds", "0.5", "--consumers", "2", "--json")
    assert r.returncode == 0, r.stderr
    fig = json.loads(r.stdout)
    pp = fig["pingpong_one_way_us"]
    assert pp["blocking_us"] > 0 and pp["spinning_us"] > 0
    st = fig["stream"]
    workers = [x for x in st["readers"] if x["reader"].startswith("worker")]
    (monitor,) = [x for x in st["readers"] if x["reader"].startswith("monitor")]
    assert len(workers) == 2 and sum(w["jobs"] for w in workers) == st["jobs"] == monitor["jobs"]
    assert fig["stream_errors"] == 0
    assert st["group"] == {"received": st["jobs"] + 2, "lost": 0, "skipped": 0}  # + the stops


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gxx = shutil.which("g++")
    assert gxx, "g++ is needed (make test installs it)"
    exe = tmp_path_factory.mktemp("examples") / "xshm_consumer"
    cmd = [gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{xshm.get_include()}"]
    subprocess.run([*cmd, str(EXAMPLES / "consumer.cpp"), "-o", str(exe), "-pthread"], check=True)
    return exe


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "uint8"])
def test_cpp_consumer_reads_the_segments_dtype(consumer: Path, seg_name: str, dtype: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(40,), dtype=dtype) as m:
        p = subprocess.Popen(
            [str(consumer), seg_name, "30", "20"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.3)  # let it attach: it counts the publishes after it opened
        for k in range(1, 21):
            m.publish(values=wave(k, 40).astype(dtype), message=f"tick {k}", counter=k)
            time.sleep(0.005)
        out, _ = p.communicate(timeout=60)
    fig = json.loads(out)
    assert p.returncode == 0 and fig["dtype"] == dtype and fig["torn"] == 0
    assert fig["updates"] > 0


def test_cpp_consumer_refuses_a_dtype_it_does_not_handle(consumer: Path, seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(4,), dtype="complex64"):
        r = subprocess.run([str(consumer), seg_name, "5"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert "complex64" in r.stderr and "float64, float32" in r.stderr


def test_cpp_consumer_counts_a_wrong_record_as_torn(consumer: Path, seg_name: str) -> None:
    """The negative control: a record that is not the demo's record k is reported."""
    with xshm.SharedMemoryManager.create(seg_name, shape=(40,)) as m:
        p = subprocess.Popen(
            [str(consumer), seg_name, "30", "3"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.3)
        for k in range(1, 4):
            m.publish(values=wave(k + 1, 40).astype("float64"), message=f"tick {k}", counter=k)
            time.sleep(0.005)
        out, _ = p.communicate(timeout=60)
    fig = json.loads(out)
    assert p.returncode == 1 and fig["torn"] == fig["updates"] > 0
