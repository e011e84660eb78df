"""C++ and Python on one segment: the C++ examples are compiled here against the header the
installed package ships (xshm.get_include()), with -Wall -Wextra -Werror, and run against
Python producers and consumers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_cpp_producer_python_consumer(cpp_bin: Path, seg_name: str) -> None:
    prod = subprocess.Popen([str(cpp_bin / "producer"), seg_name, "400", "2000"])
    try:
        with xshm.SharedMemoryManager.open(seg_name, readonly=True, timeout=10) as m:
            assert m.shape == (100,)
            seq, seen = 0, 0
            while True:
                seq = m.wait(seq, timeout=10)
                snap = m.read()
                seen += 1
                assert (snap.values == snap.counter).all()
                assert snap.message == f"tick {snap.counter}"
                assert snap.writer_pid == prod.pid
                if snap.counter == 400:
                    break
        assert seen > 5
    finally:
        assert prod.wait(timeout=30) == 0


def test_python_producer_cpp_consumer(cpp_bin: Path, seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        cons = subprocess.Popen(
            [str(cpp_bin / "consumer"), seg_name, "20", "300"], stdout=subprocess.PIPE, text=True
        )
        for k in range(1, 301):
            m.publish(values=np.full(100, float(k)), message=f"tick {k}", counter=k)
            if k % 50 == 0:
                subprocess.run([sys.executable, "-c", "pass"], check=True)  # let it catch up
        out, _ = cons.communicate(timeout=60)
        assert cons.returncode == 0, out
        figures = json.loads(out)
        assert figures["torn"] == 0
        assert figures["updates"] >= 1


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
