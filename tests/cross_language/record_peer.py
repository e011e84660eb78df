"""The Python peer of the cross-language record matrix (test_record_matrix.py): the commands and
the JSON lines of record_peer.cpp (C++) and rust/xshm/examples/record_peer.rs (Rust), over the
installed xshm package. Record k: counter k, every value k (uint64), message "k=<k>"."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import xshm


def whole(s: xshm.Snapshot) -> bool:
    expected = "" if s.counter == 0 else f"k={s.counter}"
    return bool(np.all(s.values == s.counter)) and s.message == expected


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def publish(name: str, count: int, n: int, interval_us: int) -> None:
    m = xshm.SharedMemoryManager.create(
        name, shape=(n,), dtype=np.uint64, message_capacity=64, exist_ok=True
    )
    k = m.read().counter
    say(ready=True)
    values = np.empty(n, dtype=np.uint64)
    done = 0
    while count == 0 or done < count:
        k += 1
        values.fill(k)
        m.publish(values, message=f"k={k}", counter=k)
        done += 1
        if interval_us:
            time.sleep(interval_us / 1e6)
    say(published=done, last=k)


def read(name: str, count: int) -> None:
    m = xshm.SharedMemoryManager.open(name, readonly=True, timeout=10)
    m.wait(0, timeout=10)
    torn = regressions = last = 0
    distinct: set[int] = set()
    # COUNT reads, and on until the record was seen changing (at most 5 s more).
    until = time.monotonic() + 5
    reads = 0
    while reads < count or (len(distinct) < 2 and time.monotonic() < until):
        s = m.read()
        torn += not whole(s)
        regressions += s.seq < last
        last = s.seq
        distinct.add(s.seq)
        reads += 1
    say(reads=reads, torn=torn, regressions=regressions, distinct=len(distinct), last_seq=last)


def wait(name: str, target: int, timeout_ms: int) -> None:
    m = xshm.SharedMemoryManager.open(name, readonly=True, timeout=10)
    last = m.seq
    say(ready=True)
    woken = timeouts = torn = 0
    while last < target:
        try:
            last = m.wait(last, timeout=timeout_ms / 1000)
        except xshm.WaitTimeoutError:
            timeouts += 1
            break
        woken += 1
        torn += not whole(m.read())
    say(woken=woken, timeouts=timeouts, torn=torn, last_seq=last)


def recover(name: str) -> None:
    m = xshm.SharedMemoryManager.open(name)
    before = m.recoveries
    with m.lock(timeout=5):
        pass
    recovered = m.recoveries == before + 1
    s = m.read()
    ok = whole(s) and s.seq == m.seq
    k = s.counter + 1
    seq = m.publish(np.full(len(s.values), k, dtype=np.uint64), message=f"k={k}", counter=k)
    after = m.read()
    ok = ok and whole(after) and after.counter == k and after.seq == seq == s.seq + 1
    say(recovered=recovered, recoveries=m.recoveries, whole=ok, seq=seq)


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "publish" and len(args) == 4:
        publish(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "read" and len(args) == 2:
        read(args[0], int(args[1]))
    elif cmd == "wait" and len(args) == 3:
        wait(args[0], int(args[1]), int(args[2]))
    elif cmd == "recover" and len(args) == 1:
        recover(args[0])
    else:
        print("usage: record_peer.py publish|read|wait|recover NAME ...", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
