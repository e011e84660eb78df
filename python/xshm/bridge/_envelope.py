"""The bridge's envelope, version 1: the bytes xshm adds around what it carries over an engine.

``docs/BRIDGE.md`` specifies it byte by byte. Everything here reads untrusted bytes: every
length is checked against the payload before it is used, every field against its range, and
anything else is an :class:`EnvelopeError` naming the problem (the bridge counts and drops it).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ..errors import ArgumentError, XshmError

__all__ = [
    "HEADER",
    "KIND_ACK",
    "KIND_BATCH",
    "KIND_LAYOUT",
    "KIND_RECORD",
    "MAGIC",
    "NO_SEQ",
    "VERSION",
    "Ack",
    "Batch",
    "EnvelopeError",
    "Layout",
    "LayoutEnvelope",
    "RecordEnvelope",
    "check_fits",
    "decode",
    "encode_ack",
    "encode_batch",
    "encode_layout",
    "encode_record",
]

MAGIC = b"xshb"
VERSION = 1
KIND_LAYOUT = 1
KIND_RECORD = 2
KIND_BATCH = 3
KIND_ACK = 4
NO_SEQ = (1 << 64) - 1  # an ack's next_seq before the mirror committed anything

# magic, version, kind, flags, layout_hash, epoch, body_len, reserved: 32 bytes.
HEADER = struct.Struct("<4sBBHQQII")
_LAYOUT_FIXED = struct.Struct("<BBBBIII")  # kind, dtype, ndim, backpressure, size, capacity, 0
_SOURCE = struct.Struct("<HHI")  # host_len, name_len, pid
_RECORD = struct.Struct("<QQQII")  # seq, timestamp_ns, counter, writer_pid, message_len
_BATCH = struct.Struct("<IIQ")  # count, reserved, base
_ENTRY = struct.Struct("<QQII")  # seq, timestamp_ns, writer_pid, len
_ACK = struct.Struct("<QII16s")  # next_seq, window, reserved, mirror_id
_ONE = struct.Struct("<4sBBHQQIIIIQQQII")  # the header, a batch of one and its entry

# docs/LAYOUT.md 5.1: the dtype codes, shared with the segments.
_DTYPES = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
_CODE = {name: code for code, name in enumerate(_DTYPES, start=1)}
_BACKPRESSURE = ("block", "drop_oldest")
MAX_NDIM = 8
MAX_TEXT = 255  # bytes of a host or segment name in a layout envelope
MAX_VALUES_BYTES = 1 << 40  # docs/LAYOUT.md section 3: a record's values, a frame
MAX_MESSAGE_CAPACITY = 1 << 24
MAX_STREAM = 1 << 30  # a stream's capacity and max_bytes (LAYOUT.md 18)


class EnvelopeError(XshmError, ValueError):
    """Bytes received from an engine that are not a valid xshm envelope (version 1), or that do
    not fit the layout they name. The bridge counts and drops such a message."""


@dataclass(frozen=True)
class Layout:
    """What a mirror needs to make the local segment: the source's geometry.

    ``kind`` is ``"record"`` or ``"stream"``. A record has ``dtype``, ``shape`` and
    ``message_capacity``; a stream has ``capacity``, ``max_bytes`` and ``backpressure``, and a
    ``dtype`` and ``shape`` when it carries frames (``dtype`` None: bytes).
    """

    kind: str
    dtype: Optional[np.dtype[Any]]
    shape: tuple[int, ...]
    message_capacity: int = 0
    capacity: int = 0
    max_bytes: int = 0
    backpressure: str = "block"

    @property
    def values_nbytes(self) -> int:
        """Bytes of a record's values (or of one frame)."""
        if self.dtype is None:
            return 0
        return int(self.dtype.itemsize) * math.prod(self.shape)

    @property
    def reserve_nbytes(self) -> int:
        """What a mirror of this layout reserves, from above: a record's two slots (values,
        message, meta) and header page; a stream's slots (each message rounded up with its
        64-byte slot header) and header pages. Compared with the mirror's cap before anything
        is made."""
        if self.kind == "record":
            slot = _round_up(self.values_nbytes, 64) + _round_up(self.message_capacity, 64) + 64
            return 2 * slot + 8192
        return self.capacity * (_round_up(self.max_bytes, 64) + 64) + 16384

    def fixed_bytes(self) -> bytes:
        """The layout's own bytes (the part of a layout envelope its hash covers)."""
        code = 0 if self.dtype is None else _CODE[self.dtype.name]
        bp = 0 if self.kind == "record" else _BACKPRESSURE.index(self.backpressure) + 1
        if self.kind == "record":
            size, capacity = self.message_capacity, 0
        else:
            size, capacity = self.max_bytes, self.capacity
        kind = 1 if self.kind == "record" else 2
        head = _LAYOUT_FIXED.pack(kind, code, len(self.shape), bp, size, capacity, 0)
        return head + struct.pack(f"<{len(self.shape)}Q", *self.shape)

    def hash(self) -> int:
        """The layout hash every data envelope names: BLAKE2b, 8-byte digest, of
        :meth:`fixed_bytes`, read as a little-endian u64."""
        return _hash(self.fixed_bytes())

    def describe(self) -> str:
        """One line for messages: ``record float64[3], message 256 B``."""
        geometry = "bytes" if self.dtype is None else f"{self.dtype.name}{list(self.shape)}"
        if self.kind == "record":
            return f"record {geometry}, message {self.message_capacity} B"
        return (
            f"stream of {geometry}, capacity {self.capacity}, max_bytes {self.max_bytes}, "
            f"{self.backpressure}"
        )

    @staticmethod
    def of_record(dtype: Any, shape: tuple[int, ...], message_capacity: int) -> Layout:
        return Layout("record", np.dtype(dtype), tuple(shape), message_capacity=message_capacity)

    @staticmethod
    def of_stream(
        capacity: int,
        max_bytes: int,
        backpressure: str,
        dtype: Any = None,
        shape: Optional[tuple[int, ...]] = None,
    ) -> Layout:
        return Layout(
            "stream",
            None if dtype is None else np.dtype(dtype),
            () if shape is None else tuple(shape),
            capacity=capacity,
            max_bytes=max_bytes,
            backpressure=backpressure,
        )


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass(frozen=True)
class LayoutEnvelope:
    """A decoded layout envelope: the layout, and who sends it."""

    layout: Layout
    layout_hash: int
    epoch: int
    host: str
    name: str
    pid: int


@dataclass(frozen=True)
class RecordEnvelope:
    """A decoded record envelope. ``message`` and ``values`` are views of the payload: their
    sizes are checked against the layout the envelope names by :meth:`check`."""

    layout_hash: int
    epoch: int
    seq: int
    timestamp_ns: int
    counter: int
    writer_pid: int
    message: memoryview
    values: memoryview

    def check(self, layout: Layout) -> None:
        """Refuse a record that does not fit ``layout`` (the caller checked the hash)."""
        if len(self.message) > layout.message_capacity:
            raise EnvelopeError(
                f"record message of {len(self.message)} bytes exceeds the layout's "
                f"{layout.message_capacity}"
            )
        if len(self.values) != layout.values_nbytes:
            raise EnvelopeError(
                f"record values of {len(self.values)} bytes, the layout's are "
                f"{layout.values_nbytes}"
            )
        try:
            str(self.message, "utf-8")
        except UnicodeDecodeError as e:
            raise EnvelopeError(f"record message is not UTF-8 at byte {e.start}") from None


@dataclass(frozen=True)
class Batch:
    """A decoded batch of stream messages, in increasing sequence: parallel lists."""

    layout_hash: int
    epoch: int
    seqs: list[int]
    timestamps_ns: list[int]
    writer_pids: list[int]
    data: list[memoryview]
    base: int = 0  # the oldest sequence the export can still send: what is below it is gone

    def check(self, layout: Layout) -> None:
        """Refuse a batch that does not fit ``layout``: a message longer than ``max_bytes``, or
        a frame of another size than the layout's frames."""
        frame = layout.values_nbytes if layout.dtype is not None else None
        for seq, d in zip(self.seqs, self.data):
            n = len(d)
            if n > layout.max_bytes or (frame is not None and n != frame):
                want = f"{frame}" if frame is not None else f"at most {layout.max_bytes}"
                raise EnvelopeError(f"stream message {seq} has {n} bytes, the layout's {want}")


@dataclass(frozen=True)
class Ack:
    """A stream mirror's acknowledgement: it committed every message before ``next_seq``
    (``NO_SEQ``: nothing yet) and can take ``window`` more."""

    layout_hash: int
    epoch: int
    next_seq: int
    window: int
    mirror_id: bytes


def encode_ack(layout_hash: int, epoch: int, next_seq: int, window: int, mirror_id: bytes) -> bytes:
    """An ack envelope (a stream mirror to its export, on ``<key>/@ack``)."""
    body = _ACK.pack(next_seq, window, 0, mirror_id)
    return _header(KIND_ACK, layout_hash, epoch, len(body)) + body


def _decode_ack(body: memoryview, layout_hash: int, epoch: int) -> Ack:
    if len(body) != _ACK.size:
        raise EnvelopeError(f"ack envelope of {len(body)} bytes, not {_ACK.size}")
    next_seq, window, reserved, mirror_id = _ACK.unpack_from(body)
    if reserved != 0:
        raise EnvelopeError("reserved ack field is not zero")
    if window < 1:
        raise EnvelopeError("ack window 0")
    return Ack(layout_hash, epoch, next_seq, window, bytes(mirror_id))


def check_fits(envelope: Union[RecordEnvelope, Batch], layout: Layout) -> None:
    """Refuse a data envelope that does not fit ``layout``: a record for a stream's layout, a
    batch for a record's, or sizes the layout does not allow (the caller checked the hash)."""
    if isinstance(envelope, RecordEnvelope) != (layout.kind == "record"):
        what = "record" if isinstance(envelope, RecordEnvelope) else "batch"
        raise EnvelopeError(f"a {what} envelope for a {layout.kind}'s layout")
    envelope.check(layout)


def _header(kind: int, layout_hash: int, epoch: int, body_len: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, 0, layout_hash, epoch, body_len, 0)


def encode_layout(layout: Layout, epoch: int, host: str, name: str, pid: int) -> bytes:
    """A layout envelope: the layout's bytes, then the source (host, segment name, pid)."""
    fixed = layout.fixed_bytes()
    h, n = _text(host, "host"), _text(name, "name")
    body = fixed + _SOURCE.pack(len(h), len(n), pid) + h + n
    return _header(KIND_LAYOUT, _hash(fixed), epoch, len(body)) + body


def _text(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > MAX_TEXT:
        raise ArgumentError(f"the {what} {s!r} is longer than {MAX_TEXT} bytes")
    return b


def encode_record(
    layout_hash: int,
    epoch: int,
    seq: int,
    timestamp_ns: int,
    counter: int,
    writer_pid: int,
    message: bytes,
    values: Union[bytes, memoryview],
) -> bytes:
    """A record envelope: the record's meta words, its message, then its values' bytes."""
    body_len = _RECORD.size + len(message) + len(values)
    meta = _RECORD.pack(seq, timestamp_ns, counter, writer_pid, len(message))
    return b"".join((_header(KIND_RECORD, layout_hash, epoch, body_len), meta, message, values))


def encode_batch(
    layout_hash: int,
    epoch: int,
    messages: list[tuple[int, int, int, Any]],
    base: Optional[int] = None,
) -> bytes:
    """A batch envelope of ``(seq, timestamp_ns, writer_pid, data)`` in increasing seq;
    ``base`` (the first message's seq unless given) is the oldest sequence the export can
    still send."""
    first = messages[0][0] if messages else 0
    parts: list[Any] = [b"", _BATCH.pack(len(messages), 0, first if base is None else base)]
    body_len = _BATCH.size
    pack = _ENTRY.pack
    for seq, ts, pid, data in messages:
        if type(data) is bytes:
            n = len(data)
        else:  # a frame (an array) or another buffer: its bytes
            data = memoryview(data).cast("B")
            n = data.nbytes
        parts.append(pack(seq, ts, pid, n))
        parts.append(data)
        body_len += _ENTRY.size + n
    parts[0] = _header(KIND_BATCH, layout_hash, epoch, body_len)
    return b"".join(parts)


def encode_one(
    layout_hash: int, epoch: int, seq: int, timestamp_ns: int, pid: int, data: Any
) -> bytes:
    """A batch envelope of exactly one message, as :func:`encode_batch` makes it (its base the
    message's seq), in one pack: the Redis engine's one entry per message."""
    if type(data) is not bytes:
        data = memoryview(data).cast("B")
    n = len(data)
    head = _ONE.pack(
        MAGIC, VERSION, KIND_BATCH, 0, layout_hash, epoch, _ONE.size - HEADER.size + n, 0,
        1, 0, seq, seq, timestamp_ns, pid, n,
    )  # fmt: skip
    return head + data if type(data) is bytes else b"".join((head, data))


def decode_one(payload: bytes) -> Optional[tuple[int, int, int, int, int, memoryview]]:
    """The fast path of :func:`decode` for a batch of exactly one message (what the Redis
    engine adds per entry): ``(layout_hash, epoch, seq, timestamp_ns, writer_pid, data)``,
    checked as :func:`decode` checks it; None when ``payload`` is anything else (then
    :func:`decode` says what it is, or what is wrong with it)."""
    if len(payload) < _ONE.size:
        return None
    (magic, version, kind, flags, layout_hash, epoch, body_len, reserved, count, b_reserved,
     base, seq, ts, pid, n) = _ONE.unpack_from(payload)  # fmt: skip
    size = len(payload)
    if (
        magic != MAGIC
        or version != VERSION
        or kind != KIND_BATCH
        or flags
        or reserved
        or b_reserved
        or epoch == 0
        or count != 1
        or base > seq
        or body_len != size - HEADER.size
        or n != size - _ONE.size
    ):
        return None
    return layout_hash, epoch, seq, ts, pid, memoryview(payload)[_ONE.size :]


def decode(
    payload: Union[bytes, memoryview],
) -> Union[LayoutEnvelope, RecordEnvelope, Batch, Ack]:
    """Decode one envelope, checking everything that does not need the layout it names."""
    buf = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    if len(buf) < HEADER.size:
        raise EnvelopeError(f"{len(buf)} bytes: shorter than the {HEADER.size}-byte header")
    magic, version, kind, flags, layout_hash, epoch, body_len, reserved = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise EnvelopeError(f"not an xshm envelope (magic {bytes(magic)!r})")
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version}; this bridge reads version {VERSION}")
    if flags != 0 or reserved != 0:
        raise EnvelopeError("reserved header fields are not zero")
    if epoch == 0:
        raise EnvelopeError("epoch 0 (an export's epoch is never 0)")
    if body_len != len(buf) - HEADER.size:
        raise EnvelopeError(
            f"header says {body_len} body bytes, the payload has {len(buf) - HEADER.size}"
        )
    body = buf[HEADER.size :]
    if kind == KIND_LAYOUT:
        return _decode_layout(body, layout_hash, epoch)
    if kind == KIND_RECORD:
        return _decode_record(body, layout_hash, epoch)
    if kind == KIND_BATCH:
        return _decode_batch(body, layout_hash, epoch)
    if kind == KIND_ACK:
        return _decode_ack(body, layout_hash, epoch)
    raise EnvelopeError(f"unknown envelope kind {kind}")


def _decode_layout(body: memoryview, layout_hash: int, epoch: int) -> LayoutEnvelope:
    if len(body) < _LAYOUT_FIXED.size:
        raise EnvelopeError("layout envelope too short")
    kind, code, ndim, bp, size, capacity, reserved = _LAYOUT_FIXED.unpack_from(body)
    if kind not in (1, 2):
        raise EnvelopeError(f"layout of unknown kind {kind}")
    if reserved != 0:
        raise EnvelopeError("reserved layout field is not zero")
    if ndim > MAX_NDIM:
        raise EnvelopeError(f"layout ndim {ndim} exceeds {MAX_NDIM}")
    if code > len(_DTYPES) or (code == 0 and kind == 1):
        raise EnvelopeError(f"layout dtype code {code} is not one of 1..{len(_DTYPES)}")
    end = _LAYOUT_FIXED.size + 8 * ndim
    if len(body) < end + _SOURCE.size:
        raise EnvelopeError("layout envelope too short for its shape and source")
    shape = struct.unpack_from(f"<{ndim}Q", body, _LAYOUT_FIXED.size)
    dtype = None if code == 0 else np.dtype(_DTYPES[code - 1])
    if dtype is None and ndim:
        raise EnvelopeError("a byte stream's layout has no shape")
    nbytes = (0 if dtype is None else dtype.itemsize) * math.prod(shape)
    if nbytes > MAX_VALUES_BYTES:
        raise EnvelopeError(f"layout of {nbytes} bytes of values, over 2**40")
    if kind == 1:
        if bp != 0 or capacity != 0:
            raise EnvelopeError("a record layout has no capacity or backpressure")
        if size > MAX_MESSAGE_CAPACITY:
            raise EnvelopeError(f"record message_capacity {size} over 2**24")
        layout = Layout("record", dtype, shape, message_capacity=size)
    else:
        if bp not in (1, 2):
            raise EnvelopeError(f"stream backpressure code {bp} is not 1 or 2")
        if not (1 <= capacity <= MAX_STREAM and 1 <= size <= MAX_STREAM):
            raise EnvelopeError("a stream layout's capacity and max_bytes are 1 to 2**30")
        if dtype is not None and size != nbytes:
            raise EnvelopeError(f"a frame stream's max_bytes {size} is not its frame's {nbytes}")
        layout = Layout(
            "stream", dtype, shape, capacity=capacity, max_bytes=size,
            backpressure=_BACKPRESSURE[bp - 1],
        )  # fmt: skip
    if _hash(bytes(body[:end])) != layout_hash:
        raise EnvelopeError("layout hash does not match the layout's bytes")
    host_len, name_len, pid = _SOURCE.unpack_from(body, end)
    start = end + _SOURCE.size
    if host_len > MAX_TEXT or name_len > MAX_TEXT:
        raise EnvelopeError(f"layout envelope's host or name is over {MAX_TEXT} bytes")
    if len(body) != start + host_len + name_len:
        raise EnvelopeError("layout envelope's source does not fill it exactly")
    try:
        host = str(body[start : start + host_len], "utf-8")
        name = str(body[start + host_len :], "utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("layout envelope's host or name is not UTF-8") from None
    return LayoutEnvelope(layout, layout_hash, epoch, host, name, pid)


def _decode_record(body: memoryview, layout_hash: int, epoch: int) -> RecordEnvelope:
    if len(body) < _RECORD.size:
        raise EnvelopeError("record envelope too short")
    seq, ts, counter, pid, message_len = _RECORD.unpack_from(body)
    if seq == 0:
        raise EnvelopeError("record sequence 0 (a published record's is at least 1)")
    end = _RECORD.size + message_len
    if end > len(body):
        raise EnvelopeError(f"record message of {message_len} bytes overruns the payload")
    return RecordEnvelope(
        layout_hash, epoch, seq, ts, counter, pid, body[_RECORD.size : end], body[end:]
    )


def _decode_batch(body: memoryview, layout_hash: int, epoch: int) -> Batch:
    if len(body) < _BATCH.size:
        raise EnvelopeError("batch envelope too short")
    count, reserved, base = _BATCH.unpack_from(body)
    if reserved != 0:
        raise EnvelopeError("reserved batch field is not zero")
    if count == 0 or count > (len(body) - _BATCH.size) // _ENTRY.size:
        raise EnvelopeError(f"batch of {count} messages cannot fit {len(body)} bytes")
    seqs: list[int] = []
    stamps: list[int] = []
    pids: list[int] = []
    data: list[memoryview] = []
    off = _BATCH.size
    unpack = _ENTRY.unpack_from
    size = _ENTRY.size
    last = -1
    total = len(body)
    for _ in range(count):
        if off + size > total:
            raise EnvelopeError("batch entry overruns the payload")
        seq, ts, pid, n = unpack(body, off)
        off += size
        if off + n > total:
            raise EnvelopeError(f"batch message {seq} of {n} bytes overruns the payload")
        if seq <= last:
            raise EnvelopeError(f"batch sequence {seq} does not increase")
        last = seq
        seqs.append(seq)
        stamps.append(ts)
        pids.append(pid)
        data.append(body[off : off + n])
        off += n
    if off != total:
        raise EnvelopeError(f"{total - off} bytes after the batch's last message")
    if base > seqs[0]:
        raise EnvelopeError(f"batch base {base} is past its first message {seqs[0]}")
    return Batch(layout_hash, epoch, seqs, stamps, pids, data, base)
