"""The envelope (docs/BRIDGE.md): what an export encodes decodes to the same fields, and every
malformed, truncated, forged or foreign payload is an EnvelopeError naming the problem, never
another exception, whatever the bytes."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from xshm.bridge import _envelope as env
from xshm.bridge._envelope import EnvelopeError, Layout

RECORD = Layout.of_record("float32", (2, 3), 64)
STREAM = Layout.of_stream(128, 100, "drop_oldest")
FRAMES = Layout.of_stream(4, 24, "block", dtype="int32", shape=(2, 3))


def record_envelope(message: bytes = b"hello", values: bytes = bytes(24)) -> bytes:
    return env.encode_record(RECORD.hash(), 7, 5, 123, 9, 42, message, values)


def test_layouts_round_trip_with_their_source() -> None:
    for layout in (RECORD, STREAM, FRAMES, Layout.of_record("complex128", (), 0)):
        payload = env.encode_layout(layout, 99, "host-é", "name", 1234)
        got = env.decode(payload)
        assert isinstance(got, env.LayoutEnvelope)
        assert got.layout == layout and got.layout_hash == layout.hash()
        assert (got.epoch, got.host, got.name, got.pid) == (99, "host-é", "name", 1234)


def test_layout_hash_is_blake2b_of_the_layout_bytes() -> None:
    import hashlib

    want = hashlib.blake2b(RECORD.fixed_bytes(), digest_size=8).digest()
    assert RECORD.hash() == int.from_bytes(want, "little")
    assert len({RECORD.hash(), STREAM.hash(), FRAMES.hash()}) == 3
    assert Layout.of_record("float32", (2, 3), 65).hash() != RECORD.hash()


def test_a_record_round_trips_and_fits_its_layout() -> None:
    values = np.arange(6, dtype=np.float32).tobytes()
    got = env.decode(record_envelope(b"hi", values))
    assert isinstance(got, env.RecordEnvelope)
    assert (got.layout_hash, got.epoch, got.seq, got.timestamp_ns) == (RECORD.hash(), 7, 5, 123)
    assert (got.counter, got.writer_pid, bytes(got.message), bytes(got.values)) == (
        9, 42, b"hi", values,
    )  # fmt: skip
    got.check(RECORD)


def test_a_batch_round_trips() -> None:
    msgs = [(0, 10, 1, b""), (1, 11, 2, b"x" * 100), (5, 12, 3, memoryview(b"abc"))]
    got = env.decode(env.encode_batch(STREAM.hash(), 3, msgs))
    assert isinstance(got, env.Batch)
    assert got.seqs == [0, 1, 5] and got.timestamps_ns == [10, 11, 12]
    assert got.writer_pids == [1, 2, 3]
    assert [bytes(d) for d in got.data] == [b"", b"x" * 100, b"abc"]
    got.check(STREAM)
    frames = [(0, 1, 1, np.arange(6, dtype=np.int32).reshape(2, 3))]
    f = env.decode(env.encode_batch(FRAMES.hash(), 3, frames))
    assert isinstance(f, env.Batch)
    f.check(FRAMES)
    assert np.frombuffer(f.data[0], np.int32).tolist() == list(range(6))


def _with_header(payload: bytes, **fields: int) -> bytes:
    magic, version, kind, flags, h, epoch, body_len, reserved = env.HEADER.unpack_from(payload)
    vals = dict(version=version, kind=kind, flags=flags, h=h, body_len=body_len, reserved=reserved)
    vals.update(fields)
    head = env.HEADER.pack(
        magic, vals["version"], vals["kind"], vals["flags"], vals["h"], epoch,
        vals["body_len"], vals["reserved"],
    )  # fmt: skip
    return head + payload[env.HEADER.size :]


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "shorter than the 32-byte header"),
        (b"XSHB" + bytes(40), "not an xshm envelope"),
        (_with_header(record_envelope(), version=2), "envelope version 2"),
        (_with_header(record_envelope(), kind=9), "unknown envelope kind 9"),
        (_with_header(record_envelope(), flags=1), "reserved header fields"),
        (_with_header(record_envelope(), body_len=10**9), "header says 1000000000 body bytes"),
        (record_envelope()[:-1], "body bytes"),
    ],
)
def test_malformed_headers_are_refused(payload: bytes, says: str) -> None:
    with pytest.raises(EnvelopeError, match=says):
        env.decode(payload)


def _record_body(seq: int = 1, message_len: int = 0, tail: bytes = b"") -> bytes:
    body = struct.pack("<QQQII", seq, 0, 0, 0, message_len) + tail
    return env.HEADER.pack(env.MAGIC, 1, env.KIND_RECORD, 0, 1, 1, len(body), 0) + body


def test_malformed_records_are_refused() -> None:
    with pytest.raises(EnvelopeError, match="overruns the payload"):
        env.decode(_record_body(message_len=2**32 - 1, tail=b"abc"))
    with pytest.raises(EnvelopeError, match="sequence 0"):
        env.decode(_record_body(seq=0))
    too_long = env.decode(record_envelope(message=b"m" * 65))
    assert isinstance(too_long, env.RecordEnvelope)
    with pytest.raises(EnvelopeError, match="65 bytes exceeds the layout's 64"):
        too_long.check(RECORD)
    short = env.decode(record_envelope(values=bytes(23)))
    assert isinstance(short, env.RecordEnvelope)
    with pytest.raises(EnvelopeError, match="values of 23 bytes, the layout's are 24"):
        short.check(RECORD)
    bad_text = env.decode(record_envelope(message=b"ok\xff"))
    assert isinstance(bad_text, env.RecordEnvelope)
    with pytest.raises(EnvelopeError, match="not UTF-8 at byte 2"):
        bad_text.check(RECORD)


def test_malformed_batches_are_refused() -> None:
    ok = env.encode_batch(STREAM.hash(), 1, [(3, 0, 0, b"abc"), (4, 0, 0, b"de")])
    body = bytearray(ok[env.HEADER.size :])
    struct.pack_into("<I", body, 0, 3)  # one more message than there is
    with pytest.raises(EnvelopeError, match=r"overruns|cannot fit"):
        env.decode(ok[: env.HEADER.size] + bytes(body))
    struct.pack_into("<I", body, 0, 0)
    with pytest.raises(EnvelopeError, match="batch of 0 messages"):
        env.decode(ok[: env.HEADER.size] + bytes(body))
    back = env.encode_batch(STREAM.hash(), 1, [(4, 0, 0, b"a"), (4, 0, 0, b"b")])
    with pytest.raises(EnvelopeError, match="does not increase"):
        env.decode(back)
    big = env.decode(env.encode_batch(STREAM.hash(), 1, [(1, 0, 0, b"x" * 101)]))
    assert isinstance(big, env.Batch)
    with pytest.raises(EnvelopeError, match="101 bytes, the layout's at most 100"):
        big.check(STREAM)
    odd = env.decode(env.encode_batch(FRAMES.hash(), 1, [(1, 0, 0, b"x" * 23)]))
    assert isinstance(odd, env.Batch)
    with pytest.raises(EnvelopeError, match="23 bytes, the layout's 24"):
        odd.check(FRAMES)


def test_forged_layouts_are_refused() -> None:
    good = env.encode_layout(RECORD, 1, "h", "n", 1)
    with pytest.raises(EnvelopeError, match="layout hash does not match"):
        env.decode(_with_header(good, h=RECORD.hash() ^ 1))
    body = bytearray(good[env.HEADER.size :])
    body[1] = 99  # dtype code
    with pytest.raises(EnvelopeError, match="dtype code 99"):
        env.decode(good[: env.HEADER.size] + bytes(body))
    body = bytearray(good[env.HEADER.size :])
    body[2] = 9  # ndim
    with pytest.raises(EnvelopeError, match="ndim 9 exceeds 8"):
        env.decode(good[: env.HEADER.size] + bytes(body))
    with pytest.raises(EnvelopeError, match="source does not fill it"):
        env.decode(_with_header(good + b"!", body_len=len(good) - env.HEADER.size + 1))


def test_a_forged_huge_layout_decodes_but_says_what_it_would_reserve() -> None:
    """The decoder does not refuse a 100 GiB layout (its bytes are valid); the mirror compares
    reserve_nbytes with its cap before it makes anything (tests/bridge/test_zenoh.py)."""
    huge = Layout.of_record("float64", (100 * 2**30 // 8,), 0)
    got = env.decode(env.encode_layout(huge, 1, "h", "n", 1))
    assert isinstance(got, env.LayoutEnvelope)
    assert got.layout.reserve_nbytes >= 2 * 100 * 2**30  # a record has two slots


def test_random_and_mutated_bytes_raise_only_envelope_errors() -> None:
    rng = random.Random(1234)
    seeds = [
        record_envelope(),
        env.encode_layout(FRAMES, 1, "h", "n", 1),
        env.encode_batch(STREAM.hash(), 1, [(1, 0, 0, b"abc"), (2, 0, 0, b"")]),
    ]
    layouts = {RECORD.hash(): RECORD, STREAM.hash(): STREAM, FRAMES.hash(): FRAMES}
    for i in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += rng.randbytes(rng.randrange(8))
        if i % 10 == 0:
            data = bytearray(rng.randbytes(rng.randrange(80)))
        try:
            got = env.decode(bytes(data))
            layout = layouts.get(getattr(got, "layout_hash", 0))
            if layout is not None and not isinstance(got, env.LayoutEnvelope):
                env.check_fits(got, layout)
        except EnvelopeError:
            pass


def test_the_one_message_fast_path_agrees_with_decode() -> None:
    """``decode_one`` (the Redis engine's path for a batch of one message) returns what
    ``decode`` returns for every valid batch of one, and None for everything else, valid or
    not: mutated and random bytes never get past it unchecked."""
    rng = random.Random(4321)
    one = env.encode_batch(STREAM.hash(), 9, [(5, 6, 7, b"payload")])
    seeds = [one, env.encode_batch(STREAM.hash(), 9, [(5, 6, 7, b"a"), (6, 0, 0, b"b")])]
    seeds.append(record_envelope())
    accepted = 0
    for i in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(0, 3)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += rng.randbytes(rng.randrange(4))
        if i % 10 == 0:
            data = bytearray(rng.randbytes(rng.randrange(100)))
        fast = env.decode_one(bytes(data))
        if fast is None:
            continue
        accepted += 1
        full = env.decode(bytes(data))  # raises if the fast path let something bad through
        assert isinstance(full, env.Batch) and len(full.seqs) == 1
        got = (full.layout_hash, full.epoch, full.seqs[0], full.timestamps_ns[0])
        assert fast[:4] == got and fast[4] == full.writer_pids[0]
        assert bytes(fast[5]) == bytes(full.data[0])
    assert accepted > 100  # the unmutated and harmlessly mutated ones
    assert env.decode_one(one) is not None
    for data in (b"payload", b"", np.arange(3, dtype=np.int32)):
        made = env.encode_one(STREAM.hash(), 9, 5, 6, 7, data)
        assert made == env.encode_batch(STREAM.hash(), 9, [(5, 6, 7, data)])


def test_the_spec_names_the_status_fields_in_order() -> None:
    """docs/BRIDGE.md section 6 lists the status record's values as the code writes them."""
    import re
    from pathlib import Path

    from xshm.bridge._status import FIELDS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "BRIDGE.md").read_text()
    section = doc.split("## 6. Status", 1)[1].split("## 7.", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.M)
    assert [(int(i), name) for i, name in rows] == list(enumerate(FIELDS))


def test_the_spec_gives_the_header_as_the_code_packs_it() -> None:
    """docs/BRIDGE.md 3.1: offsets and sizes of the header's fields add up to env.HEADER."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "BRIDGE.md").read_text()
    section = doc.split("### 3.1 Header", 1)[1].split("### 3.2", 1)[0]
    rows = [(int(o), int(n)) for o, n in re.findall(r"^\| (\d+) \| (\d+) \|", section, re.M)]
    sizes = [4, 1, 1, 2, 8, 8, 4, 4]  # "<4sBBHQQII"
    assert [n for _, n in rows] == sizes
    assert [o for o, _ in rows] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert env.HEADER.size == sum(sizes) == 32


def test_a_record_naming_a_streams_layout_is_refused() -> None:
    """A forged record envelope carrying a stream layout's hash (or a batch a record's) does
    not reach the other kind's code."""
    rec = env.decode(env.encode_record(STREAM.hash(), 1, 1, 0, 0, 0, b"", b""))
    assert isinstance(rec, env.RecordEnvelope)
    with pytest.raises(EnvelopeError, match="a record envelope for a stream's layout"):
        env.check_fits(rec, STREAM)
    batch = env.decode(env.encode_batch(RECORD.hash(), 1, [(1, 0, 0, b"")]))
    assert isinstance(batch, env.Batch)
    with pytest.raises(EnvelopeError, match="a batch envelope for a record's layout"):
        env.check_fits(batch, RECORD)


def test_layouts_the_core_would_refuse_are_refused() -> None:
    """Beyond LAYOUT.md's limits, or a frame stream whose max_bytes is not its frame's size
    (what the mirror reserves follows the frame, so the cap must see it)."""

    def forged(kind: int, code: int, shape: tuple[int, ...], size: int, capacity: int) -> bytes:
        bp = 0 if kind == 1 else 1
        fixed = struct.pack("<BBBBIII", kind, code, len(shape), bp, size, capacity, 0)
        fixed += struct.pack(f"<{len(shape)}Q", *shape)
        body = fixed + struct.pack("<HHI", 0, 0, 1)
        h = env._hash(fixed)
        return env.HEADER.pack(env.MAGIC, 1, env.KIND_LAYOUT, 0, h, 1, len(body), 0) + body

    cases = [
        (forged(1, 12, (8,), 2**24 + 1, 0), "message_capacity 16777217 over 2\\*\\*24"),
        (forged(1, 12, (2**38,), 0, 0), "over 2\\*\\*40"),
        (forged(2, 12, (1024, 1024), 1, 4), "max_bytes 1 is not its frame's 8388608"),
        (forged(2, 0, (), 2**30 + 1, 4), "capacity and max_bytes are 1 to 2\\*\\*30"),
    ]
    for payload, says in cases:
        with pytest.raises(EnvelopeError, match=says):
            env.decode(payload)
    assert isinstance(env.decode(forged(2, 12, (1024, 1024), 8 << 20, 4)), env.LayoutEnvelope)


def test_epoch_zero_and_long_names_are_refused() -> None:
    with pytest.raises(EnvelopeError, match="epoch 0"):
        env.decode(env.encode_record(RECORD.hash(), 0, 1, 0, 0, 0, b"", bytes(24)))
    good = env.encode_layout(RECORD, 1, "h", "n", 1)  # host "h": host_len 1
    body = bytearray(good[env.HEADER.size :])
    at = len(RECORD.fixed_bytes())
    body[at : at + 2] = (300).to_bytes(2, "little")  # host_len 300: 299 more bytes of host
    long = good[: env.HEADER.size] + bytes(body) + b"x" * 299
    long = _with_header(long, body_len=len(long) - env.HEADER.size)
    with pytest.raises(EnvelopeError, match="over 255 bytes"):
        env.decode(long)


def test_acks_round_trip_and_are_checked() -> None:
    payload = env.encode_ack(STREAM.hash(), 9, 41, 4096, b"m" * 16)
    got = env.decode(payload)
    assert got == env.Ack(STREAM.hash(), 9, 41, 4096, b"m" * 16)
    none_yet = env.decode(env.encode_ack(STREAM.hash(), 9, env.NO_SEQ, 1, bytes(16)))
    assert isinstance(none_yet, env.Ack) and none_yet.next_seq == env.NO_SEQ
    with pytest.raises(EnvelopeError, match="ack window 0"):
        env.decode(env.encode_ack(STREAM.hash(), 9, 1, 0, bytes(16)))
    with pytest.raises(EnvelopeError, match="ack envelope of 33 bytes"):
        env.decode(_with_header(payload + b"!", body_len=33))


def test_a_batch_carries_its_base() -> None:
    """base: the oldest sequence the export can still send; never past the first message."""
    got = env.decode(env.encode_batch(STREAM.hash(), 1, [(7, 0, 0, b"a")], base=3))
    assert isinstance(got, env.Batch) and got.base == 3
    assert env.decode(env.encode_batch(STREAM.hash(), 1, [(7, 0, 0, b"a")])).base == 7  # type: ignore[union-attr]
    with pytest.raises(EnvelopeError, match="batch base 8 is past its first message 7"):
        env.decode(env.encode_batch(STREAM.hash(), 1, [(7, 0, 0, b"a")], base=8))
