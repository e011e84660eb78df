"""The torn-read stress test: a writer process publishes records whose values all equal the
counter and whose message is the counter; readers check every snapshot. The control copies the
same memory without the seqlock (np.copy of the live view) and must see tears, which shows the
check can fail."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import xshm

CTX = mp.get_context("spawn")
ROUNDS = int(os.environ.get("XSHM_STRESS_ROUNDS", "20000"))


def _writer(name: str, stop: mp.Event) -> None:  # type: ignore[type-arg]
    m = xshm.SharedMemoryManager.open(name)
    buf = np.empty(m.shape)
    k = 0
    while not stop.is_set():
        k += 1
        buf.fill(k)
        m.publish(values=buf, message=str(k), counter=k)


def _run(name: str) -> tuple[int, int, int]:
    with xshm.SharedMemoryManager.create(name, shape=(4096,)) as m:
        stop = CTX.Event()
        w = CTX.Process(target=_writer, args=(name, stop))
        w.start()
        try:
            m.wait(0, timeout=30)
            torn_seqlock = 0
            torn_control = 0
            out = np.empty(4096)
            last = 0
            for _ in range(ROUNDS):
                snap = m.read_into(out)
                if not ((out == snap.counter).all() and snap.message == str(snap.counter)):
                    torn_seqlock += 1
                assert snap.seq >= last
                last = snap.seq
                raw = np.copy(m.live_values)
                if raw[0] != raw[-1]:
                    torn_control += 1
            return torn_seqlock, torn_control, last
        finally:
            stop.set()
            w.join(timeout=30)


def test_seqlocked_reads_never_tear_while_unsynchronized_copies_do(seg_name: str) -> None:
    torn, control, last = _run(seg_name)
    print(f"rounds={ROUNDS} torn_seqlock={torn} torn_unsynchronized={control} last_seq={last}")
    assert torn == 0
    assert control > 0, "the unsynchronized copy never tore: this test could not catch a bug"
