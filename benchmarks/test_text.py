"""xshm_text against the pure-Python equivalent, in one run: cutting a message to fit its slot
on a code-point boundary, and finding where a foreign writer's invalid bytes start."""

from __future__ import annotations

from typing import Any

import pytest
import xshm_text

TEXT = "Größenmessung: 温度 23.5 °C, humidité 41 % — ok " * 6  # ~330 bytes of mixed UTF-8
CAP = 256
INVALID = TEXT.encode()[:200] + b"\xff" + TEXT.encode()[200:256]


def py_cut_str(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    n = max_bytes
    while n > 0 and (data[n] & 0xC0) == 0x80:
        n -= 1
    return data[:n].decode()


def py_valid_up_to(data: bytes) -> int:
    try:
        data.decode()
    except UnicodeDecodeError as e:
        return e.start
    return len(data)


@pytest.mark.benchmark(group="text-cut")
def test_cut_xshm_text(benchmark: Any) -> None:
    assert benchmark(xshm_text.cut_str, TEXT, CAP) == py_cut_str(TEXT, CAP)


@pytest.mark.benchmark(group="text-cut")
def test_cut_python(benchmark: Any) -> None:
    assert len(benchmark(py_cut_str, TEXT, CAP).encode()) <= CAP


@pytest.mark.benchmark(group="text-validate")
def test_validate_xshm_text(benchmark: Any) -> None:
    assert benchmark(xshm_text.valid_up_to, INVALID) == 200


@pytest.mark.benchmark(group="text-validate")
def test_validate_python(benchmark: Any) -> None:
    assert benchmark(py_valid_up_to, INVALID) == 200
