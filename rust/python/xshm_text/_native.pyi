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

__version__: str

def cut(data: bytes, max_bytes: int) -> bytes:
    """Cut bytes to at most ``max_bytes`` without splitting a UTF-8 sequence."""

def cut_str(text: str, max_bytes: int) -> str:
    """Cut a str so its UTF-8 encoding is at most ``max_bytes``, on a code-point boundary."""

def validate(data: bytes) -> None:
    """Check that ``data`` is valid UTF-8: returns None, or raises ``UnicodeDecodeError`` whose
    ``start`` is the offset of the first invalid sequence (as ``bytes.decode("utf-8")``)."""

def valid_up_to(data: bytes) -> int:
    """Length of the longest valid UTF-8 prefix of ``data``: ``len(data)`` exactly when it is
    valid. A length, not a verdict: compare it with ``len(data)``."""

def decode_lossy(data: bytes) -> str:
    """Decode UTF-8, replacing each invalid sequence with U+FFFD."""

def encode_utf16(text: str) -> bytes:
    """Encode a str as UTF-16LE bytes (for JVM/.NET peers)."""

def decode_utf16(data: bytes) -> str:
    """Decode UTF-16LE bytes; ValueError for an odd length or an unpaired surrogate."""
