"""A bridge's counters, and the ordinary record it publishes them in.

Every bridge (an export or a mirror of one segment) keeps a :class:`Counters` and, unless told
not to, publishes it twice a second in a status record named ``bridge.<role>.<segment>``: a
float64 array of :data:`FIELDS` and a JSON message (engine, key, peers, state, source, last
error), so ``xshm ls``, ``xshm inspect`` and any reader see how it is doing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Optional

import numpy as np

from .._core import SharedMemoryManager

__all__ = ["FIELDS", "Counters", "StatusRecord", "status_name"]

log = logging.getLogger("xshm.bridge")

# The status record's values, in order (docs/BRIDGE.md "Status record").
FIELDS = (
    "messages",  # records or stream messages sent (export) or committed (mirror)
    "bytes",  # payload bytes sent or received
    "rate",  # messages per second over the last interval
    "lag_ms",  # mirror: local commit time minus the source's timestamp of the last message
    "backlog",  # stream export: messages its reader has yet to send
    "lost",  # messages lost: sequence gaps (mirror) or the export reader's losses
    "gaps",  # times the source sequence jumped
    "invalid",  # envelopes refused: malformed, foreign, oversized or of another layout
    "duplicates",  # stream messages received twice (by source sequence) and skipped
    "source_seq",  # the last source sequence sent or committed
    "source_time",  # its source timestamp, seconds since the epoch
    "source_pid",  # its source writer's pid
    "peers",  # engine peers connected
    "mirrors",  # stream export: mirrors acknowledging it
    "resent",  # stream export: batches sent again to a mirror that had not acknowledged them
)
_MESSAGE_CAPACITY = 2048


def status_name(role: str, name: str) -> str:
    return f"bridge.{role}.{name.lstrip('/')}"


class Counters:
    """What a bridge counts; updated by its threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = dict.fromkeys(FIELDS, 0.0)
        self.state = "starting"
        self.error: Optional[str] = None
        self.info: dict[str, Any] = {}
        self._last_messages = 0.0
        self._last_time = time.monotonic()
        self._unlogged = 0  # refused since the last log line
        self._logged = 0.0

    def add(self, **deltas: float) -> None:
        with self.lock:
            for k, v in deltas.items():
                self.values[k] += v

    def set(self, **values: float) -> None:
        with self.lock:
            self.values.update(values)

    def refuse(self, what: str, reason: str) -> None:
        """Count an envelope refused, and say so in the log at most once a second (with how
        many were refused since the last line)."""
        with self.lock:
            self.values["invalid"] += 1
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged < 1.0:
                return
            self._logged, n, self._unlogged = now, self._unlogged, 0
        more = f" ({n - 1} more refused since the last line)" if n > 1 else ""
        log.warning("%s: dropped an envelope: %s%s", what, reason, more)

    def tick(self) -> None:
        """Update the rate from the messages counted since the last tick."""
        with self.lock:
            now = time.monotonic()
            dt = now - self._last_time
            if dt > 0:
                n = self.values["messages"]
                self.values["rate"] = (n - self._last_messages) / dt
                self._last_messages, self._last_time = n, now

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {k: v for k, v in self.values.items()}
            out["state"] = self.state
            out["error"] = self.error
            out.update(self.info)
        return out


class StatusRecord:
    """The status record of one bridge: created 0600 (attached when a previous run of the same
    bridge left it), removed when the bridge stops."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._m = SharedMemoryManager.create(
            name,
            shape=(len(FIELDS),),
            dtype="float64",
            message_capacity=_MESSAGE_CAPACITY,
            exist_ok=True,
        )

    def publish(self, counters: Counters, common: dict[str, Any]) -> None:
        snap = counters.snapshot()
        values = np.array([float(snap[k]) for k in FIELDS])
        text = {"pid": os.getpid(), **common}
        text.update({k: v for k, v in snap.items() if k not in FIELDS})
        message = json.dumps(text, separators=(",", ":"), default=str)
        self._m.publish(
            values=values, message=message, counter=int(snap["messages"]), truncate=True
        )

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._m.unlink()
        self._m.close()
