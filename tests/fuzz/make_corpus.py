"""Regenerates the seed corpus of both fuzz targets (tests/fuzz/corpus/): valid segments as raw
bytes (mode byte 0x00) and a few template edits (mode byte odd). Run with xshm installed."""

from __future__ import annotations

import os
from pathlib import Path

import xshm

OUT = Path(__file__).with_name("corpus")


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


if __name__ == "__main__":
    main()
