"""What an export and a mirror share: a background thread, its stop, its status, its error."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._status import Counters, StatusRecord, log, status_name

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Bridge", "Closing", "Stopped"]

STATUS_INTERVAL = 0.5


class Stopped(Exception):
    """Raised inside a bridge's own code when it was asked to stop while it waited."""


class Closing:
    """A context manager over ``close()``: it stops the bridge when the block ends and raises
    the error that stopped it, unless an exception is already in flight (that one says more)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()


class Bridge(Closing):
    """One bridge of one segment (an export or a mirror), running on its own thread.

    Subclasses give :meth:`_run` (the thread's body, which returns when :attr:`stopping` is
    set) and the fields of their status message.
    """

    role = ""

    def __init__(self, segment: str, status: bool) -> None:
        self.segment = segment
        self.counters = Counters()
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._raised = False
        self._status_record: Optional[StatusRecord] = None
        if status:
            self._status_record = StatusRecord(status_name(self.role, segment))
        self._next_status = 0.0
        self._thread = threading.Thread(
            target=self._main, name=f"xshm-bridge-{self.role}-{segment}", daemon=True
        )

    # The thread.
    def _start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            self._run()
        except Stopped:
            pass
        except BaseException as e:  # the thread's failure is the bridge's: kept and reported
            self._error = e
            with self.counters.lock:
                self.counters.state = "failed"
                self.counters.error = f"{type(e).__name__}: {e}"
            log.error("%s %s failed: %s", self.role, self.segment, e)
        finally:
            self.publish_status(force=True)

    def _run(self) -> None:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``; :class:`Stopped` when asked to stop meanwhile."""
        if self._stop.wait(seconds):
            raise Stopped

    def retry(self, what: str, attempt: Callable[[], Any], interval: float = 0.5) -> Any:
        """Call ``attempt`` until it returns something other than None, publishing the status
        meanwhile; :class:`Stopped` when asked to stop."""
        while True:
            result = attempt()
            if result is not None:
                return result
            self.set_state(what)
            self.publish_status()
            self.sleep(interval)

    def set_state(self, state: str) -> None:
        with self.counters.lock:
            self.counters.state = state

    # Status.
    def status_fields(self) -> dict[str, Any]:
        """The status message's own fields (``peers``: the engine's peer ids, also counted
        in the values)."""
        return {}

    def publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_status:
            return
        self._next_status = now + STATUS_INTERVAL
        fields = self.status_fields()
        self.counters.set(peers=len(fields.get("peers", ())))
        self.counters.tick()
        if self._status_record is not None:
            try:
                self._status_record.publish(
                    self.counters, {"role": self.role, "segment": self.segment, **fields}
                )
            except Exception as e:  # the status must never take the bridge down
                log.warning("%s %s: status record not updated: %s", self.role, self.segment, e)

    # The public surface.
    @property
    def stats(self) -> dict[str, Any]:
        """The counters, the state and the last error, as the status record carries them."""
        return {**self.counters.snapshot(), **self.status_fields(), "pid": os.getpid()}

    @property
    def error(self) -> Optional[BaseException]:
        """Why the bridge stopped by itself (None while it runs or when it was stopped)."""
        return self._error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _release(self) -> None:
        if self._status_record is not None:
            self._status_record.close()
            self._status_record = None

    def _raise_error(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error
