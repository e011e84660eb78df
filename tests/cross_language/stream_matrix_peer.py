"""The Python peer of the cross-language stream matrix (test_stream_matrix.py): the commands and
JSON lines of stream_peer.cpp's `write`/`take` modes (C++) and rust/xshm/examples/stream_peer.rs
(Rust), over the installed xshm package. A message is its writer id (u32), its counter (u64),
a body of varying length and the CRC-32 (zlib's) of all that, little-endian.

    write NAME N WID      sends N messages (send, and send_many of 5 now and then)
    take NAME N PAUSE_US  attaches at the oldest message, says ready, takes messages until its
                          cursor reaches N (pausing PAUSE_US after each), checks each
    drain NAME 0 0        attaches at the oldest message, says ready, takes messages until one
                          from writer id MARKER, checks each, prints the take summary
    member NAME GROUP 0   joins GROUP at the oldest message, says ready, takes until a message
                          from MARKER, prints {"ks": [the counters it took, in order], ...}

    hole NAME 3 WID       sends 3 messages, claims the next slot and never commits it: prints
                          {"claimed": SEQ} and waits to be killed (its claim is a hole)
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
import zlib

import xshm

WAIT = 120.0
HEAD = struct.Struct("<IQ")
MARKER = 0xFFFFFFFF  # the writer id of the message that ends a drain or a member


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def payload(wid: int, k: int, max_bytes: int, rng: random.Random) -> bytes:
    body = HEAD.pack(wid, k) + rng.randbytes(rng.randrange(max_bytes - 16 + 1))
    return body + zlib.crc32(body).to_bytes(4, "little")


def parse(data: bytes) -> tuple[int, int] | None:
    """The writer id and counter of a whole message (its CRC checked), None for a torn one."""
    if len(data) < 16 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        return None
    wid, k = HEAD.unpack_from(data)
    return wid, k


def write(name: str, n: int, wid: int) -> None:
    s = xshm.Stream.open(name, timeout=10)
    rng = random.Random(wid)
    k = 0
    first = last = -1
    while k < n:
        batch = min(n - k, 5 if rng.randrange(4) == 0 else 1)
        items = [payload(wid, k + j, s.max_bytes, rng) for j in range(batch)]
        seq = s.send(items[0], timeout=WAIT) if batch == 1 else s.send_many(items, timeout=WAIT)
        if first < 0:
            first = seq - (batch - 1)
        last = seq
        k += batch
    say(sent=n, first_seq=first, last_seq=last)


def take(name: str, n: int, pause_us: int, *, until_marker: bool = False) -> int:
    s = xshm.Stream.open(name, timeout=10)
    r = s.reader("oldest")
    start = r.cursor
    say(ready=True)
    torn = disorder = 0
    last_seq = -1
    next_k: dict[int, int] = {}
    while until_marker or r.cursor < n:
        m = r.recv(timeout=WAIT)
        if m.seq <= last_seq:
            disorder += 1
        last_seq = m.seq
        got = parse(bytes(m.data))
        if got is None:
            torn += 1
            continue
        wid, k = got
        if wid == MARKER:
            break
        if k < next_k.get(wid, 0):
            disorder += 1
        next_k[wid] = k + 1
        if pause_us:
            time.sleep(pause_us / 1e6)
    say(
        received=r.received,
        lost=r.lost,
        skipped=r.skipped,
        start=start,
        cursor=r.cursor,
        torn=torn,
        disorder=disorder,
        writers=len(next_k),
    )
    return 0 if torn == 0 and disorder == 0 else 1


def hole(name: str, n: int, wid: int) -> None:
    s = xshm.Stream.open(name, timeout=10)
    rng = random.Random(wid)
    for k in range(n):
        s.send(payload(wid, k, s.max_bytes, rng), timeout=WAIT)
    c = s.claim(16, timeout=WAIT)  # never committed: this process is killed holding it
    say(claimed=c.seq)
    time.sleep(WAIT)
    c.drop()


def member(name: str, group: str) -> int:
    s = xshm.Stream.open(name, timeout=10)
    r = s.reader("oldest", group=group)
    say(ready=True)
    ks: list[int] = []
    torn = 0
    while True:
        got = parse(bytes(r.recv(timeout=WAIT).data))
        if got is None:
            torn += 1
            continue
        wid, k = got
        if wid == MARKER:
            break
        ks.append(k)
    say(ks=ks, received=r.received, lost=r.lost, torn=torn)
    r.close()
    return 0 if torn == 0 else 1


def main() -> int:
    mode, name = sys.argv[1], sys.argv[2]
    if mode == "member":
        return member(name, sys.argv[3])
    n, arg = int(sys.argv[3]), int(sys.argv[4])
    if mode == "write":
        write(name, n, arg)
        return 0
    if mode == "take":
        return take(name, n, arg)
    if mode == "drain":
        return take(name, 0, 0, until_marker=True)
    if mode == "hole":
        hole(name, n, arg)
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
