"""atheris target: the bridge's envelope decoder (python/xshm/bridge/_envelope.py) on arbitrary
bytes. Coverage-guided over the decoder itself (pure Python, instrumented): every input must
decode or be refused with EnvelopeError; a decoded record or batch naming a known layout must
fit it or be refused the same way; the one-message fast path (decode_one) accepts only what
decode accepts, and says the same of it. Never another exception, never a hang.

    python tests/fuzz/fuzz_envelope.py [atheris/libFuzzer options] [CORPUS...]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from xshm.bridge import _envelope as env

LAYOUTS = [
    env.Layout.of_record("float32", (2, 3), 64),
    env.Layout.of_record("complex128", (), 0),
    env.Layout.of_stream(128, 100, "drop_oldest"),
    env.Layout.of_stream(4, 24, "block", dtype="int32", shape=(2, 3)),
]
BY_HASH = {layout.hash(): layout for layout in LAYOUTS}


def seeds() -> list[bytes]:
    """Valid envelopes of each kind: the seed corpus (tests/fuzz/corpus-envelope)."""
    rec = LAYOUTS[0]
    return [
        env.encode_layout(rec, 1, "host", "name", 42),
        env.encode_layout(LAYOUTS[3], 1, "h", "frames", 7),
        env.encode_record(rec.hash(), 1, 5, 0, 9, 42, b"hello", bytes(24)),
        env.encode_batch(LAYOUTS[2].hash(), 1, [(0, 1, 2, b"abc"), (3, 4, 5, b"")]),
        env.encode_batch(LAYOUTS[3].hash(), 1, [(7, 1, 2, bytes(24))]),
        env.encode_ack(LAYOUTS[2].hash(), 1, 5, 4096, bytes(range(16))),
    ]


@atheris.instrument_func
def one_input(data: bytes) -> None:
    fast = env.decode_one(data)
    if fast is not None:
        full = env.decode(data)  # an EnvelopeError here: the fast path let it through
        assert isinstance(full, env.Batch) and len(full.seqs) == 1, full
        assert fast[2] == full.seqs[0] and bytes(fast[5]) == bytes(full.data[0])
    try:
        got = env.decode(data)
        layout = BY_HASH.get(got.layout_hash)
        if layout is not None and isinstance(got, (env.RecordEnvelope, env.Batch)):
            env.check_fits(got, layout)
    except env.EnvelopeError:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-seeds"]:
        import pathlib

        out = pathlib.Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            (out / f"seed-{i}").write_bytes(s)
        raise SystemExit(0)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
