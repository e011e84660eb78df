"""asyncio for xshm: ``await m.wait_async(seq)``, ``await r.recv_async()``, ``async for msg in r``.

No thread per wait and no polling. A waiting coroutine prepares its sleep as the blocking wait
would (it counts itself as a sleeper, so writers wake, and loads the futex word), then:
- where the kernel has io_uring's futex waits (Linux 6.7+), arms the wait on its loop's ring
  and awaits a future: the publish's FUTEX_WAKE completes it as task work of the loop's own
  thread, which wakes from its poll with the ring readable (one hop, like a pipe's write); no
  thread at all;
- elsewhere (older kernels, io_uring refused by a sysctl or a seccomp filter, XSHM_IO_URING=0),
  hands the ticket to the process's notifier: one thread per 127 futex words with futex_waitv
  (Linux 5.16+), one per segment before that, sleeping with the GIL released and posting the
  coroutine's key to its loop's eventfd. It never touches Python or a loop, so interpreter exit
  never waits for it.
Either way the loop resolves the future and the coroutine looks again. A cancelled or timed-out
wait withdraws its ticket at once (writers stop waking for it).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Optional

from . import _core
from .errors import ClosedError, WaitTimeoutError

if TYPE_CHECKING:
    from ._core import Message, SharedMemoryManager, StreamReader, _Ticket


class _LoopHook:
    """One event loop's source of wake-ups, polled by the loop, and the futures waiting on it:
    an io_uring of futex waits where the kernel has them (the publish wakes the loop's own
    thread), else an inbox the notifier's threads post to."""

    __slots__ = ("futures", "inbox", "loop", "next_key", "ring")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ring: Optional[_core._FutexRing] = _core._FutexRing() if _core._io_uring() else None
        self.inbox: Optional[_core._Inbox] = None if self.ring is not None else _core._Inbox()
        self.futures: dict[int, asyncio.Future[bool]] = {}
        self.next_key = 0
        self.loop = loop
        source = self.ring if self.ring is not None else self.inbox
        assert source is not None
        loop.add_reader(source.fileno(), self._drain, source)

    def _drain(self, source: _core._FutexRing | _core._Inbox) -> None:
        futures = self.futures
        for key in source.drain():
            fut = futures.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(True)


# One hook per running loop, by id (uvloop's loops take no weak references); a hook whose loop
# has closed is dropped when another loop makes its own.
_hooks: dict[int, _LoopHook] = {}


def _hook(loop: asyncio.AbstractEventLoop) -> _LoopHook:
    h = _hooks.get(id(loop))
    if h is not None and h.loop is loop:
        return h
    for key, old in list(_hooks.items()):
        if old.loop.is_closed():
            del _hooks[key]
    h = _LoopHook(loop)
    _hooks[id(loop)] = h
    return h


def _after_fork() -> None:
    # The parent's loops are not this process's: their waits belong to the parent's tasks.
    _hooks.clear()


os.register_at_fork(after_in_child=_after_fork)


def _timer(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


async def _sleep(ticket: _Ticket, deadline: Optional[int]) -> None:
    """Sleeps until the ticket's word moves on, `deadline` (monotonic ns) or its recheck."""
    loop = asyncio.get_running_loop()
    try:
        hook = _hook(loop)
        fut: asyncio.Future[bool] = loop.create_future()
    except BaseException:
        ticket.release()
        raise
    key = hook.next_key = hook.next_key + 1
    hook.futures[key] = fut
    timer: Optional[asyncio.TimerHandle] = None
    try:
        if hook.ring is not None:
            ticket.arm(hook.ring, key)
            if hook.ring.backlog():  # completions taken off a full queue: the fd may not say
                loop.call_soon(hook._drain, hook.ring)
            recheck = ticket.recheck_ns
            if recheck is not None:
                due = time.monotonic_ns() + recheck
                deadline = due if deadline is None else min(deadline, due)
            if deadline is not None:
                timer = loop.call_later(max(0, deadline - time.monotonic_ns()) / 1e9, _timer, fut)
        else:
            assert hook.inbox is not None
            ticket.watch(hook.inbox, key, deadline)
        await fut
    finally:
        if timer is not None:
            timer.cancel()
        hook.futures.pop(key, None)
        ticket.release(fut.done() and not fut.cancelled() and fut.result())


# A timeout this long is forever, as the blocking waits take it (xshm's arg_timeout).
_FOREVER_S = 100 * 365.25 * 86400


def _deadline(timeout: Optional[float]) -> Optional[int]:
    if timeout is None or not timeout < _FOREVER_S:  # None, inf, a century or more
        return None
    return time.monotonic_ns() + max(0, int(timeout * 1e9))


def _format(timeout: Optional[float]) -> str:
    return "the timeout" if timeout is None else f"{timeout:g} s"


async def wait(m: SharedMemoryManager, seq: int, timeout: Optional[float] = None) -> int:
    """``m.wait_async(seq, timeout)``: the new sequence once it is past ``seq``."""
    deadline = _deadline(timeout)
    while True:
        got = m._prepare_wait(seq)
        if isinstance(got, int):
            return got
        if deadline is not None and time.monotonic_ns() >= deadline:
            got.release()
            raise WaitTimeoutError(f"no publish after sequence {seq} within {_format(timeout)}")
        await _sleep(got, deadline)


async def recv(r: StreamReader, timeout: Optional[float] = None) -> Message:
    """``r.recv_async(timeout)``: the next message."""
    deadline = _deadline(timeout)
    while True:
        msg = r.try_recv()
        if msg is not None:
            return msg
        ticket = r._prepare_wait()
        if ticket is None:
            continue  # a message came meanwhile
        if deadline is not None and time.monotonic_ns() >= deadline:
            ticket.release()
            raise WaitTimeoutError(f"no message within {_format(timeout)}")
        await _sleep(ticket, deadline)


async def anext(r: StreamReader) -> Message:
    """``async for msg in r``: the next message; the iteration stops when r is closed."""
    try:
        return await recv(r)
    except ClosedError:
        raise StopAsyncIteration from None
