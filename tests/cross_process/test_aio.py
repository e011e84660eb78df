"""asyncio: `await m.wait_async(seq)`, `await r.recv_async()` and `async for msg in r`, woken by
publishes and sends from other processes. Waits are cut short by timeouts, cancellation and
close(); a cancelled or timed-out wait stops counting itself as a sleeper; a forked child waits
with its own loop; 1 000 coroutines on 100 segments take no thread per wait and no CPU while
idle; waiters on silent segments do not delay one on a busy segment.

The tests run in this process in the mode this kernel gives (io_uring's futex waits, a ring per
loop and no thread, on Linux 6.7+), and again in a subprocess per fallback: the notifier with
futex_waitv (XSHM_IO_URING=0) and the notifier with one thread per segment, as on kernels before
5.16 (XSHM_IO_URING=0 XSHM_FUTEX_WAITV=0)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xshm
from xshm import _core

CTX = mp.get_context("spawn")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60  # seconds any one step may take before the test calls it a hang


def _mode() -> str:
    info = _core._notifier_info()
    return "io_uring" if info["io_uring"] else str(info["mode"])


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _publisher(kind: str, names: list[str], n: int, delay: float, start: Any) -> None:
    """Publishes (or sends) a monotonic timestamp `n` times into each of `names`, `delay` apart,
    after `start` is set."""
    if kind == "record":
        segs: list[Any] = [xshm.SharedMemoryManager.open(nm, timeout=WAIT) for nm in names]
    else:
        segs = [xshm.Stream.open(nm, timeout=WAIT) for nm in names]
    start.wait(WAIT)
    for k in range(n):
        time.sleep(delay)
        for s in segs:
            if kind == "record":
                s.publish(counter=time.monotonic_ns())
            else:
                s.send(np.array([time.monotonic_ns(), k], dtype=np.int64))
    for s in segs:
        s.close()


class Publisher:
    """A publisher process; `go()` starts its publishes."""

    def __init__(self, kind: str, names: list[str], n: int, delay: float) -> None:
        self.start = CTX.Event()
        self.p = CTX.Process(target=_publisher, args=(kind, names, n, delay, self.start))
        self.p.start()

    def go(self) -> None:
        self.start.set()

    def join(self) -> None:
        self.p.join(WAIT)
        assert self.p.exitcode == 0, f"the publisher ended with {self.p.exitcode}"

    def kill(self) -> None:
        if self.p.is_alive():
            self.p.kill()
            self.p.join()


@pytest.fixture
def names(seg_name: str) -> Iterator[Callable[[int], list[str]]]:
    """`names(k)`: k fresh segment names, unlinked after the test."""
    made: list[str] = []

    def make(k: int) -> list[str]:
        out = [f"{seg_name}-{len(made) + i}" for i in range(k)]
        made.extend(out)
        return out

    yield make
    for nm in made:
        with contextlib.suppress(FileNotFoundError):
            xshm.unlink(nm, force=True)


def test_wait_async_is_woken_by_another_process(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        pub = Publisher("record", [seg_name], 3, 0.05)
        try:

            async def main() -> list[int]:
                seqs = []
                seq = m.seq
                pub.go()
                while seq < 3:
                    seq = await m.wait_async(seq, timeout=WAIT)
                    seqs.append(seq)
                    assert m.read().counter > 0
                return seqs

            seqs = asyncio.run(main())
            pub.join()
        finally:
            pub.kill()
        assert seqs[-1] == 3 and seqs == sorted(set(seqs))
        assert m.header()["waiters"] == 0


def test_wait_async_returns_at_once_when_past(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:
        m.publish(counter=1)
        assert asyncio.run(m.wait_async(0)) == 1
        with pytest.raises(TypeError):
            m.wait_async("0")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            m.wait_async(0, timeout=-1)


def test_timeout_raises_and_gives_the_sleeper_back(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:

        async def main() -> None:
            t0 = time.monotonic()
            with pytest.raises(xshm.WaitTimeoutError) as e:
                await m.wait_async(m.seq, timeout=0.2)
            assert isinstance(e.value, TimeoutError)
            assert 0.15 < time.monotonic() - t0 < WAIT

        asyncio.run(main())
        assert m.header()["waiters"] == 0


def test_cancel_stops_counting_the_sleeper(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:

        async def main() -> None:
            tasks = [asyncio.create_task(m.wait_async(m.seq)) for _ in range(10)]
            await asyncio.sleep(0.05)
            assert m.header()["waiters"] == 10  # writers wake for them
            for t in tasks:
                t.cancel()
            for t in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await t
            assert m.header()["waiters"] == 0  # ... and no longer
            assert _core._notifier_info()["pending"] == 0
            # asyncio.wait_for's timeout cancels the same way
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(m.wait_async(m.seq), 0.05)
            assert m.header()["waiters"] == 0

        asyncio.run(main())


def test_close_ends_the_wait_with_closed_error(seg_name: str) -> None:
    m = xshm.SharedMemoryManager.create(seg_name)

    async def main() -> None:
        task = asyncio.create_task(m.wait_async(m.seq))
        await asyncio.sleep(0.05)
        m.unlink()
        m.close()
        with pytest.raises(xshm.ClosedError):
            await asyncio.wait_for(task, WAIT)

    asyncio.run(main())


def test_close_between_prepare_and_sleep_ends_the_wait(names: Callable[[int], list[str]]) -> None:
    """A close() from another thread after the coroutine prepared its sleep but before it armed
    it: the sleep must not begin (nothing would end it but a publish)."""
    from xshm import _aio

    rec_name, stream_name = names(2)
    m = xshm.SharedMemoryManager.create(rec_name)
    s = xshm.Stream.create(stream_name, 8, max_bytes=8)
    r = s.reader()

    async def main() -> None:
        ticket = m._prepare_wait(m.seq)
        assert not isinstance(ticket, int)
        m.close()  # as another thread would, between the two steps
        with pytest.raises(xshm.ClosedError):
            await asyncio.wait_for(_aio._sleep(ticket, None), WAIT)
        rticket = r._prepare_wait()
        assert rticket is not None
        r.close()
        with pytest.raises(xshm.ClosedError):
            await asyncio.wait_for(_aio._sleep(rticket, None), WAIT)

    try:
        asyncio.run(main())
        assert s.header()["data_waiters"] == 0
    finally:
        xshm.unlink(rec_name)
        s.unlink()
        s.close()


def test_more_waits_than_the_ring_holds(seg_name: str) -> None:
    """5 000 waits on one record, woken by one publish: more completions at once than the
    loop's io_uring queue holds (4 096): the rest wait in the kernel and must come too."""
    with xshm.SharedMemoryManager.create(seg_name) as m:

        async def main() -> list[int]:
            tasks = [asyncio.create_task(m.wait_async(0)) for _ in range(5000)]
            await asyncio.sleep(0.2)
            assert m.header()["waiters"] == 5000
            m.publish(counter=1)
            # (no timeout on the waits: a timer's cancel would flush the queue and hide a loss)
            return await asyncio.wait_for(asyncio.gather(*tasks), 20)

        assert asyncio.run(main()) == [1] * 5000
        assert m.header()["waiters"] == 0


def test_timeouts_the_blocking_wait_takes_as_forever(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:

        async def main() -> list[int]:
            tasks = [asyncio.create_task(m.wait_async(0, timeout=t)) for t in (math.inf, 1e10, 4e9)]
            await asyncio.sleep(0.05)
            m.publish(counter=1)
            return await asyncio.wait_for(asyncio.gather(*tasks), WAIT)

        assert asyncio.run(main()) == [1, 1, 1]


def test_stream_recv_async_and_async_for(names: Callable[[int], list[str]]) -> None:
    (name,) = names(1)
    with xshm.Stream.create(name, 64, dtype="int64", shape=(2,)) as s, s.reader() as r:
        pub = Publisher("stream", [name], 20, 0.005)
        try:

            async def main() -> list[int]:
                pub.go()
                got = [int((await r.recv_async(timeout=WAIT)).data[1])]
                async for msg in r:
                    got.append(int(msg.data[1]))
                    if len(got) == 20:
                        break
                return got

            got = asyncio.run(main())
            pub.join()
        finally:
            pub.kill()
        assert got == list(range(20))
        assert s.header()["data_waiters"] == 0


def test_stream_recv_async_timeout_close_one_receive(names: Callable[[int], list[str]]) -> None:
    (name,) = names(1)
    with xshm.Stream.create(name, 8, dtype="int64", shape=(2,)) as s:
        r = s.reader()

        async def main() -> None:
            with pytest.raises(xshm.WaitTimeoutError):
                await r.recv_async(timeout=0.05)
            task = asyncio.create_task(r.recv_async())
            await asyncio.sleep(0.05)
            with pytest.raises(ValueError, match="coroutine"):
                r.try_recv()
            s.send(np.array([1, 2], dtype=np.int64))
            assert list((await asyncio.wait_for(task, WAIT)).data) == [1, 2]
            # close under a waiting `async for`: the iteration ends
            got = []

            async def consume() -> None:
                async for msg in r:
                    got.append(msg)

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.05)
            r.close()
            await asyncio.wait_for(task, WAIT)
            assert got == []

        asyncio.run(main())


def test_stream_group_members_share_the_work(names: Callable[[int], list[str]]) -> None:
    (name,) = names(1)
    with xshm.Stream.create(name, 64, dtype="int64", shape=(2,)) as s:
        members = [s.reader(group="workers") for _ in range(2)]
        pub = Publisher("stream", [name], 40, 0.002)
        try:

            async def work(r: xshm.StreamReader, got: list[int]) -> None:
                while True:
                    try:
                        got.append(int((await r.recv_async(timeout=0.5)).data[1]))
                    except xshm.WaitTimeoutError:
                        return

            async def main() -> list[list[int]]:
                got: list[list[int]] = [[], []]
                pub.go()
                await asyncio.gather(*(work(r, g) for r, g in zip(members, got)))
                return got

            got = asyncio.run(main())
            pub.join()
        finally:
            pub.kill()
            for r in members:
                r.close()
        assert sorted(got[0] + got[1]) == list(range(40))


def test_a_thousand_waiters_on_a_hundred_segments(names: Callable[[int], list[str]]) -> None:
    segs = [xshm.SharedMemoryManager.create(nm) for nm in names(100)]
    try:
        before = _threads()

        async def main() -> tuple[int, float]:
            waits = [segs[i % 100].wait_async(0, timeout=WAIT) for i in range(1000)]
            tasks = [asyncio.create_task(w) for w in waits]
            await asyncio.sleep(0.2)
            during = _threads()
            # idle: the waits cost no CPU (no polling thread, no timer)
            cpu0 = time.process_time()
            await asyncio.sleep(1.0)
            cpu = time.process_time() - cpu0
            assert sum(s.header()["waiters"] for s in segs) == 1000
            for s in segs:
                s.publish(counter=1)
            assert await asyncio.wait_for(asyncio.gather(*tasks), WAIT) == [1] * 1000
            return during, cpu

        during, cpu = asyncio.run(main())
        mode = _mode()
        extra = during - before
        print(f"{mode}: {extra} threads for 1000 waits on 100 segments; ", end="")
        print(f"{cpu * 1e3:.1f} ms CPU idle over 1 s")
        # io_uring: none; futex_waitv: one (127 words each); futex (kernels before 5.16): one
        # per segment and the timer's
        assert extra <= {"io_uring": 0, "futex_waitv": 1, "futex": 101}[mode]
        assert cpu < 0.05
        assert all(s.header()["waiters"] == 0 for s in segs)
    finally:
        for s in segs:
            s.close()


def _hop_latencies(
    m: xshm.SharedMemoryManager, pub: Publisher, n: int, others: list[Any]
) -> list[int]:
    async def main() -> list[int]:
        silent = [asyncio.create_task(o.wait_async(o.seq)) for o in others]
        await asyncio.sleep(0.05)
        out = []
        seq = m.seq
        pub.go()
        while seq < n:
            seq = await m.wait_async(seq, timeout=WAIT)
            out.append(time.monotonic_ns() - m.read().counter)
        for t in silent:
            t.cancel()
        await asyncio.gather(*silent, return_exceptions=True)
        return out

    return asyncio.run(main())


def test_silent_waiters_do_not_delay_a_busy_one(names: Callable[[int], list[str]]) -> None:
    busy, *silent_names = names(51)
    n = 40
    with xshm.SharedMemoryManager.create(busy) as m:
        silent = [xshm.SharedMemoryManager.create(nm) for nm in silent_names]
        try:
            alone_pub = Publisher("record", [busy], n, 0.005)
            try:
                alone = _hop_latencies(m, alone_pub, n, [])
                alone_pub.join()
            finally:
                alone_pub.kill()
            crowd_pub = Publisher("record", [busy], n, 0.005)
            try:
                crowded = _hop_latencies(m, crowd_pub, 2 * n, silent)
                crowd_pub.join()
            finally:
                crowd_pub.kill()
        finally:
            for s in silent:
                s.close()
    a, c = statistics.median(alone), statistics.median(crowded)
    print(f"{_mode()}: median wake {a / 1e3:.0f} us alone, {c / 1e3:.0f} us beside 50 silent ones")
    # every publish woke it on its own (5 ms apart: a delayed wake would merge two)...
    assert len(crowded) >= 0.9 * n
    # ... and about as soon as alone (a loose bound: this is no benchmark, but a design that
    # swept the silent segments or polled would miss it by far)
    assert c <= max(3 * a, 2_000_000)


def test_uvloop(seg_name: str, skip_or_fail: Callable[[str], None]) -> None:
    try:
        import uvloop
    except ImportError:
        skip_or_fail("uvloop is not installed")
        return
    with xshm.SharedMemoryManager.create(seg_name) as m:
        pub = Publisher("record", [seg_name], 3, 0.02)
        try:

            async def main() -> int:
                seq = m.seq
                pub.go()
                while seq < 3:
                    seq = await m.wait_async(seq, timeout=WAIT)
                with pytest.raises(xshm.WaitTimeoutError):
                    await m.wait_async(seq, timeout=0.05)
                return seq

            assert uvloop.run(main()) == 3
            pub.join()
        finally:
            pub.kill()


def test_a_closed_loop_is_left_quietly(seg_name: str) -> None:
    """A loop closed with a wait pending: publishes after it find nothing to wake and harm
    nothing, the next loop waits as well, and the abandoned wait gives its sleeper back once
    its task is collected (the next loop drops the closed loop's hook, which held it)."""
    with xshm.SharedMemoryManager.create(seg_name) as m:
        loop = asyncio.new_event_loop()
        task = loop.create_task(m.wait_async(m.seq))
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()
        assert m.header()["waiters"] == 1
        m.publish(counter=1)
        m.publish(counter=2)
        seq = m.seq

        async def again() -> int:
            t = asyncio.create_task(m.wait_async(seq))
            await asyncio.sleep(0.02)
            m.publish(counter=3)
            return await asyncio.wait_for(t, WAIT)

        assert asyncio.run(again()) == seq + 1
        del task
        gc.collect()
        assert m.header()["waiters"] == 0


def test_fork_child_waits_with_its_own_loop(seg_name: str) -> None:
    with xshm.SharedMemoryManager.create(seg_name) as m:

        async def parent_wait() -> None:  # the parent has a loop hook (and maybe threads)
            t = asyncio.create_task(m.wait_async(m.seq))
            await asyncio.sleep(0.02)
            m.publish(counter=1)
            await t

        asyncio.run(parent_wait())
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)

                async def child() -> int:
                    t = asyncio.create_task(m.wait_async(m.seq, timeout=WAIT))
                    await asyncio.sleep(0.05)
                    os.write(w, b"w")  # waiting: the parent publishes
                    return await t

                code = 0 if asyncio.run(child()) == 2 else 2
            finally:
                os._exit(code)
        os.close(w)
        assert os.read(r, 1) == b"w"
        os.close(r)
        m.publish(counter=2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert m.header()["waiters"] == 0


def test_interpreter_exit_does_not_wait_for_waits(seg_name: str) -> None:
    """A process that exits with coroutines still waiting (and, in the notifier's modes, its
    threads asleep on the futexes) exits at once."""
    code = f"""
import asyncio, sys, xshm
m = xshm.SharedMemoryManager.open({seg_name!r})
async def main():
    tasks = [asyncio.create_task(m.wait_async(m.seq)) for _ in range(5)]
    await asyncio.sleep(0.1)
    sys.stdout.write("waiting\\n")
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""
    with xshm.SharedMemoryManager.create(seg_name):
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "waiting\n"


NOTIFIER_MODES = [{"XSHM_IO_URING": "0"}, {"XSHM_IO_URING": "0", "XSHM_FUTEX_WAITV": "0"}]


@pytest.mark.parametrize("env", NOTIFIER_MODES)
def test_every_mode(env: dict[str, str]) -> None:
    """This file's tests again in the notifier's modes (the mode is chosen once per process)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
         __file__, "-k", "not every_mode", "-p", "no:cacheprovider", "-q", "-s", "-x"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    print(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    want = "futex" if "XSHM_FUTEX_WAITV" in env else "futex_waitv"
    assert f"{want}: " in out.stdout


def test_this_kernel_gives_io_uring(skip_or_fail: Callable[[str], None]) -> None:
    """The default mode here: io_uring's futex waits (Linux 6.7+, io_uring not disabled)."""
    if not _core._notifier_info()["io_uring"] and os.environ.get("XSHM_IO_URING") != "0":
        skip_or_fail(f"io_uring futex waits are not available on {os.uname().release}")
