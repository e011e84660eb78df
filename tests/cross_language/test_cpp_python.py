"""C++ and Python on one segment: the C++ examples are compiled here against the header the
installed package ships (xshm.get_include()), with -Wall -Wextra -Werror, and run against
Python producers and consumers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xshm

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cpp_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = os.environ.get("CXX", "g++")
    assert shutil.which(cxx), f"{cxx} is needed for the cross-language tests"
    out = tmp_path_factory.mktemp("cpp")
    sources = {
        "producer": ROOT / "cpp" / "examples" / "producer.cpp",
        "consumer": ROOT / "cpp" / "examples" / "consumer.cpp",
        "invalid_writer": Path(__file__).with_name("invalid_writer.cpp"),
    }
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]
    for exe, src in sources.items():
        cmd = [cxx, *flags, "-I", xshm.get_include(), str(src), "-o", str(out / exe)]
        subprocess.run(cmd, check=True)
    return out


def wave(k: int, count: int = 100) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Record k's values in the C++ examples (producer.cpp writes them, consumer.cpp checks
    them): v[i] = |(i + k) % 32 - 16|, a wave moving one step per publish."""
    i = np.arange(count)
    return np.abs((i + k) % 32 - 16).astype(np.float64)


def test_cpp_producer_python_consumer(cpp_bin: Path, seg_name: str) -> None:
    prod = subprocess.Popen([str(cpp_bin / "producer"), seg_name, "400", "2000"])
    try:
        with xshm.SharedMemoryManager.open(seg_name, readonly=True, timeout=10) as m:
            assert m.shape == (100,) and m.dtype == np.float64
            seq, last, seen = 0, 0, 0
            while True:
                seq = m.wait(seq, timeout=10)
                snap = m.read()
                k = snap.counter
                assert last < k <= 400, f"record {k} after record {last}"
                assert snap.seq == k, "record k is the k-th publish into a fresh segment"
                np.testing.assert_array_equal(snap.values, wave(k), err_msg=f"record {k}")
                assert snap.message == f"tick {k}"
                assert snap.writer_pid == prod.pid
                seen, last = seen + 1, k
                if k == 400:
                    break
        assert seen > 5
    finally:
        assert prod.wait(timeout=30) == 0


def _run_cpp_consumer(
    cpp_bin: Path, m: xshm.SharedMemoryManager, last: int, message: Callable[[int], str]
) -> tuple[int, dict[str, Any]]:
    """Runs consumer.cpp until it sees counter `last`; publishes records 1..last (values
    wave(k), the message given) and then record `last` again until the consumer has ended: it
    counts only the publishes after it opened, so it cannot miss the end however late it starts."""
    cons = subprocess.Popen(
        [str(cpp_bin / "consumer"), m.name.lstrip("/"), "30", str(last)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for k in range(1, last + 1):
            m.publish(values=wave(k), message=message(k), counter=k)
        watchdog = time.monotonic() + 60
        while cons.poll() is None and time.monotonic() < watchdog:
            m.publish(values=wave(last), message=message(last), counter=last)
            time.sleep(0.01)
        out, _ = cons.communicate(timeout=60)
    finally:
        if cons.poll() is None:
            cons.kill()
            cons.wait()
    return cons.returncode, json.loads(out)


def test_python_producer_cpp_consumer(cpp_bin: Path, seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        code, figures = _run_cpp_consumer(cpp_bin, m, 300, lambda k: f"tick {k}")
    assert code == 0, figures
    assert figures["dtype"] == "float64"
    assert figures["torn"] == 0
    assert figures["updates"] >= 1


def test_cpp_consumer_checks_the_message_of_record_k(cpp_bin: Path, seg_name: str) -> None:
    """The negative control: the right wave under another record's message is not record k."""
    with xshm.SharedMemoryManager.create(seg_name) as m:
        code, figures = _run_cpp_consumer(cpp_bin, m, 50, lambda k: f"tick {k + 1}")
    assert code == 1, figures
    assert figures["torn"] == figures["updates"] >= 1


def test_cpp_writer_python_reader_exist_ok_layout_mismatch(cpp_bin: Path, seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name, shape=(7,)):
        r = subprocess.run(
            [str(cpp_bin / "producer"), seg_name, "1", "0"], capture_output=True, text=True
        )
        assert r.returncode == 1
        assert "another layout" in r.stderr


def test_cpp_writes_invalid_utf8_python_reads_under_both_policies(
    cpp_bin: Path, seg_name: str
) -> None:
    with xshm.SharedMemoryManager.create(seg_name, message_capacity=16) as m:
        subprocess.run([str(cpp_bin / "invalid_writer"), seg_name], check=True)
        assert m.errors == "replace"
        assert m.read().message == "ok\ufffdno"
        with xshm.SharedMemoryManager.open(seg_name, readonly=True, errors="strict") as strict:
            with pytest.raises(xshm.MessageDecodeError, match="offset 2") as info:
                strict.read()
            assert info.value.offset == 2
            assert info.value.raw == b"ok\xffno"
            assert isinstance(info.value, ValueError)
        with pytest.raises(ValueError, match="errors must be"):
            xshm.SharedMemoryManager.open(seg_name, errors="ignore")
