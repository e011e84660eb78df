"""Regenerates the golden segment vectors (tests/vectors/*.seg) and their manifest
(tests/vectors/segments.tsv) from the real implementation.

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
x86-64 with glibc only: the mutex bytes are glibc's x86-64 pthread_mutex_t.
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
    return vectors


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    vs = main(target)
    print(f"{len(vs)} vectors, {sum(len(v.data) for v in vs)} bytes, in {target}")
