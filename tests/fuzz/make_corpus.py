"""Regenerates the seed corpora: tests/fuzz/corpus/ for the record targets (valid segments as raw
bytes, mode byte 0x00, and a few template edits, mode byte odd) and tests/fuzz/corpus-stream/
for fuzz_stream.cpp (its templates and a few edits). Run with xshm installed."""

from __future__ import annotations

import os
from pathlib import Path

import xshm

OUT = Path(__file__).with_name("corpus")
STREAM_OUT = Path(__file__).with_name("corpus-stream")


def raw(tag: str, **kw: object) -> bytes:
    name = f"xshm-corpus-{os.getpid()}-{tag}"
    with xshm.SharedMemoryManager.create(name, **kw) as m:  # type: ignore[arg-type]
        m.publish(counter=1)
        data = Path(f"/dev/shm/{name}").read_bytes()
        m.unlink()
    return data


def main() -> None:
    OUT.mkdir(exist_ok=True)
    seeds = {
        "raw-float64-4": b"\x00" + raw("a", shape=(4,), message_capacity=16),
        "raw-int16-2x3-nobackup": b"\x00" + raw("b", shape=(2, 3), dtype="int16", backup=False),
        "raw-bool-empty": b"\x00" + raw("c", shape=(0,), dtype="bool", message_capacity=0),
        "raw-short": b"\x00XSHMSEG\x00\x01\x00\x00\x00",
        "edit-version": b"\x01" + bytes([8, 0, 2]),
        "edit-ndim": b"\x03" + bytes([40, 0, 9]),
        "edit-message-len": b"\x01" + bytes([36, 16, 200]),  # live slot's message_len
        "edit-lock-odd": b"\x03" + bytes([0, 16, 1]),  # live slot's lock word, no backup
        "edit-shape": b"\x05" + bytes([48, 0, 255, 49, 0, 255]),
    }
    for name, data in seeds.items():
        (OUT / name).write_bytes(data)
    print(f"{len(seeds)} seeds, {sum(len(d) for d in seeds.values())} bytes")
    # fuzz_stream.cpp's seeds: its three templates as they are, and edits (u24 LE offset, value).
    stream_seeds = {
        "template-bytes-block": b"\x01",
        "template-frames-drop-oldest": b"\x03",
        "template-one-slot": b"\x05",
        "edit-head": b"\x01" + bytes([0, 1, 0, 0x7F]),  # head, offset 256
        "edit-capacity": b"\x03" + bytes([36, 0, 0, 9]),
        "edit-first-reader-cursor": b"\x01" + bytes([0, 16, 0, 0xF0]),  # reader 0, offset 4096
    }
    STREAM_OUT.mkdir(exist_ok=True)
    for name, data in stream_seeds.items():
        (STREAM_OUT / name).write_bytes(data)
    print(f"{len(stream_seeds)} stream seeds")


if __name__ == "__main__":
    main()
