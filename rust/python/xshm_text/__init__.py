"""xshm-text: UTF-8/UTF-16 helpers for xshm message slots, implemented in Rust.

>>> import xshm_text
>>> xshm_text.cut_str("a😀b", 4)
'a'
>>> xshm_text.validate(b"ok\\xffno")
2
>>> xshm_text.decode_lossy(b"ok\\xff")
'ok\\ufffd'
"""

from __future__ import annotations

from ._native import (
    __version__,
    cut,
    cut_str,
    decode_lossy,
    decode_utf16,
    encode_utf16,
    validate,
)

__all__ = [
    "__version__",
    "cut",
    "cut_str",
    "decode_lossy",
    "decode_utf16",
    "encode_utf16",
    "validate",
]
