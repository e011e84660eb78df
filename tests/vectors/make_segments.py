"""Regenerates the golden segment vectors (tests/vectors/*.seg) and their manifest
(tests/vectors/segments.tsv) from the real implementation, and the golden streams
(tests/vectors/streams/*.seg, streams/streams.tsv) from docs/LAYOUT.md Part II alone (see
"Streams" below: no xshm call makes them).

Each valid vector is a segment the installed ``xshm`` package created and published; the states
no API call leaves behind (a writer that died mid-write, in the backup refresh, or before it
published ``seq``) are made by poking the bytes docs/LAYOUT.md describes, after a child process
took the writer mutex and died holding it (so glibc's futex word carries FUTEX_OWNER_DIED, as a
real crash leaves it). The corrupt vectors are a valid one with one field broken.

Every non-deterministic byte is normalised, so a run reproduces the committed files byte for
byte (tests/unit/test_vectors.py checks that): creation_id, created_ns, the records'
timestamps, and every pid (creator, writers, owner, the mutex's owner TID) become
``DEAD_PID``, above the kernel's largest pid_max (2^22), so no process can have it; the robust
list pointers in the mutex (addresses in the dead owner's memory) become 0.

Usage: python tests/vectors/make_segments.py [OUT_DIR]   (default: this directory). Linux on
x86-64 with glibc only: the mutex bytes are glibc's x86-64 pthread_mutex_t (the streams'
are written as such, anywhere: write_streams(OUT_DIR) alone needs no xshm).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xshm

HERE = Path(__file__).resolve().parent
DEAD_PID = 4194305  # 2^22 + 1: above PID_MAX_LIMIT, so kill(pid, 0) fails with ESRCH
CREATION_ID = b"xshm-vectors-v1\x00"
CREATED_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
ABI_GLIBC_X86_64 = 0x0101

# Offsets of docs/LAYOUT.md (header page, then a record slot's meta line).
H_STATE, H_VERSION, H_TOTAL, H_HEADER_SIZE, H_FLAGS = 12, 8, 16, 24, 28
H_DTYPE, H_ITEMSIZE, H_NDIM, H_CAPACITY, H_SHAPE = 32, 36, 40, 44, 48
H_VALUES_SIZE, H_RECORD_SIZE, H_RECORD_OFFSET = 112, 120, 128
H_VALUES_OFFSET, H_MESSAGE_OFFSET, H_MUTEX_SIZE, H_MUTEX_ABI = 144, 148, 152, 156
H_CREATION_ID, H_CREATED_NS, H_CREATOR_PID = 160, 176, 184
H_SEQ, H_EPOCH, H_OWNER_PID, H_MUTEX = 256, 264, 320, 384
R_LOCK, R_SEQ, R_COUNTER, R_TIMESTAMP, R_WRITER_PID, R_MESSAGE_LEN = 0, 8, 16, 24, 32, 36
# glibc's x86-64 pthread_mutex_t: __lock (the futex word), __count, __owner (TID), __nusers,
# __kind, __spins, __elision, __list {__prev, __next}.
M_LOCK, M_OWNER, M_LIST = 0, 8, 24
FUTEX_OWNER_DIED = 0x40000000


def u32(b: bytearray, off: int, v: int | None = None) -> int:
    if v is not None:
        struct.pack_into("<I", b, off, v)
    return int(struct.unpack_from("<I", b, off)[0])


def u64(b: bytearray, off: int, v: int | None = None) -> int:
    if v is not None:
        struct.pack_into("<Q", b, off, v)
    return int(struct.unpack_from("<Q", b, off)[0])


def timestamp_of(seq: int) -> int:
    return CREATED_NS + seq * 1_000_000


class Image:
    """The bytes of one segment, with the geometry its header states."""

    def __init__(self, data: bytes) -> None:
        self.b = bytearray(data)
        self.record_size = u64(self.b, 120)
        self.slots = [u64(self.b, 128), u64(self.b, 136)]
        self.values_offset = u32(self.b, 144)
        self.message_offset = u32(self.b, 148)
        self.values_size = u64(self.b, 112)

    def slot(self, i: int) -> int:
        return self.slots[i]

    def values_at(self, i: int) -> int:
        return self.slots[i] + self.values_offset

    def normalise(self) -> None:
        b = self.b
        assert u32(b, H_MUTEX_ABI) == ABI_GLIBC_X86_64, "generate on x86-64 glibc only"
        b[H_CREATION_ID : H_CREATION_ID + 16] = CREATION_ID
        u64(b, H_CREATED_NS, CREATED_NS)
        u32(b, H_CREATOR_PID, DEAD_PID)
        if u32(b, H_OWNER_PID) != 0:
            u32(b, H_OWNER_PID, DEAD_PID)
        if u32(b, H_MUTEX + M_OWNER) != 0:
            u32(b, H_MUTEX + M_OWNER, DEAD_PID)
        b[H_MUTEX + M_LIST : H_MUTEX + M_LIST + 16] = bytes(16)
        assert u32(b, H_MUTEX + M_LOCK) & 0x3FFFFFFF == 0, "no live TID may stay in the futex word"
        for off in self.slots:
            if off:
                u64(b, off + R_TIMESTAMP, timestamp_of(u64(b, off + R_SEQ)))
                u32(b, off + R_WRITER_PID, DEAD_PID)


@dataclass
class Vector:
    file: str
    data: bytes
    stage: str = "ok"  # ok | open (open refuses) | read (read refuses)
    error: str = "-"
    error_text: str = "-"
    dtype: str = "-"
    shape: str = "-"
    backup: str = "-"
    seq: str = "-"  # the header's seq after open
    read_seq: str = "-"
    counter: str = "-"
    timestamp_ns: str = "-"
    writer_pid: str = "-"
    message: str = "-"
    values: str = "-"
    epoch: str = "-"
    recoveries: str = "-"
    writer: str = "-"  # ok | recover | torn | refuse | -
    writer_error_text: str = "-"
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


COLUMNS = [
    "file",
    "stage",
    "error",
    "error_text",
    "dtype",
    "shape",
    "backup",
    "seq",
    "read_seq",
    "counter",
    "timestamp_ns",
    "writer_pid",
    "message",
    "values",
    "epoch",
    "recoveries",
    "writer",
    "writer_error_text",
    "note",
]


def pattern(dtype: str, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Deterministic values for publish number k: negatives, fractions, both complex parts."""
    n = int(np.prod(shape)) if shape else 1
    i = np.arange(n)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        a = (i + k) % 3 == 0
    elif dt.kind == "c":
        a = (i + k + 0.5) + 1j * (-(i * 2.0) - 0.25 - k)
    elif dt.kind == "f":
        a = (i - 2.0) * 1.5 + k
        if n >= 4:
            a[-1] = np.inf if k % 2 else -0.0
    elif dt.kind == "u":
        a = np.full(n, np.iinfo(dt).max, dtype=dt) - (i * 7 + k).astype(dt)
    else:
        a = (i - 3) * 11 + k
        if n >= 2:
            a[0] = np.iinfo(dt).min
    return np.asarray(a).astype(dt).reshape(shape)


_seq = 0


def _name(tag: str) -> str:
    global _seq
    _seq += 1
    return f"xshm-vectors-{os.getpid()}-{_seq}-{tag}"


def _die_holding_lock(name: str) -> None:
    """A child takes the writer mutex and exits holding it: the kernel sets FUTEX_OWNER_DIED."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            m = xshm.SharedMemoryManager.open(name)
            held = m.lock()  # kept referenced: dropping the block would release the mutex
            held.__enter__()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@dataclass
class Publish:
    values: np.ndarray | None = None
    message: str | None = None
    counter: int | None = None


def build(
    tag: str,
    *,
    shape: tuple[int, ...],
    dtype: str,
    capacity: int,
    backup: bool = True,
    publishes: list[Publish] | None = None,
    die_holding_lock: bool = False,
) -> Image:
    name = _name(tag)
    m = xshm.SharedMemoryManager.create(
        name, shape=shape, dtype=dtype, message_capacity=capacity, backup=backup
    )
    try:
        for p in publishes or []:
            m.publish(values=p.values, message=p.message, counter=p.counter)
        if die_holding_lock:
            _die_holding_lock(name)
        data = Path(f"/dev/shm/{name}").read_bytes()
    finally:
        m.close()
        xshm.unlink(name, force=True)
    return Image(data)


def through_a_writer(data: bytes, action: Callable[[xshm.SharedMemoryManager], None]) -> Image:
    """Runs `action` on a writable handle of a copy of `data`; returns the bytes after it."""
    name = _name("writer")
    path = Path(f"/dev/shm/{name}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.close(fd)
        with xshm.SharedMemoryManager.open(name) as m:
            action(m)
        return Image(path.read_bytes())
    finally:
        path.unlink()


def expect(
    v: Vector,
    *,
    dtype: str,
    shape: tuple[int, ...],
    backup: bool,
    seq: int,
    read_seq: int,
    counter: int,
    message: str,
    values: np.ndarray,
    epoch: int,
    recoveries: int = 0,
) -> Vector:
    assert "\t" not in message and "\n" not in message
    v.dtype, v.shape, v.backup = dtype, str(tuple(shape)), str(int(backup))
    v.seq, v.read_seq, v.counter = str(seq), str(read_seq), str(counter)
    v.timestamp_ns, v.writer_pid = str(timestamp_of(read_seq)), str(DEAD_PID)
    v.message, v.values = message, np.ascontiguousarray(values).tobytes().hex()
    v.epoch, v.recoveries = str(epoch), str(recoveries)
    return v


def published_vectors() -> list[Vector]:
    """Every dtype, shapes of 0 to 3 dimensions, a few messages; complete records."""
    cases: list[tuple[str, tuple[int, ...], int, str]] = [
        ("bool", (5,), 8, "on/off"),
        ("int8", (), 4, "0-d"),
        ("uint8", (0,), 0, ""),
        ("int16", (2, 3), 20, "héllo ✓"),  # 2- and 3-byte UTF-8 sequences
        ("uint16", (7,), 16, "uint16"),
        ("int32", (2, 2, 2), 16, "3-d"),
        ("uint32", (3,), 16, "uint32"),
        ("int64", (2, 2), 16, "int64 min"),
        ("uint64", (3,), 16, "above 2^63"),
        ("float16", (5,), 16, "binary16"),
        ("float32", (1, 4), 16, "float32"),
        ("float64", (4,), 16, "float64"),
        ("complex64", (3,), 16, "real, imag"),
        ("complex128", (2,), 16, "complex128"),
    ]
    out = []
    for dtype, shape, cap, msg in cases:
        pubs = [
            Publish(pattern(dtype, shape, 1), "first", 100),
            Publish(pattern(dtype, shape, 2), msg, 200),
        ]
        if cap < 5:
            pubs[0].message = "x" * cap
        img = build(f"pub-{dtype}", shape=shape, dtype=dtype, capacity=cap, publishes=pubs)
        img.normalise()
        label = "x".join(map(str, shape)) or "scalar"
        v = Vector(f"published-{dtype}-{label}.seg", bytes(img.b), writer="ok")
        out.append(
            expect(
                v,
                dtype=dtype,
                shape=shape,
                backup=True,
                seq=2,
                read_seq=2,
                counter=200,
                message=msg,
                values=pattern(dtype, shape, 2),
                epoch=2,
            )
        )
    return out


F64 = "float64"
S4 = (4,)


def base_f64(tag: str, *, backup: bool = True, die: bool = False, n: int = 2) -> Image:
    pubs = [Publish(pattern(F64, S4, k), f"message {k}", 10 * k) for k in range(1, n + 1)]
    return build(
        tag, shape=S4, dtype=F64, capacity=16, backup=backup, publishes=pubs, die_holding_lock=die
    )


def f64_expect(
    v: Vector, *, seq: int, read_seq: int, epoch: int, backup: bool = True, recoveries: int = 0
) -> Vector:
    return expect(
        v,
        dtype=F64,
        shape=S4,
        backup=backup,
        seq=seq,
        read_seq=read_seq,
        counter=10 * read_seq,
        message=f"message {read_seq}",
        values=pattern(F64, S4, read_seq),
        epoch=epoch,
        recoveries=recoveries,
    )


def tear_slot(img: Image, slot: int, k: int) -> None:
    """Leaves `slot` as a writer of publish k left it when it died halfway through the copy:
    lock odd, the meta line new, the first half of the values new, the rest old."""
    off = img.slot(slot)
    u64(img.b, off + R_LOCK, u64(img.b, off + R_LOCK) + 1)
    u64(img.b, off + R_SEQ, k)
    u64(img.b, off + R_COUNTER, 10 * k)
    u64(img.b, off + R_TIMESTAMP, timestamp_of(k))
    half = pattern(F64, S4, k).tobytes()[:16]
    img.b[img.values_at(slot) : img.values_at(slot) + 16] = half


def complete_slot(img: Image, slot: int, k: int) -> None:
    """Leaves `slot` holding publish k completely (lock advanced by 2, still even)."""
    off = img.slot(slot)
    u64(img.b, off + R_LOCK, u64(img.b, off + R_LOCK) + 2)
    u64(img.b, off + R_SEQ, k)
    u64(img.b, off + R_COUNTER, 10 * k)
    msg = f"message {k}".encode()
    u32(img.b, off + R_MESSAGE_LEN, len(msg))
    mo = off + img.message_offset
    img.b[mo : mo + len(msg)] = msg
    img.b[img.values_at(slot) : img.values_at(slot) + img.values_size] = pattern(
        F64, S4, k
    ).tobytes()


def state_vectors() -> list[Vector]:
    out = []

    img = build("fresh", shape=S4, dtype=F64, capacity=16)
    img.normalise()
    v = Vector("fresh-float64-4.seg", bytes(img.b), writer="ok", note="as create() leaves it")
    out.append(
        expect(
            v,
            dtype=F64,
            shape=S4,
            backup=True,
            seq=0,
            read_seq=0,
            counter=0,
            message="",
            values=np.zeros(4),
            epoch=0,
        )
    )

    # Partial publishes keep the other fields; a shorter message leaves stale bytes behind it.
    name_pubs = [
        Publish(pattern(F64, S4, 1), "a longer message", 7),
        Publish(None, None, 8),
        Publish(None, "short", None),
        Publish(pattern(F64, S4, 4), None, None),
    ]
    img = build("partial", shape=S4, dtype=F64, capacity=16, publishes=name_pubs)
    img.normalise()
    v = Vector(
        "partial-float64-4.seg",
        bytes(img.b),
        writer="ok",
        note="4 publishes of some fields each; message slot holds stale bytes past message_len",
    )
    out.append(
        expect(
            v,
            dtype=F64,
            shape=S4,
            backup=True,
            seq=4,
            read_seq=4,
            counter=8,
            message="short",
            values=pattern(F64, S4, 4),
            epoch=4,
        )
    )

    img = base_f64("nobackup", backup=False)
    img.normalise()
    v = Vector("published-float64-4-nobackup.seg", bytes(img.b), writer="ok")
    out.append(f64_expect(v, seq=2, read_seq=2, epoch=2, backup=False))

    img = base_f64("lockdied", die=True)
    img.normalise()
    v = Vector(
        "owner-died-float64-4.seg",
        bytes(img.b),
        writer="recover",
        note="a process took the mutex and died holding it between publishes",
    )
    out.append(f64_expect(v, seq=2, read_seq=2, epoch=2))

    img = base_f64("midwrite", die=True)
    tear_slot(img, 0, 3)
    img.normalise()
    midwrite = bytes(img.b)
    v = Vector(
        "midwrite-live-float64-4.seg",
        midwrite,
        writer="recover",
        note="writer died in publish step 1 (live slot odd, half written): readers get the backup",
    )
    out.append(f64_expect(v, seq=2, read_seq=2, epoch=2))

    def take_lock(m: xshm.SharedMemoryManager) -> None:
        with m.lock():
            pass

    img = through_a_writer(midwrite, take_lock)
    img.normalise()
    v = Vector(
        "recovered-float64-4.seg",
        bytes(img.b),
        writer="ok",
        note="midwrite-live after a writer's lock recovered it",
    )
    out.append(f64_expect(v, seq=2, read_seq=2, epoch=3, recoveries=1))

    img = base_f64("backupodd", die=True)
    tear_slot(img, 1, 3)  # the backup is being refreshed to publish 3
    complete_slot(img, 0, 3)
    u64(img.b, H_SEQ, 3)
    u32(img.b, H_EPOCH, 3)
    img.normalise()
    v = Vector(
        "midwrite-backup-float64-4.seg",
        bytes(img.b),
        writer="recover",
        note="writer died in publish step 4 (backup odd): readers get the live slot",
    )
    out.append(f64_expect(v, seq=3, read_seq=3, epoch=3))

    img = base_f64("unpublished", die=True)
    complete_slot(img, 0, 3)  # live complete; header seq and backup still at 2
    img.normalise()
    v = Vector(
        "unpublished-seq-float64-4.seg",
        bytes(img.b),
        writer="recover",
        note="writer died between publish steps 1 and 2: read() gives 3, the header's seq is 2",
    )
    out.append(f64_expect(v, seq=2, read_seq=3, epoch=2))

    img = base_f64("torn", backup=False, die=True)
    tear_slot(img, 0, 3)
    u32(img.b, H_OWNER_PID, DEAD_PID)  # the dead writer had said it held the mutex
    img.normalise()
    v = Vector(
        "torn-nobackup-float64-4.seg",
        bytes(img.b),
        stage="read",
        error="TornRecordError",
        error_text="died mid-write",
        writer="torn",
        note="no backup, live slot odd, owner_pid dead: torn until a full publish",
    )
    v.dtype, v.shape, v.backup, v.seq, v.epoch, v.recoveries = F64, "(4,)", "0", "2", "2", "0"
    out.append(v)

    base = base_f64("abi")
    base.normalise()
    for fname, off, value, note in [
        (
            "mutex-abi-other-float64-4.seg",
            H_MUTEX_ABI,
            0x0202,
            "mutex_abi 0x202 (another libc, aarch64)",
        ),
        (
            "mutex-size-48-float64-4.seg",
            H_MUTEX_SIZE,
            48,
            "mutex_size 48 (another pthread_mutex_t)",
        ),
    ]:
        img = Image(bytes(base.b))
        u32(img.b, off, value)
        v = Vector(
            fname, bytes(img.b), writer="refuse", writer_error_text="another C library", note=note
        )
        out.append(f64_expect(v, seq=2, read_seq=2, epoch=2))
    return out


def corrupt_vectors() -> list[Vector]:
    base = base_f64("corrupt")
    base.normalise()
    good = bytes(base.b)

    def poke(edit: Callable[[bytearray], None]) -> bytes:
        b = bytearray(good)
        edit(b)
        return bytes(b)

    def at32(off: int, value: int) -> Callable[[bytearray], None]:
        return lambda b: (u32(b, off, value), None)[1]

    def at64(off: int, value: int) -> Callable[[bytearray], None]:
        return lambda b: (u64(b, off, value), None)[1]

    def put(off: int, data: bytes) -> Callable[[bytearray], None]:
        def f(b: bytearray) -> None:
            b[off : off + len(data)] = data

        return f

    live, backup = base.slot(0), base.slot(1)
    total = len(good)
    opens = [
        ("bad-magic", put(0, b"XSHMSEX\x00"), "bad magic"),
        ("not-ready", at32(H_STATE, 0), "never made ready"),
        ("version-2", at32(H_VERSION, 2), "layout version 2 is not supported"),
        ("header-size", at32(H_HEADER_SIZE, 8192), "header_size 8192"),
        ("unknown-flags", at32(H_FLAGS, 3), "unknown flags 3"),
        ("unknown-dtype", at32(H_DTYPE, 15), "unknown dtype code 15"),
        ("dtype-zero", at32(H_DTYPE, 0), "unknown dtype code 0"),
        ("itemsize", at32(H_ITEMSIZE, 4), "itemsize 4 does not match dtype float64"),
        ("ndim-9", at32(H_NDIM, 9), "ndim 9 exceeds 8"),
        ("unused-shape", at64(H_SHAPE + 8, 1), "unused shape entries are not zero"),
        ("mutex-size-0", at32(H_MUTEX_SIZE, 0), "mutex_size 0"),
        ("mutex-size-65", at32(H_MUTEX_SIZE, 65), "mutex_size 65"),
        ("reserved-188", put(188, b"\x01"), "reserved header byte 188"),
        ("reserved-300", put(300, b"\x01"), "reserved header byte 300"),
        ("reserved-4095", put(4095, b"\x01"), "reserved header byte 4095"),
        ("values-offset", at32(H_VALUES_OFFSET, 128), "do not match its shape"),
        ("capacity", at32(H_CAPACITY, 200), "do not match its shape"),
        ("shape", at64(H_SHAPE, 5), "do not match its shape"),
        ("total-size", at64(H_TOTAL, total + 4096), f"total_size {total + 4096} does not match"),
        ("impossible-shape", at64(H_SHAPE, 1 << 40), "impossible geometry"),
    ]
    out = []
    for tag, edit, text in opens:
        out.append(
            Vector(
                f"corrupt-{tag}.seg", poke(edit), stage="open", error="LayoutError", error_text=text
            )
        )

    def zero_extent(b: bytearray) -> None:
        # Shape (2^41, 0), with every other field as the product 0 would give: an opener that
        # multiplied without the left-to-right overflow check would accept it.
        u32(b, H_NDIM, 2)
        u64(b, H_SHAPE, 1 << 41)
        u64(b, H_SHAPE + 8, 0)
        u64(b, H_VALUES_SIZE, 0)
        u64(b, H_RECORD_SIZE, 128)  # 64 + round_up(0, 64) + round_up(16, 64)
        u64(b, H_RECORD_OFFSET + 8, 4096 + 128)
        u32(b, H_MESSAGE_OFFSET, 64)

    out.append(
        Vector(
            "corrupt-zero-extent.seg",
            poke(zero_extent),
            stage="open",
            error="LayoutError",
            error_text="impossible geometry",
            note="shape (2^41, 0): refused by the left-to-right check although the product is 0",
        )
    )
    out.append(
        Vector(
            "corrupt-truncated.seg",
            good[: total - 4096],
            stage="open",
            error="LayoutError",
            error_text="truncated",
            note="the file is one page shorter than total_size",
        )
    )
    out.append(
        Vector(
            "corrupt-short.seg",
            good[:100],
            stage="open",
            error="LayoutError",
            error_text="smaller than the xshm header",
        )
    )

    def message_len(b: bytearray) -> None:
        u32(b, live + R_MESSAGE_LEN, 17)

    def both_odd(b: bytearray) -> None:
        u64(b, live + R_LOCK, u64(b, live + R_LOCK) + 1)
        u64(b, backup + R_LOCK, u64(b, backup + R_LOCK) + 1)

    for tag, edit, text in [
        ("message-len", message_len, "message length 17 exceeds"),
        ("both-odd", both_odd, "both record slots"),
    ]:
        v = Vector(
            f"corrupt-{tag}.seg", poke(edit), stage="read", error="LayoutError", error_text=text
        )
        v.dtype, v.shape, v.backup, v.seq, v.epoch, v.recoveries = F64, "(4,)", "1", "2", "2", "0"
        out.append(v)
    return out


# --------------------------------------------------------------------------------------------
# Streams (layout version 2). Unlike the records above, these are written byte by byte from
# docs/LAYOUT.md Part II (sections 16-28) alone: no xshm call makes or touches them, so a
# disagreement between the page and the code shows as a failing vector test instead of being
# copied into the vector. Each sends its messages by the steps of 25.2-25.4 (register, claim,
# fill, commit) on a zero file, as the page says a fresh stream is (21.1); the states no send
# leaves (a writer dead mid-copy or holding the mutex) are the same steps cut short.
# Normalised like the records (section 13): creation_id CREATION_ID, created_ns CREATED_NS,
# every timestamp_ns (a slot's, a table entry's attached_ns) derived from it, and every pid
# above PID_MAX_LIMIT: the creator and writer A are DEAD_PID, writer B DEAD_PID + 1 (two, so
# that a reader must return each slot's own writer_pid).
# --------------------------------------------------------------------------------------------

STREAMS_DIR = "streams"
STREAM_VERSION, KIND_STREAM, FLAG_DROP_OLDEST = 2, 2, 1  # 16, 18.1
READY = 0x59444552  # "READ" little-endian (4.1)
PAGE = 4096
DEAD_PID_2 = DEAD_PID + 1
# 5.1: dtype code -> (numpy name, itemsize)
DTYPES = {
    1: ("bool", 1),
    2: ("int8", 1),
    3: ("uint8", 1),
    4: ("int16", 2),
    5: ("uint16", 2),
    6: ("int32", 4),
    7: ("uint32", 4),
    8: ("int64", 8),
    9: ("uint64", 8),
    10: ("float16", 2),
    11: ("float32", 4),
    12: ("float64", 8),
    13: ("complex64", 8),
    14: ("complex128", 16),
}
# 18.1 identity
S_VERSION, S_STATE, S_TOTAL, S_HEADER_SIZE, S_KIND, S_FLAGS = 8, 12, 16, 24, 28, 32
S_CAPACITY, S_MAX_BYTES, S_SLOT_SIZE, S_SLOTS_OFFSET = 36, 40, 48, 56
S_MAX_READERS, S_MAX_WRITERS, S_READERS_OFFSET, S_WRITERS_OFFSET = 64, 68, 72, 80
S_DTYPE, S_NDIM, S_SHAPE = 88, 92, 96
S_MUTEX_SIZE, S_MUTEX_ABI, S_CREATION_ID, S_CREATED_NS, S_CREATOR_PID = 160, 164, 168, 184, 192
S_MAX_GROUPS, S_GROUPS_OFFSET = 196, 200
# 18.2 head line, 18.4 stats line, 18.5 writer line and mutex
S_HEAD, S_DATA_EPOCH, S_CLAIM_SEQ, S_CLAIM_DROPPED, S_SPACE_EPOCH = 256, 264, 272, 280, 320
S_DROPPED, S_ABANDONED, S_READERS_GEN, S_REAPED = 384, 392, 400, 404
S_OWNER_PID, S_RECOVERIES, S_MUTEX = 448, 452, 512
S_RESERVED = [(208, 256), (288, 320), (328, 384), (408, 448), (456, 512), (576, PAGE)]
# 19.1 reader entry, 19.2 writer entry, 19.3 group entry, 20.1 slot header
RE_CURSOR, RE_LOST, RE_RECEIVED, RE_START, RE_SLEEPING = 0, 8, 16, 24, 32
RE_SKIPPED, RE_HOLD = 40, 48
RE_STATE, RE_PID, RE_GENERATION, RE_ATTACHED_NS, RE_GROUP = 64, 72, 76, 80, 88
WE_STATE, WE_PID, WE_GENERATION, WE_SENT, WE_ATTACHED_NS, WE_SLEEPING = 0, 8, 12, 16, 24, 32
GE_CURSOR, GE_RECEIVED, GE_LOST, GE_SKIPPED, GE_START, GE_MUTEX = 0, 8, 16, 24, 32, 64
GE_STATE, GE_GENERATION, GE_NAME_LEN, GE_CREATED_NS, GE_NAME = 128, 136, 140, 144, 152
GROUP_ENTRY, MAX_GROUP_NAME, GROUP_ACTIVE = 192, 40, 1
HOLD_COPY, HOLD_LOSE, HOLD_SKIP = 1, 2, 3  # 19.1 hold: (c << 2) | step
SL_WORD, SL_LENGTH, SL_TIMESTAMP, SL_WRITER_PID = 0, 8, 16, 24
SL_WRITER_INDEX, SL_WRITER_STATE, SL_CANCELLED = 28, 32, 40
SLOT_HEADER = 64
# 20.2 slot word tags
WRITING, COMMITTED, ABANDONED = 1, 2, 3
# glibc x86-64 pthread_mutex_t (section 2, A.2): __kind at +16 is 0x92 after pthread_mutex_init
# with 7.1 step 7's attributes; __count (+4) is 1 once it has been locked; a holder that died
# leaves FUTEX_OWNER_DIED in __lock (+0), its TID in __owner (+8) and __nusers (+12) at 1.
MUTEX_SIZE_GLIBC_X86_64 = 40
MX_COUNT, MX_NUSERS, MX_KIND, MUTEX_KIND = 4, 12, 16, 0x92


def round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def word(x: int, tag: int) -> int:
    return (x << 2) | tag


def entry_state(generation: int) -> int:
    return (generation << 8) | 1


@dataclass
class StreamGeometry:
    capacity: int
    max_bytes: int
    drop_oldest: bool
    max_readers: int
    max_writers: int
    dtype: int
    shape: tuple[int, ...]
    slot_size: int
    readers_offset: int
    writers_offset: int
    slots_offset: int
    total_size: int
    max_groups: int = 0
    groups_offset: int = 0  # 0: no group table


class GeometryRefused(ValueError):
    pass


def stream_geometry(
    capacity: int,
    max_bytes: int,
    *,
    drop_oldest: bool = False,
    max_readers: int = 4,
    max_writers: int = 4,
    max_groups: int = 0,
    dtype: int = 0,
    shape: tuple[int, ...] = (),
) -> StreamGeometry:
    """Section 17, step by step, with its refusals in its order."""
    if not 1 <= capacity <= 1 << 30:
        raise GeometryRefused(f"capacity must be 1 to 2**30 messages, got {capacity}")
    if not 1 <= max_bytes <= 1 << 30:
        raise GeometryRefused(f"max_bytes must be 1 to 2**30 bytes, got {max_bytes}")
    if not 1 <= max_readers <= 1024:
        raise GeometryRefused(f"max_readers must be 1 to 1024, got {max_readers}")
    if not 1 <= max_writers <= 1024:
        raise GeometryRefused(f"max_writers must be 1 to 1024, got {max_writers}")
    if not 0 <= max_groups <= 1024:
        raise GeometryRefused(f"max_groups must be 0 to 1024, got {max_groups}")
    if dtype == 0:
        if shape:
            raise GeometryRefused("a byte stream has no shape")
    else:
        if dtype not in DTYPES:
            raise GeometryRefused(f"unknown dtype code {dtype}")
        if len(shape) > 8:
            raise GeometryRefused("ndim exceeds 8")
        nbytes = DTYPES[dtype][1]
        for e in shape:
            if e != 0 and nbytes > (1 << 30) // e:
                raise GeometryRefused("a frame is limited to 2**30 bytes")
            nbytes *= e
        if nbytes != max_bytes:
            raise GeometryRefused(
                f"a frame of this dtype and shape is {nbytes} bytes, not {max_bytes}"
            )
    slot_size = 64 + round_up(max_bytes, 64)
    if capacity > (1 << 40) // slot_size:
        raise GeometryRefused("the ring would exceed 2**40 bytes")
    readers_offset = PAGE
    writers_offset = readers_offset + 128 * max_readers
    writers_end = writers_offset + 64 * max_writers
    groups_offset = writers_end if max_groups else 0
    slots_offset = round_up(writers_end + GROUP_ENTRY * max_groups, PAGE)
    total_size = round_up(slots_offset + capacity * slot_size, PAGE)
    return StreamGeometry(
        capacity,
        max_bytes,
        drop_oldest,
        max_readers,
        max_writers,
        dtype,
        tuple(shape),
        slot_size,
        readers_offset,
        writers_offset,
        slots_offset,
        total_size,
        max_groups,
        groups_offset,
    )


def check_geometry_table() -> None:
    """The examples of section 17's table, so that the formula above is the page's."""
    rows = [
        ((1024, 1024, 16, 64, 16, 0, ()), (1088, 6144, 10240, 16384, 1130496)),
        ((1024, 1024, 16, 64, 0, 0, ()), (1088, 6144, 0, 12288, 1126400)),
        ((4, 64, 16, 64, 0, 0, ()), (128, 6144, 0, 12288, 16384)),
        ((8, 100, 4, 4, 2, 0, ()), (192, 4608, 4864, 8192, 12288)),
        ((8, 100, 4, 4, 1024, 0, ()), (192, 4608, 4864, 204800, 208896)),
        ((8, 3686400, 16, 64, 0, 11, (480, 640, 3)), (3686464, 6144, 0, 12288, 29507584)),
        ((1000, 100, 1024, 1024, 0, 0, ()), (192, 135168, 0, 200704, 393216)),
        ((1 << 24, 65472, 1, 1, 0, 0, ()), (65536, 4224, 0, 8192, (1 << 40) + 8192)),
    ]
    for (cap, mb, nr, nw, ng, dt, sh), want in rows:
        g = stream_geometry(
            cap, mb, max_readers=nr, max_writers=nw, max_groups=ng, dtype=dt, shape=sh
        )
        got = (g.slot_size, g.writers_offset, g.groups_offset, g.slots_offset, g.total_size)
        assert got == want, (cap, g)
    for cap, mb, ng, dt, sh in [
        ((1 << 24) + 1, 65472, 0, 0, ()),
        (1 << 30, 1024, 0, 0, ()),
        (8, 100, 1025, 0, ()),
        (4, 1 << 31, 0, 3, (1 << 15, 1 << 15, 2)),
    ]:
        try:
            stream_geometry(
                cap, mb, max_readers=1, max_writers=1, max_groups=ng, dtype=dt, shape=sh
            )
        except GeometryRefused:
            continue
        raise AssertionError(f"section 17 refuses capacity {cap}, max_bytes {mb}, groups {ng}")


@dataclass
class Sent:
    """A message as a reader at 'oldest' must receive it."""

    seq: int
    pid: int
    timestamp_ns: int
    payload: bytes

    def cell(self) -> str:
        return f"{self.seq}:{self.pid}:{self.timestamp_ns}:{self.payload.hex()}"


class StreamImage:
    """The bytes of one stream, changed only by the steps of docs/LAYOUT.md Part II."""

    def __init__(self, g: StreamGeometry) -> None:
        self.g = g
        self.b = bytearray(g.total_size)  # 21.1: everything but the header page is zero
        b = self.b
        # 18.1, in 21.2 step 6's order; state last (step 7).
        b[0:8] = b"XSHMSEG\x00"
        u32(b, S_VERSION, STREAM_VERSION)
        u64(b, S_TOTAL, g.total_size)
        u32(b, S_HEADER_SIZE, PAGE)
        u32(b, S_KIND, KIND_STREAM)
        u32(b, S_FLAGS, FLAG_DROP_OLDEST if g.drop_oldest else 0)
        u32(b, S_CAPACITY, g.capacity)
        u64(b, S_MAX_BYTES, g.max_bytes)
        u64(b, S_SLOT_SIZE, g.slot_size)
        u64(b, S_SLOTS_OFFSET, g.slots_offset)
        u32(b, S_MAX_READERS, g.max_readers)
        u32(b, S_MAX_WRITERS, g.max_writers)
        u64(b, S_READERS_OFFSET, g.readers_offset)
        u64(b, S_WRITERS_OFFSET, g.writers_offset)
        u32(b, S_MAX_GROUPS, g.max_groups)
        u64(b, S_GROUPS_OFFSET, g.groups_offset)
        u32(b, S_DTYPE, g.dtype)
        u32(b, S_NDIM, len(g.shape))
        for i, e in enumerate(g.shape):
            u64(b, S_SHAPE + 8 * i, e)
        u32(b, S_MUTEX_SIZE, MUTEX_SIZE_GLIBC_X86_64)
        u32(b, S_MUTEX_ABI, ABI_GLIBC_X86_64)
        b[S_CREATION_ID : S_CREATION_ID + 16] = CREATION_ID
        u64(b, S_CREATED_NS, CREATED_NS)
        u32(b, S_CREATOR_PID, DEAD_PID)
        u32(b, S_MUTEX + MX_KIND, MUTEX_KIND)
        u32(b, S_STATE, READY)
        self.writer_entry: dict[int, int] = {}  # writer pid -> its entry

    # --- offsets (19, 20.1) ---
    def reader_at(self, i: int) -> int:
        return self.g.readers_offset + 128 * i

    def writer_at(self, j: int) -> int:
        return self.g.writers_offset + 64 * j

    def slot_at(self, x: int) -> int:
        return self.g.slots_offset + (x % self.g.capacity) * self.g.slot_size

    def slot_word(self, x: int) -> int:
        return u64(self.b, self.slot_at(x) + SL_WORD)

    @property
    def head(self) -> int:
        return u64(self.b, S_HEAD)

    def lock_mutex(self) -> None:
        """A lock and unlock of the mutex leave __count 1 (A.2); nothing else stays."""
        u32(self.b, S_MUTEX + MX_COUNT, 1)

    # --- 25.2: the writer entry ---
    def register(self, j: int, pid: int) -> None:
        b, at = self.b, self.writer_at(j)
        st = u64(b, at + WE_STATE)
        if st != 0:  # a dead writer's entry, taken over
            u32(b, S_REAPED, u32(b, S_REAPED) + 1)
        generation = u32(b, at + WE_GENERATION) + 1  # never reset (19, 19.2)
        u32(b, at + WE_GENERATION, generation)
        u32(b, at + WE_PID, pid)
        u64(b, at + WE_SENT, 0)
        u64(b, at + WE_ATTACHED_NS, CREATED_NS)
        u64(b, at + WE_STATE, entry_state(generation))
        self.writer_entry[pid] = j

    def close_writer(self, pid: int) -> None:
        """A clean close: the entry's state back to 0 (25.2, last paragraph)."""
        u64(self.b, self.writer_at(self.writer_entry.pop(pid)) + WE_STATE, 0)

    # --- 25.3: the claim. No gate is reached and no reader is reaped: the one vector with an
    # attached reader (dead-reader-full) has it alive while the claims run; it dies after. ---
    def claim(self, pid: int, n: int, *, die: str | None = None) -> int:
        """Claims n sequence numbers for the writer `pid`, registering it at its first claim.
        `die`: where the claimant dies holding the mutex, as recovery (24.2) then finds it:
        "before-mark" (step 8.1 of the first slot done, not its mark), "after-mark" (the first
        slot marked, not its step 8.4), "after-marks" (every slot marked, not step 9)."""
        b, g = self.b, self.g
        self.lock_mutex()
        if pid not in self.writer_entry:
            free = [j for j in range(g.max_writers) if u64(b, self.writer_at(j)) == 0]
            self.register(free[0], pid)
        j = self.writer_entry[pid]
        me = self.writer_at(j)
        h = self.head
        any_reader = any(u64(b, self.reader_at(i) + RE_STATE) != 0 for i in range(g.max_readers))
        if any_reader and not g.drop_oldest:  # step 5: no vector claims past the gate
            gate = min(
                u64(b, self.reader_at(i) + RE_CURSOR)
                for i in range(g.max_readers)
                if u64(b, self.reader_at(i) + RE_STATE) != 0
            )
            assert h + n <= gate + g.capacity
        for k in range(n):  # step 6: no vector claims over a hole
            assert h + k < g.capacity or self.slot_word(h + k) & 3 != WRITING
        u64(b, me + WE_SENT, u64(b, me + WE_SENT) + n)
        drops = not any_reader
        for k in range(n):
            x = h + k
            overwrite = drops and x >= g.capacity
            if overwrite:
                u64(b, S_CLAIM_DROPPED, u64(b, S_DROPPED) + 1)
                u64(b, S_CLAIM_SEQ, x + 1)
            if die == "before-mark":
                self.die_holding_mutex(pid)
                return h
            s = self.slot_at(x)
            u32(b, s + SL_WRITER_INDEX, j)
            u64(b, s + SL_WRITER_STATE, u64(b, me + WE_STATE))
            u64(b, s + SL_WORD, word(x, WRITING))
            if die == "after-mark":
                self.die_holding_mutex(pid)
                return h
            if overwrite:
                u64(b, S_DROPPED, u64(b, S_CLAIM_DROPPED))
        if die == "after-marks":
            self.die_holding_mutex(pid)
            return h
        assert die is None
        u64(b, S_HEAD, h + n)
        u64(b, S_CLAIM_SEQ, 0)
        return h

    def die_holding_mutex(self, pid: int) -> None:
        b = self.b
        u32(b, S_OWNER_PID, pid)  # 24.1: the locker's pid after locking
        u32(b, S_MUTEX, FUTEX_OWNER_DIED)  # the kernel's mark; no TID (section 2)
        u32(b, S_MUTEX + M_OWNER, pid)
        u32(b, S_MUTEX + MX_NUSERS, 1)

    # --- 25.4: filling and committing (under the mutex or not: the same bytes) ---
    def fill(self, x: int, pid: int, payload: bytes) -> None:
        b, s = self.b, self.slot_at(x)
        assert self.slot_word(x) == word(x, WRITING) and len(payload) <= self.g.max_bytes
        u64(b, s + SL_LENGTH, len(payload))
        u64(b, s + SL_TIMESTAMP, timestamp_of(x))
        u32(b, s + SL_WRITER_PID, pid)
        b[s + SLOT_HEADER : s + SLOT_HEADER + len(payload)] = payload

    def commit(self, x: int) -> None:  # the CAS from W(x)
        assert self.slot_word(x) == word(x, WRITING)
        u64(self.b, self.slot_at(x) + SL_WORD, word(x, COMMITTED))

    def notify_readers(self) -> None:
        u32(self.b, S_DATA_EPOCH, u32(self.b, S_DATA_EPOCH) + 1)

    def send(self, pid: int, *payloads: bytes) -> list[Sent]:
        """One claim of len(payloads) messages, filled and committed in order (send_many)."""
        h = self.claim(pid, len(payloads))
        out = []
        for k, p in enumerate(payloads):
            self.fill(h + k, pid, p)
            self.commit(h + k)
            out.append(Sent(h + k, pid, timestamp_of(h + k), p))
        self.notify_readers()
        return out

    # --- 26.4: a reader judged a hole dead ---
    def abandon(self, x: int) -> None:
        assert self.slot_word(x) == word(x, WRITING)
        u64(self.b, self.slot_at(x) + SL_WORD, word(x, ABANDONED))
        u64(self.b, S_ABANDONED, u64(self.b, S_ABANDONED) + 1)
        self.notify_readers()

    # --- 26.1: a reader attached (its process since died: nobody holds its lock) ---
    def attach_dead_reader(self, i: int, pid: int) -> None:
        b, at = self.b, self.reader_at(i)
        self.lock_mutex()
        h = self.head
        gen = u32(b, at + RE_GENERATION) + 1
        u32(b, at + RE_GENERATION, gen)
        cursor = h - self.g.capacity if h >= self.g.capacity else 0
        u64(b, at + RE_CURSOR, cursor)
        u64(b, at + RE_START, cursor)  # the cursor it attached at (19.1)
        u64(b, at + RE_LOST, 0)
        u64(b, at + RE_RECEIVED, 0)
        u32(b, at + RE_PID, pid)
        u64(b, at + RE_ATTACHED_NS, CREATED_NS)
        u64(b, at + RE_STATE, entry_state(gen))
        u32(b, S_READERS_GEN, u32(b, S_READERS_GEN) + 1)

    # --- 25.7: a claim dropped by its (live) writer ---
    def drop_claim(self, x: int, scribble: bytes = b"") -> None:
        """The claimant wrote `scribble` into the payload in place, then dropped the claim:
        cancelled = x + 1, then the CAS W(x) -> A(x), then notify readers. Not `abandoned`."""
        b, s = self.b, self.slot_at(x)
        assert self.slot_word(x) == word(x, WRITING)
        b[s + SLOT_HEADER : s + SLOT_HEADER + len(scribble)] = scribble
        u64(b, s + SL_CANCELLED, x + 1)
        u64(b, s + SL_WORD, word(x, ABANDONED))
        self.notify_readers()

    # --- 19.3, 26.8: groups ---
    def group_at(self, g: int) -> int:
        assert g < self.g.max_groups
        return self.g.groups_offset + GROUP_ENTRY * g

    def attach_member(self, i: int, pid: int, name: str) -> int:
        """26.1 with a group (26.8.1), at 'oldest': finds or creates the group, then attaches
        reader entry i as its member. Returns the group's index."""
        b, g = self.b, self.g
        raw = name.encode("ascii")
        assert 1 <= len(raw) <= MAX_GROUP_NAME and all(0x20 <= c <= 0x7E and c != 0x2F for c in raw)
        self.lock_mutex()
        found, free = None, None
        for k in range(g.max_groups):
            at = self.group_at(k)
            if u64(b, at + GE_STATE) != GROUP_ACTIVE:
                free = k if free is None else free
            elif b[at + GE_NAME : at + GE_NAME + u32(b, at + GE_NAME_LEN)] == raw:
                found = k
                break
        if found is None:  # 26.8.1 step 3: create it in the first free entry
            assert free is not None
            found, at = free, self.group_at(free)
            h = self.head
            start = h - g.capacity if h >= g.capacity else 0
            u32(b, at + GE_MUTEX + MX_KIND, MUTEX_KIND)  # pthread_mutex_init (7.1 step 7)
            for off, v in [(GE_START, start), (GE_CURSOR, start), (GE_RECEIVED, 0)]:
                u64(b, at + off, v)
            u64(b, at + GE_LOST, 0)
            u64(b, at + GE_SKIPPED, 0)
            u32(b, at + GE_GENERATION, u32(b, at + GE_GENERATION) + 1)
            u32(b, at + GE_NAME_LEN, len(raw))
            b[at + GE_NAME : at + GE_NAME + MAX_GROUP_NAME] = raw.ljust(MAX_GROUP_NAME, b"\0")
            u64(b, at + GE_CREATED_NS, CREATED_NS)
            u64(b, at + GE_STATE, GROUP_ACTIVE)
        r = self.reader_at(i)
        assert u64(b, r + RE_STATE) == 0 and u64(b, r + RE_HOLD) == 0
        cursor = u64(b, self.group_at(found) + GE_CURSOR)
        u32(b, r + RE_GROUP, found + 1)
        gen = u32(b, r + RE_GENERATION) + 1
        u32(b, r + RE_GENERATION, gen)
        for off, v in [(RE_CURSOR, cursor), (RE_START, cursor), (RE_LOST, 0), (RE_RECEIVED, 0)]:
            u64(b, r + off, v)
        u64(b, r + RE_SKIPPED, 0)
        u32(b, r + RE_PID, pid)
        u64(b, r + RE_ATTACHED_NS, CREATED_NS)
        u64(b, r + RE_STATE, entry_state(gen))
        u32(b, S_READERS_GEN, u32(b, S_READERS_GEN) + 1)
        return found

    def member_take(self, i: int) -> int:
        """26.8.2: one take by member i of a committed message (the only kind the vectors need):
        the group mutex, hold, the group cursor, received, hold cleared, then its own share."""
        b, r = self.b, self.reader_at(i)
        at = self.group_at(u32(b, r + RE_GROUP) - 1)
        u32(b, at + GE_MUTEX + MX_COUNT, 1)  # a lock and unlock leave __count 1 (A.2)
        c = u64(b, at + GE_CURSOR)
        assert self.slot_word(c) == word(c, COMMITTED)
        u64(b, r + RE_HOLD, (c << 2) | HOLD_COPY)
        u64(b, at + GE_CURSOR, c + 1)
        u64(b, at + GE_RECEIVED, u64(b, at + GE_RECEIVED) + 1)
        u64(b, r + RE_HOLD, 0)
        u64(b, r + RE_RECEIVED, u64(b, r + RE_RECEIVED) + 1)
        return c

    def close_reader(self, i: int) -> None:
        """26.6 under the mutex: state 0, readers_gen + 1 (group and hold stay as they are)."""
        self.lock_mutex()
        u64(self.b, self.reader_at(i) + RE_STATE, 0)
        u32(self.b, S_READERS_GEN, u32(self.b, S_READERS_GEN) + 1)
        u32(self.b, S_SPACE_EPOCH, u32(self.b, S_SPACE_EPOCH) + 1)

    def groups_cell(self) -> str:
        """The manifest's `groups`: index:name:start:cursor:received:lost:skipped:members."""
        b, g, out = self.b, self.g, []
        for k in range(g.max_groups):
            at = self.group_at(k)
            if u64(b, at + GE_STATE) != GROUP_ACTIVE:
                continue
            name = b[at + GE_NAME : at + GE_NAME + min(u32(b, at + GE_NAME_LEN), 40)].decode()
            assert ":" not in name and " " not in name
            members = sum(
                1
                for i in range(g.max_readers)
                if u64(b, self.reader_at(i) + RE_STATE) != 0
                and u32(b, self.reader_at(i) + RE_GROUP) == k + 1
            )
            f = [u64(b, at + o) for o in (GE_START, GE_CURSOR, GE_RECEIVED, GE_LOST, GE_SKIPPED)]
            out.append(":".join([str(k), name, *map(str, f), str(members)]))
        return " ".join(out) or "-"


@dataclass
class StreamVector:
    file: str
    data: bytes | None  # None: a row about a file written elsewhere (a record vector)
    open_as: str = "stream"  # stream | record: which opener the row is about
    stage: str = "ok"  # ok | open | attach | recv
    error: str = "-"
    error_text: str = "-"
    peek: str = "stream"  # record | stream | unknown (section 16's dispatch)
    backpressure: str = "-"
    capacity: str = "-"
    max_bytes: str = "-"
    max_readers: str = "-"
    max_writers: str = "-"
    dtype: str = "-"
    shape: str = "-"
    head_open: str = "-"
    head: str = "-"
    cursor: str = "-"
    messages: str = "-"
    lost: str = "-"
    abandoned: str = "-"
    dropped: str = "-"
    recoveries: str = "-"
    max_groups: str = "-"
    skipped: str = "-"
    groups: str = "-"
    note: str = ""


STREAM_COLUMNS = [
    "file",
    "open_as",
    "stage",
    "error",
    "error_text",
    "peek",
    "backpressure",
    "capacity",
    "max_bytes",
    "max_readers",
    "max_writers",
    "dtype",
    "shape",
    "head_open",
    "head",
    "cursor",
    "messages",
    "lost",
    "abandoned",
    "dropped",
    "recoveries",
    "max_groups",
    "skipped",
    "groups",
    "note",
]


def stream_ok(
    file: str,
    img: StreamImage,
    messages: list[Sent],
    *,
    head: int | None = None,
    cursor: int,
    lost: int = 0,
    skipped: int = 0,
    abandoned: int | None = None,
    dropped: int | None = None,
    recoveries: int = 0,
    stage: str = "ok",
    note: str = "",
) -> StreamVector:
    """A valid stream: what a reader attached at 'oldest' takes from it, and the header after."""
    g = img.g
    v = StreamVector(file, bytes(img.b), stage=stage, note=note)
    v.backpressure = "drop_oldest" if g.drop_oldest else "block"
    v.capacity, v.max_bytes = str(g.capacity), str(g.max_bytes)
    v.max_readers, v.max_writers = str(g.max_readers), str(g.max_writers)
    v.dtype = DTYPES[g.dtype][0] if g.dtype else "bytes"
    v.shape = str(g.shape) if g.dtype else "-"
    v.head_open = str(img.head)
    v.head = str(img.head if head is None else head)
    v.cursor = str(cursor)
    v.messages = " ".join(m.cell() for m in messages) or "-"
    v.lost = str(lost)
    v.abandoned = str(u64(img.b, S_ABANDONED) if abandoned is None else abandoned)
    v.dropped = str(u64(img.b, S_DROPPED) if dropped is None else dropped)
    v.recoveries = str(recoveries)
    v.max_groups = str(g.max_groups)
    v.skipped = str(skipped)
    v.groups = img.groups_cell() if g.max_groups else "-"
    return v


def payload(x: int, max_bytes: int) -> bytes:
    """Message x of a byte stream: raw bytes; lengths vary, so that a slot keeps an earlier
    lap's bytes past a shorter message."""
    text = bytes([x & 0xFF, 0x00, 0xFF]) + f" message {x} ".encode() + "✓".encode()
    n = (x * 11 + 5) % (max_bytes + 1)
    return (text * (max_bytes // len(text) + 1))[:n]


def frame(dtype: str, shape: tuple[int, ...], k: int) -> bytes:
    return np.ascontiguousarray(pattern(dtype, shape, k)).tobytes()


def stream_valid_vectors() -> tuple[list[StreamVector], dict[str, StreamImage]]:
    out: list[StreamVector] = []
    bases: dict[str, StreamImage] = {}
    A, B = DEAD_PID, DEAD_PID_2

    # A fresh stream, the geometry of section 17's second example (4, 64, 16, 64).
    img = StreamImage(stream_geometry(4, 64, max_readers=16, max_writers=64))
    assert img.g.total_size == 16384
    out.append(
        stream_ok("stream-bytes-empty.seg", img, [], cursor=0, note="as create leaves it (21.1)")
    )

    # A few messages from two writers: one empty, one of exactly max_bytes, raw bytes, a batch.
    img = StreamImage(stream_geometry(8, 100))
    msgs = img.send(A, b"")
    msgs += img.send(B, bytes(range(100)))
    msgs += img.send(A, b"\x00\xff\ntwo in one claim", "héllo ✓".encode())
    img.close_writer(B)
    bases["bytes"] = img
    out.append(
        stream_ok(
            "stream-bytes-committed.seg",
            img,
            msgs,
            cursor=0,
            note="4 messages (empty, max_bytes long, a batch of 2) from 2 writers; B closed since",
        )
    )

    # drop_oldest, wrapped: 10 messages through 4 slots with nobody attached (dropped 6).
    img = StreamImage(stream_geometry(4, 24, drop_oldest=True))
    sent: list[Sent] = []
    for x in range(10):
        sent += img.send(A if x % 3 else B, payload(x, 24))
    assert img.head == 10 and u64(img.b, S_DROPPED) == 6
    out.append(
        stream_ok(
            "stream-drop-oldest-wrapped.seg",
            img,
            sent[6:],
            cursor=6,
            note="head 10 > capacity 4: oldest is 6 (slot 2); earlier laps' bytes past each length",
        )
    )

    # drop_oldest with one slot: only the last message is retained.
    img = StreamImage(stream_geometry(1, 32, drop_oldest=True, dtype=14, shape=(2,)))
    sent = []
    for k in range(3):
        sent += img.send(A, frame("complex128", (2,), k))
    out.append(
        stream_ok(
            "stream-frames-complex128-2-cap1.seg",
            img,
            sent[2:],
            cursor=2,
            note="capacity 1, drop_oldest: oldest is head - 1",
        )
    )

    # Frames: float32 (2, 3) and a 0-d int16.
    img = StreamImage(stream_geometry(4, 24, dtype=11, shape=(2, 3)))
    sent = []
    for k in range(3):
        sent += img.send(A, frame("float32", (2, 3), k))
    bases["frames"] = img
    out.append(stream_ok("stream-frames-float32-2x3.seg", img, sent, cursor=0))

    img = StreamImage(stream_geometry(4, 2, dtype=4, shape=()))
    sent = img.send(B, frame("int16", (), 1), frame("int16", (), 2))
    out.append(stream_ok("stream-frames-int16-scalar.seg", img, sent, cursor=0, note="shape ()"))

    # A writer (A, entry 0) died between its claim of 2 and its commit: a message of more than
    # 4 KiB, so it was copying with the mutex free (25.3, last paragraph). Slot 2 stays WRITING
    # with its fields and half its payload written; B committed 3 after it. Nobody holds the
    # lock byte of entry 0, whose state is still the slot's writer_state: a reader judges it
    # dead kHoleCheck after it first found it (26.4) and skips it.
    big = 4160

    def with_hole(tag: str, edit: Callable[[StreamImage], None] | None, note: str) -> None:
        img = StreamImage(stream_geometry(8, big))
        msgs = img.send(A, payload(0, big)) + img.send(B, payload(1, big))
        h = img.claim(A, 1)
        p = bytes(range(256)) * 17  # 4352 bytes > kFillUnderLock
        img.fill(h, A, p[: len(p) // 2])
        u64(img.b, img.slot_at(h) + SL_LENGTH, len(p))
        msgs += img.send(B, payload(3, big))
        if edit is not None:
            edit(img)
        out.append(
            stream_ok(
                f"stream-writing-{tag}.seg",
                img,
                [msgs[0], msgs[1], msgs[2]],
                cursor=0,
                lost=1,
                abandoned=1,
                note=note,
            )
        )

    with_hole(
        "dead", None, "slot 2 WRITING, entry 0 unlocked with the slot's state: abandoned, lost 1"
    )

    def freed(img: StreamImage) -> None:
        u64(img.b, img.writer_at(0) + WE_STATE, 0)

    with_hole(
        "freed", freed, "as writing-dead, but entry 0 freed since (state 0): dead, no lock asked"
    )

    def bad_index(img: StreamImage) -> None:
        u32(img.b, img.slot_at(2) + SL_WRITER_INDEX, 7)

    with_hole("bad-index", bad_index, "as writing-dead, but writer_index 7 >= max_writers 4: dead")

    # A slot already ABANDONED (B died copying a message of more than 4 KiB, and a reader
    # judged it): skipped at once, counted lost.
    img = StreamImage(stream_geometry(8, big))
    msgs = img.send(A, payload(0, big))
    h = img.claim(B, 1)
    img.fill(h, B, b"abandoned " * 10)
    u64(img.b, img.slot_at(h) + SL_LENGTH, 4100)
    img.abandon(h)
    msgs += img.send(A, payload(2, big))
    out.append(
        stream_ok(
            "stream-abandoned.seg",
            img,
            msgs,
            cursor=0,
            lost=1,
            note="slot 1 ABANDONED (abandoned 1): skipped by a take, no wait",
        )
    )

    # A claimant died holding the mutex after marking 2 and 3 and before advancing head (25.3
    # step 9): the reader's attach locks the mutex and recovers (24.2): both abandoned, head 4.
    img = StreamImage(stream_geometry(8, 32))
    msgs = img.send(B, payload(0, 32)) + img.send(B, payload(1, 32))
    img.claim(A, 2, die="after-marks")
    assert img.head == 2 and img.slot_word(3) == word(3, WRITING)
    out.append(
        stream_ok(
            "stream-owner-died-claim.seg",
            img,
            msgs,
            head=4,
            cursor=0,
            lost=2,
            abandoned=2,
            recoveries=1,
            note="died in a claim of 2 after both marks: recovery abandons 2 and 3, head 2 -> 4",
        )
    )

    # The same, but a waiting reader had already judged the mark at head (26.4 "Holes at head"):
    # recovery steps past A(2) as past W(2).
    img = StreamImage(stream_geometry(8, 32))
    msgs = img.send(B, payload(0, 32)) + img.send(B, payload(1, 32))
    img.claim(A, 2, die="after-marks")
    img.abandon(2)
    out.append(
        stream_ok(
            "stream-owner-died-judged.seg",
            img,
            msgs,
            head=4,
            cursor=0,
            lost=2,
            abandoned=2,
            recoveries=1,
            note="as owner-died-claim, but slot 2 already ABANDONED by a reader: head still -> 4",
        )
    )

    # drop_oldest, nobody attached: the dead claimant was overwriting message 0 (x = 4):
    # claim_dropped and claim_seq stored (25.3 step 8.1), slot 0 marked, dropped not yet stored.
    img = StreamImage(stream_geometry(4, 32, drop_oldest=True))
    msgs = []
    for x in range(4):
        msgs += img.send(B, payload(x, 32))
    img.claim(A, 1, die="after-mark")
    assert u64(img.b, S_CLAIM_SEQ) == 5 and u64(img.b, S_DROPPED) == 0
    out.append(
        stream_ok(
            "stream-owner-died-overwrite.seg",
            img,
            msgs[1:],
            head=5,
            cursor=1,
            lost=1,
            abandoned=1,
            dropped=1,
            recoveries=1,
            note="died after marking 4 over 0: recovery stores dropped 1 and abandons 4",
        )
    )

    # The same claimant dying one step earlier: claim_seq stored, slot 0 not yet marked.
    img = StreamImage(stream_geometry(4, 32, drop_oldest=True))
    msgs = []
    for x in range(4):
        msgs += img.send(B, payload(x, 32))
    img.claim(A, 1, die="before-mark")
    assert u64(img.b, S_CLAIM_SEQ) == 5 and img.slot_word(0) == word(0, COMMITTED)
    out.append(
        stream_ok(
            "stream-owner-died-before-mark.seg",
            img,
            msgs,
            head=4,
            cursor=0,
            recoveries=1,
            note="died between claim_seq and the mark: recovery leaves dropped 0 and head 4",
        )
    )

    # A writer died filling a small claim, which it does holding the mutex (25.3, last
    # paragraph): head is past its mark, so recovery finds nothing at head, and the mark is an
    # ordinary hole, judged dead like any other (24.2 step 2, 26.4).
    img = StreamImage(stream_geometry(8, 32))
    msgs = img.send(B, payload(0, 32)) + img.send(B, payload(1, 32))
    h = img.claim(A, 1)
    img.fill(h, A, b"filled under the mutex"[:10])
    img.die_holding_mutex(A)
    out.append(
        stream_ok(
            "stream-owner-died-filling.seg",
            img,
            msgs,
            head=3,
            cursor=0,
            lost=1,
            abandoned=1,
            recoveries=1,
            note="died filling a small claim under the mutex: recovery leaves head 3; 2 is a hole",
        )
    )

    # A reader attached at cursor 0 of a block ring, alive while 4 messages filled it, then
    # killed: it gates every writer until one reaps it (25.3 step 5, 25.5).
    img = StreamImage(stream_geometry(4, 32))
    img.attach_dead_reader(0, A)
    msgs = []
    for x in range(4):
        msgs += img.send(B, payload(x, 32))
    out.append(
        stream_ok(
            "stream-dead-reader-full.seg",
            img,
            msgs,
            cursor=0,
            note="block, full (head 4), reader 0 attached at 0 and dead: a waiting writer reaps it",
        )
    )

    # A claim its (live) writer dropped (25.7): A(1) with cancelled = 2, some bytes written in
    # place and no length. A reader steps over it and counts it skipped, not lost; `abandoned`
    # does not count it.
    img = StreamImage(stream_geometry(8, 100))
    msgs = img.send(A, payload(0, 100))
    h = img.claim(A, 1)
    img.drop_claim(h, b"written in place, then dropped")
    msgs += img.send(B, payload(2, 100))
    out.append(
        stream_ok(
            "stream-claim-dropped.seg",
            img,
            msgs,
            cursor=0,
            skipped=1,
            note="slot 1 A(1) with cancelled 2 (a dropped claim): skipped 1, lost 0, abandoned 0",
        )
    )

    # The slot of that dropped claim a lap later (capacity 4): B died copying message 5 into
    # it and a reader judged it, so it holds A(5) with cancelled still 2, from the earlier lap:
    # a loss, not a dropped claim (20.1: any other value means nothing).
    img = StreamImage(stream_geometry(4, 100))
    msgs = img.send(A, payload(0, 100))
    img.drop_claim(img.claim(A, 1), b"dropped")
    for x in (2, 3, 4):
        msgs += img.send(A, payload(x, 100))
    h = img.claim(B, 1)
    img.fill(h, B, b"half")
    img.abandon(h)
    msgs += img.send(A, payload(6, 100))
    assert u64(img.b, img.slot_at(5) + SL_CANCELLED) == 2 and img.head == 7
    out.append(
        stream_ok(
            "stream-claim-stale-cancelled.seg",
            img,
            [m for m in msgs if m.seq >= 3],
            cursor=3,
            lost=1,
            note="slot 1 A(5) with cancelled 2 (of message 1, a lap before): lost, not skipped",
        )
    )

    # A group table of 2 (19.3): group 0 "workers" created at 0 by a member (entry 0) that took
    # messages 0 and 1 (group cursor 2, received 2) and closed; entry 1 of the table is free.
    # A solo reader attached at oldest is no member: it takes every message from 0.
    img = StreamImage(stream_geometry(8, 100, max_groups=2))
    msgs = img.send(A, payload(0, 100), payload(1, 100)) + img.send(B, payload(2, 100))
    assert img.attach_member(0, B, "workers") == 0
    assert [img.member_take(0), img.member_take(0)] == [0, 1]
    img.close_reader(0)
    msgs += img.send(A, payload(3, 100))
    bases["groups"] = img
    out.append(
        stream_ok(
            "stream-groups.seg",
            img,
            msgs,
            cursor=0,
            note="max_groups 2, group 0 'workers' at cursor 2 (received 2), its member closed",
        )
    )

    # Another C library's mutex: a read-only handle opens it (S20 is for handles that lock the
    # mutex); a writable open and a reader's attach are refused.
    for tag, off, value in [
        ("mutex-abi-other", S_MUTEX_ABI, 0x0202),
        ("mutex-size-48", S_MUTEX_SIZE, 48),
    ]:
        img = StreamImage(bases["bytes"].g)
        img.b[:] = bases["bytes"].b
        u32(img.b, off, value)
        v = stream_ok(f"stream-{tag}.seg", img, [], cursor=0, stage="attach")
        v.error, v.error_text = "LayoutError", "another C library or architecture"
        v.head, v.cursor, v.messages, v.lost, v.skipped = "-", "-", "-", "-", "-"
        v.abandoned, v.dropped, v.recoveries = "-", "-", "-"
        v.note = "read-only open accepted; a writable open (S20) and reader() (26.1) refused"
        out.append(v)

    # A committed slot whose length exceeds max_bytes: the take after message 0 is refused.
    img = StreamImage(stream_geometry(8, 100))
    msgs = img.send(A, payload(0, 100)) + img.send(A, payload(1, 100))
    u64(img.b, img.slot_at(1) + SL_LENGTH, 101)
    v = stream_ok("stream-length-101.seg", img, msgs[:1], cursor=0, stage="recv")
    v.error, v.error_text = "LayoutError", "message 1 claims 101 bytes, more than max_bytes"
    v.lost, v.abandoned, v.dropped, v.recoveries, v.skipped = "-", "-", "-", "-", "-"
    v.note = "26.2: a committed length > max_bytes is refused, not copied"
    out.append(v)

    # The other corrupt words and lengths a take refuses where it stands (26.2, 22): a word with
    # no tag (never stored, 20.2), here for a later lap's number, which must not be taken for a
    # lap; a word for a later number of another slot; a frame shorter than max_bytes.
    def refused_take(file: str, img: StreamImage, msgs: list[Sent], text: str, note: str) -> None:
        v = stream_ok(file, img, msgs, cursor=0, stage="recv")
        v.error, v.error_text = "LayoutError", text
        v.lost, v.abandoned, v.dropped, v.recoveries, v.skipped = "-", "-", "-", "-", "-"
        v.note = note
        out.append(v)

    img = StreamImage(stream_geometry(8, 100))
    msgs = img.send(A, payload(0, 100)) + img.send(A, payload(1, 100))
    u64(img.b, img.slot_at(1) + SL_WORD, word(9, 0))
    refused_take(
        "stream-word-no-tag.seg",
        img,
        msgs[:1],
        "slot of message 1 holds a word with no tag, for message 9",
        "26.2 step 3: tag 0 with x 9 > 0 in slot 1 (not a lap): refused, and again at every take",
    )
    img = StreamImage(stream_geometry(8, 100))
    msgs = img.send(A, payload(0, 100)) + img.send(A, payload(1, 100))
    u64(img.b, img.slot_at(1) + SL_WORD, word(10, COMMITTED))
    refused_take(
        "stream-word-other-slot.seg",
        img,
        msgs[:1],
        "slot of message 1 holds a word for message 10",
        "26.2 step 4: C(10) in slot 1 of 8 (10 mod 8 = 2): not a lap, refused",
    )
    img = StreamImage(stream_geometry(4, 24, dtype=11, shape=(2, 3)))
    msgs = img.send(A, frame("float32", (2, 3), 0)) + img.send(A, frame("float32", (2, 3), 1))
    u64(img.b, img.slot_at(1) + SL_LENGTH, 20)
    refused_take(
        "stream-frame-short.seg",
        img,
        msgs[:1],
        "message 1 claims 20 bytes, not the frame's 24",
        "26.2 step 2: a committed frame shorter than max_bytes is refused, not copied",
    )
    return out, bases


def stream_refused_vectors(bases: dict[str, StreamImage]) -> list[StreamVector]:
    """One vector per refusal of section 22 a file can show (S3-S19), then the kind refusals."""
    out: list[StreamVector] = []
    good = bytes(bases["bytes"].b)
    frames = bytes(bases["frames"].b)
    total = len(good)

    def refused(tag: str, data: bytes, text: str, peek: str = "stream", note: str = "") -> None:
        out.append(
            StreamVector(
                f"stream-corrupt-{tag}.seg",
                data,
                stage="open",
                error="LayoutError",
                error_text=text,
                peek=peek,
                note=note,
            )
        )

    def poke(base: bytes, *edits: tuple[int, int, int]) -> bytes:
        """edits: (offset, width in bytes, value)."""
        b = bytearray(base)
        for off, width, value in edits:
            changed = int.from_bytes(b[off : off + width], "little") != value
            assert changed or len(edits) > 1, f"poke at {off} changes nothing"
            b[off : off + width] = value.to_bytes(width, "little")
        return bytes(b)

    refused("short", good[:100], "is 100 bytes, smaller than the xshm header", peek="unknown")  # S3
    refused(
        "not-ready",
        poke(good, (S_STATE, 4, 0)),
        "state is 0, not READY: the segment was never made ready",
        note="S5; the dispatch does not look at state",
    )
    refused(
        "bad-magic",
        poke(good, (0, 8, int.from_bytes(b"XSHMSEX\x00", "little"))),
        "bad magic: not an xshm segment",
        peek="unknown",
    )  # S6
    refused(
        "version-3",
        poke(good, (S_VERSION, 4, 3)),
        "layout version 3 is not supported (this build reads versions 1 and 2)",
        peek="unknown",
    )
    refused("header-size", poke(good, (S_HEADER_SIZE, 4, 8192)), "header_size 8192 is not 4096")
    refused(
        "kind-1",
        poke(good, (S_KIND, 4, 1)),
        "kind 1 is not a stream (2)",
        peek="unknown",
        note="S9: kind 1 is reserved for a version-2 record",
    )
    refused("kind-3", poke(good, (S_KIND, 4, 3)), "kind 3 is not a stream (2)", peek="unknown")
    refused(
        "unknown-flags", poke(good, (S_FLAGS, 4, 3)), "unknown flags 3", note="S10: the whole word"
    )
    refused("ndim-9", poke(frames, (S_NDIM, 4, 9)), "ndim 9 exceeds 8")  # S11
    refused(
        "bytes-ndim-1",
        poke(good, (S_NDIM, 4, 1), (S_SHAPE, 8, 100)),
        "a byte stream (dtype 0) has ndim 0",
    )  # S12
    refused("unknown-dtype", poke(frames, (S_DTYPE, 4, 15)), "unknown dtype code 15")  # S13
    refused("unused-shape", poke(frames, (S_SHAPE + 16, 8, 1)), "unused shape entries are not zero")
    refused(
        "bytes-unused-shape",
        poke(good, (S_SHAPE, 8, 1)),
        "unused shape entries are not zero",
        note="S14: a byte stream's shape[0..8) are all unused",
    )
    refused(
        "mutex-size-0",
        poke(good, (S_MUTEX_SIZE, 4, 0)),
        "mutex_size 0 does not fit the 64-byte mutex slot",
    )  # S15
    refused(
        "mutex-size-65",
        poke(good, (S_MUTEX_SIZE, 4, 65)),
        "mutex_size 65 does not fit the 64-byte mutex slot",
    )
    for lo, hi in S_RESERVED:  # S16: the first and the last byte of every reserved range
        for at in (lo, hi - 1):
            text = f"reserved header byte {at} is not zero"
            refused(f"reserved-{at}", poke(good, (at, 1, 1)), text)
    refused(
        "reserved-300-4095",
        poke(good, (4095, 1, 1), (300, 1, 0x80)),
        "reserved header byte 300 is not zero",
        note="S16 names the lowest",
    )
    # S17, with the header's own values; each refusal in section 17's order.
    geo = "impossible geometry: "
    refused(
        "capacity-0",
        poke(good, (S_CAPACITY, 4, 0)),
        geo + "capacity must be 1 to 2**30 messages, got 0",
    )
    refused(
        "capacity-2p30-plus-1",
        poke(good, (S_CAPACITY, 4, (1 << 30) + 1)),
        geo + "capacity must be 1 to 2**30 messages, got 1073741825",
    )
    refused(
        "max-bytes-0",
        poke(good, (S_MAX_BYTES, 8, 0)),
        geo + "max_bytes must be 1 to 2**30 bytes, got 0",
    )
    refused(
        "max-bytes-2p30-plus-1",
        poke(good, (S_MAX_BYTES, 8, (1 << 30) + 1)),
        geo + "max_bytes must be 1 to 2**30 bytes, got 1073741825",
    )
    refused(
        "max-readers-0", poke(good, (S_MAX_READERS, 4, 0)), geo + "max_readers must be 1 to 1024"
    )
    refused(
        "max-readers-1025",
        poke(good, (S_MAX_READERS, 4, 1025)),
        geo + "max_readers must be 1 to 1024",
    )
    refused(
        "max-writers-0", poke(good, (S_MAX_WRITERS, 4, 0)), geo + "max_writers must be 1 to 1024"
    )
    refused(
        "max-writers-1025",
        poke(good, (S_MAX_WRITERS, 4, 1025)),
        geo + "max_writers must be 1 to 1024",
    )
    groups = bytes(bases["groups"].b)
    refused(
        "max-groups-1025",
        poke(groups, (S_MAX_GROUPS, 4, 1025)),
        geo + "max_groups must be 0 to 1024, got 1025",
        note="S17: checked before the offsets it would change (S18)",
    )
    refused(
        "frame-size",
        poke(frames, (S_MAX_BYTES, 8, 32)),
        geo + "a frame of this dtype and shape is 24 bytes, not 32",
        note="float32 (2, 3) with max_bytes 32 (slot_size still matches)",
    )
    refused(
        "frame-too-big",
        poke(
            frames,
            (S_DTYPE, 4, 3),
            (S_NDIM, 4, 3),
            (S_SHAPE, 8, 1 << 15),
            (S_SHAPE + 8, 8, 1 << 15),
            (S_SHAPE + 16, 8, 2),
            (S_MAX_BYTES, 8, 1 << 30),
        ),
        geo + "a frame is limited to 2**30 bytes",
        note="uint8 (2^15, 2^15, 2): refused at the third extent (section 17's table)",
    )
    ring = stream_geometry(1 << 24, 65472, max_readers=1, max_writers=1)  # the inclusive limit
    refused(
        "ring-too-big",
        poke(
            good,
            (S_CAPACITY, 4, (1 << 24) + 1),
            (S_MAX_BYTES, 8, 65472),
            (S_SLOT_SIZE, 8, 65536),
            (S_MAX_READERS, 4, 1),
            (S_MAX_WRITERS, 4, 1),
            (S_WRITERS_OFFSET, 8, 4224),
            (S_SLOTS_OFFSET, 8, 8192),
            (S_TOTAL, 8, ring.total_size + 65536),
        ),
        geo + "capacity * max_bytes is too large: the ring would exceed 2**40 bytes",
        note="2^24 + 1 slots of 65536 bytes (section 17's table)",
    )
    at_limit = poke(
        good,
        (S_CAPACITY, 4, 1 << 24),
        (S_MAX_BYTES, 8, 65472),
        (S_SLOT_SIZE, 8, 65536),
        (S_MAX_READERS, 4, 1),
        (S_MAX_WRITERS, 4, 1),
        (S_WRITERS_OFFSET, 8, 4224),
        (S_SLOTS_OFFSET, 8, 8192),
        (S_TOTAL, 8, ring.total_size),
    )
    refused(
        "ring-limit-truncated",
        at_limit[:8192],
        f"segment is truncated: header says {ring.total_size} bytes, only 8192 exist",
        note="2^24 slots of 65536 bytes: the 2^40 limit is inclusive, so only S19 refuses it",
    )
    # S18: each of the four.
    geo_bad = "sizes or offsets in the header do not match its capacity, max_bytes and tables"
    refused("slot-size", poke(good, (S_SLOT_SIZE, 8, 256)), geo_bad)
    refused("slots-offset", poke(good, (S_SLOTS_OFFSET, 8, 3 * PAGE)), geo_bad)
    refused("readers-offset", poke(good, (S_READERS_OFFSET, 8, PAGE + 128)), geo_bad)
    refused("writers-offset", poke(good, (S_WRITERS_OFFSET, 8, PAGE + 128 * 3)), geo_bad)
    gg = bases["groups"].g
    refused(
        "groups-offset",
        poke(groups, (S_GROUPS_OFFSET, 8, gg.groups_offset + 64)),
        geo_bad,
        note="S18: groups_offset one entry-line past the end of the writer table",
    )
    bg = bases["bytes"].g
    refused(
        "groups-offset-no-table",
        poke(good, (S_GROUPS_OFFSET, 8, bg.writers_offset + 64 * bg.max_writers)),
        geo_bad,
        note="S18: max_groups 0 needs groups_offset 0, not the end of the writer table",
    )
    # S19
    refused(
        "total-size",
        poke(good, (S_TOTAL, 8, total + PAGE)),
        f"total_size {total + PAGE} does not match the layout ({total})",
    )
    refused(
        "truncated",
        good[: total - PAGE],
        f"segment is truncated: header says {total} bytes, only {total - PAGE} exist",
    )

    # The kinds (16): a record opened as a stream (S4, before state), a stream as a record.
    for rec, note in [
        ("../published-float64-4.seg", "a record: S4"),
        ("../corrupt-not-ready.seg", "a record that is not READY: S4 is looked at before state"),
    ]:
        out.append(
            StreamVector(
                rec,
                None,
                stage="open",
                error="LayoutError",
                error_text="is a record, not a stream: open it with SharedMemoryManager.open",
                peek="record",
                note=note,
            )
        )
    out.append(
        StreamVector(
            "stream-bytes-committed.seg",
            None,
            open_as="record",
            stage="open",
            error="LayoutError",
            error_text="it is a stream (layout version 2), not a record: open it with Stream.open",
            note="section 8 item 6 names the stream",
        )
    )
    out.append(
        StreamVector(
            "stream-corrupt-kind-1.seg",
            None,
            open_as="record",
            stage="open",
            error="LayoutError",
            error_text="layout version 2 is not supported",
            peek="unknown",
            note="version 2 but not kind 2: item 6's other text",
        )
    )
    out.append(
        StreamVector(
            "stream-corrupt-not-ready.seg",
            None,
            open_as="record",
            stage="open",
            error="LayoutError",
            error_text="state is 0, not READY: the segment was never made ready",
            note="a stream that is not READY: item 4 is looked at before item 6 (section 16)",
        )
    )
    return out


def stream_vectors() -> list[StreamVector]:
    check_geometry_table()
    valid, bases = stream_valid_vectors()
    return valid + stream_refused_vectors(bases)


def write_streams(out_dir: Path) -> list[StreamVector]:
    vectors = stream_vectors()
    d = out_dir / STREAMS_DIR
    d.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Golden streams (layout version 2): what an opener must do with each file. Written by",
        "# make_segments.py from docs/LAYOUT.md Part II alone (no xshm call); the reference's",
        "# suites (cpp/tests/vectors_test.cpp StreamVectors.*, tests/unit/test_vectors.py",
        "# test_stream_*) run every row against it. docs/LAYOUT.md section 13 defines the",
        "# columns below. Use them as section 13 says: copy the file to",
        "# /dev/shm/<unique name>, open it, compare, unlink.",
        "# '-': not applicable. Informative: error_text (a substring of the reference's message)",
        "# and note; every other column is normative.",
        "# open_as: the opener the row is about (stream: Stream.open; record:",
        "#   SharedMemoryManager.open); file: relative to this directory.",
        "# stage: ok (opens read-only and writable, the file unchanged; a reader attached at",
        "#   'oldest' takes exactly `messages`, then finds none); open (both opens refused);",
        "#   attach (a read-only open is accepted, a writable open and reader() are refused);",
        "#   recv (as ok for `messages`, then the next receive is refused).",
        "# Normalised as section 13 says; the writers' pids are 4194305 and 4194306 (both above",
        "#   PID_MAX_LIMIT), a message's timestamp_ns is created_ns + seq milliseconds.",
        "# peek: section 16's dispatch of the file (the reference's peek_kind).",
        "# head_open: the header's head after opening; head, cursor: after a reader attached at",
        "#   'oldest' (its attach may recover, 24.2): the header's head and that reader's cursor",
        "#   (its start, 19.1).",
        "# messages: seq:writer_pid:timestamp_ns:payload-hex for each, in order ('-': none).",
        "# lost, abandoned, dropped, recoveries: the reader's lost count and the header's words",
        "#   once it has taken every message (a take that skips a hole waits kHoleCheck first).",
        "# max_groups: the header's (0: no group table). skipped: that reader's skipped count",
        "#   (dropped claims, 25.7): received + lost + skipped = head - cursor (28.2).",
        "# groups: the active groups (26.8.5) as index:name:start:cursor:received:lost:skipped:",
        "#   members (attached entries naming it), space separated; '-': none.",
        "\t".join(STREAM_COLUMNS),
    ]
    for v in vectors:
        if v.data is not None:
            (d / v.file).write_bytes(v.data)
        row = [str(getattr(v, c)) for c in STREAM_COLUMNS]
        assert all("\t" not in c and "\n" not in c for c in row), row
        lines.append("\t".join(row))
    (d / "streams.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vectors


def main(out_dir: Path = HERE) -> list[Vector]:
    vectors = published_vectors() + state_vectors() + corrupt_vectors()
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Golden segments: what a reader (and a writer) must get from each file. Generated by",
        "# make_segments.py; docs/LAYOUT.md section 13 says how to use it. '-' = not applicable.",
        "# Normative: every column but these three, which are informative: error_text and",
        "# writer_error_text (substrings of the reference's messages; another implementation need",
        "# only raise the error kind of the error column) and note.",
        "\t".join(COLUMNS),
    ]
    for v in vectors:
        (out_dir / v.file).write_bytes(v.data)
        row = [str(getattr(v, c)) for c in COLUMNS]
        assert all("\t" not in c and "\n" not in c for c in row), row
        lines.append("\t".join(row))
    (out_dir / "segments.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_streams(out_dir)
    return vectors


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    vs = main(target)
    print(f"{len(vs)} vectors, {sum(len(v.data) for v in vs)} bytes, in {target}")
    ss = sorted((target / STREAMS_DIR).glob("*.seg"))
    n = sum(p.stat().st_size for p in ss)
    print(f"{len(ss)} streams, {n} bytes, in {target / STREAMS_DIR}")
