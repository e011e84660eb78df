"""xshm_text (the Rust crate's Python module), the C ABI through ctypes, and the vectors
shared with the C++ header and the Rust tests."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import xshm
import xshm_text

ROOT = Path(__file__).resolve().parents[2]


def _vectors() -> list[tuple[str, bytes, int, int]]:
    rows = []
    for line in (ROOT / "tests" / "vectors" / "utf8.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        kind, hexed, n, expected = line.split("\t")
        data = b"" if hexed == "-" else bytes.fromhex(hexed)
        rows.append((kind, data, -1 if n == "-" else int(n), int(expected)))
    return rows


VECTORS = _vectors()


@pytest.mark.parametrize(("kind", "data", "n", "expected"), VECTORS)
def test_shared_vectors(kind: str, data: bytes, n: int, expected: int) -> None:
    if kind == "cut":
        assert len(xshm_text.cut(data, n)) == expected
        if expected == len(data) or data[:expected].decode("utf-8", "strict") is not None:
            assert xshm_text.cut_str(data.decode(), n).encode() == data[:expected]
    else:
        assert xshm_text.valid_up_to(data) == (len(data) if expected < 0 else expected)
        if expected < 0:
            assert xshm_text.validate(data) is None
        else:
            with pytest.raises(UnicodeDecodeError) as info:
                xshm_text.validate(data)
            assert info.value.start == expected


def test_reexported_as_xshm_text() -> None:
    assert xshm.text is xshm_text
    assert xshm_text.__version__ == xshm.__version__, "one version for both packages"


def test_utf16_round_trip_and_errors() -> None:
    assert xshm_text.encode_utf16("a😀") == "a😀".encode("utf-16-le")
    assert xshm_text.decode_utf16("a😀".encode("utf-16-le")) == "a😀"
    with pytest.raises(ValueError, match="surrogate"):
        xshm_text.decode_utf16(b"\x00\xd8")
    with pytest.raises(ValueError, match="odd"):
        xshm_text.decode_utf16(b"abc")


def test_decode_lossy_matches_python_replace() -> None:
    for raw in (b"ok\xffno", b"\xe2\x82", b"\xed\xa0\x80x", b""):
        assert xshm_text.decode_lossy(raw) == raw.decode("utf-8", "replace")


def _cdylib(skip_or_fail: Callable[[str], None]) -> ctypes.CDLL:
    path = os.environ.get("XSHM_TEXT_CDYLIB") or str(
        ROOT / "rust" / "target" / "release" / "libxshm_text.so"
    )
    if not os.path.exists(path):
        skip_or_fail(f"the C library {path} is not built (cargo build --release -p xshm-text)")
    lib = ctypes.CDLL(path)
    lib.xshm_text_cut.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.xshm_text_validate.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.xshm_text_decode_lossy.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.xshm_text_free.argtypes = [ctypes.c_void_p]
    for f in (lib.xshm_text_cut, lib.xshm_text_validate, lib.xshm_text_decode_lossy):
        f.restype = ctypes.c_int
    return lib


def test_c_abi_through_ctypes(skip_or_fail: Callable[[str], None]) -> None:
    lib = _cdylib(skip_or_fail)
    n = ctypes.c_size_t()
    for kind, data, limit, expected in VECTORS:
        if kind == "cut":
            assert lib.xshm_text_cut(data, len(data), limit, ctypes.byref(n)) == 0
            assert n.value == expected
        else:
            status = lib.xshm_text_validate(data, len(data), ctypes.byref(n))
            assert status == (0 if expected < 0 else -2)
            if expected >= 0:
                assert n.value == expected
    out = ctypes.c_void_p()
    assert lib.xshm_text_decode_lossy(b"a\xffb", 3, ctypes.byref(out), ctypes.byref(n)) == 0
    assert ctypes.string_at(out.value, n.value) == "a\ufffdb".encode()
    lib.xshm_text_free(out)
    lib.xshm_text_free(None)
    assert lib.xshm_text_cut(None, 5, 1, ctypes.byref(n)) == -1, "NULL input is an error"
    assert lib.xshm_text_decode_lossy(b"x", 1, None, ctypes.byref(n)) == -1
