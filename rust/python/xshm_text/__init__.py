"""xshm-text: UTF-8/UTF-16 helpers for xshm message slots, implemented in Rust.

>>> import xshm_text
>>> xshm_text.cut_str("a😀b", 4)
'a'
>>> xshm_text.valid_up_to(b"ok\\xffno")
2
>>> xshm_text.validate(b"ok\\xffno")
Traceback (most recent call last):
  ...
UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 2: invalid UTF-8 sequence
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
    valid_up_to,
    validate,
)

__all__ = [
    "__version__",
    "cut",
    "cut_str",
    "decode_lossy",
    "decode_utf16",
    "encode_utf16",
    "valid_up_to",
    "validate",
]
