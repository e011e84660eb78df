"""Records and streams beyond one machine, over Zenoh or Redis Streams.

An **export** publishes local segments under keys: a record's updates (latest value: a slow
link skips updates, never queues them) and a stream's messages (every one, in order, the
stream's backpressure deciding what a slow link does). A **mirror** follows one key into a
local segment that ordinary readers open, unaware of the network. The layout travels with the
data (``docs/BRIDGE.md`` specifies the envelope byte by byte), so a mirror needs no agreement
made in advance, and everything received is checked before it touches the mirror.

>>> from xshm import bridge
>>> with bridge.export("sensors") as ex:                                  # doctest: +SKIP
...     print(ex.keys)                      # {'sensors': 'xshm/<host>/sensors'}
>>> with bridge.mirror("xshm/<host>/sensors", into="sensors-copy") as mi:  # doctest: +SKIP
...     mi.wait_ready(timeout=10)
...     print(xshm.SharedMemoryManager.open("sensors-copy").read())

Both run on background threads and stop cleanly when the block ends (or on :meth:`close`);
an error that stopped a bridge is raised there. Each keeps its counters in ``stats`` and, unless
``status=False``, in an ordinary status record ``bridge.export.<name>`` /
``bridge.mirror.<name>`` that ``xshm ls`` and ``xshm inspect`` show.

The default engine is Zenoh (``eclipse-zenoh``): a session inside the process, peer mode, no
server. By default an export listens on ``tcp/127.0.0.1:7447`` and a mirror connects there;
give ``listen``/``connect`` endpoints (or a Zenoh ``config`` file, for TLS and routers) to
cross machines. ``engine="redis"`` goes through a Redis server instead (``url=``, AUTH, ACL
users and ``rediss://`` in it): durable streams, each mirror a consumer group that keeps its
place across restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

from ..errors import ArgumentError
from ._base import Bridge, Closing
from ._envelope import EnvelopeError, Layout
from ._export import default_key, make_export
from ._mirror import DEFAULT_MAX_BYTES, Mirror
from ._redis import DEFAULT_URL, RedisOptions
from ._redis_bridge import RedisMirror, make_redis_export
from ._status import FIELDS as STATUS_FIELDS
from ._zenoh import DEFAULT_ENDPOINT, ZenohOptions, ZenohSession, check_key
from ._zenoh_mirror import ZenohMirror

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_URL",
    "STATUS_FIELDS",
    "EnvelopeError",
    "Export",
    "Layout",
    "Mirror",
    "RedisOptions",
    "ZenohOptions",
    "export",
    "mirror",
]


Options = Union[ZenohOptions, RedisOptions]


class Export(Closing):
    """Segments published under keys, one thread each, over one Zenoh session or one Redis
    client each."""

    def __init__(
        self,
        names: Sequence[str],
        keys: Sequence[str],
        options: Options,
        status: bool,
        start: str,
    ) -> None:
        self._session: Optional[ZenohSession] = None
        if isinstance(options, ZenohOptions):
            self._session = ZenohSession(options, "export")
        self._bridges: list[Any] = []
        try:
            for name, key in zip(names, keys):
                b: Bridge
                if self._session is not None:
                    b = make_export(self._session, name, key, status, start)
                else:
                    assert isinstance(options, RedisOptions)
                    b = make_redis_export(name, key, options, status, start)
                self._bridges.append(b)
        except BaseException:
            self._close_all()
            raise
        for b in self._bridges:
            b._start()
        self.keys = dict(zip(names, keys))
        """Each exported segment's key."""

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Each exported segment's counters (``STATUS_FIELDS``), state and last error."""
        return {b.segment: b.stats for b in self._bridges}

    @property
    def error(self) -> Optional[BaseException]:
        """The first error that stopped one of the exports, if any."""
        return next((b.error for b in self._bridges if b.error is not None), None)

    def close(self) -> None:
        """Stop every export and close the session; raise the first export's error, if one
        stopped by itself."""
        self._close_all()
        for b in self._bridges:
            b._raise_error()

    def _close_all(self) -> None:
        for b in self._bridges:
            b._stop.set()
        for b in self._bridges:
            b._stop_thread()
        if self._session is not None:
            self._session.close()
        for b in self._bridges:
            b._release()


_ENGINES = ("zenoh", "redis")


def _options(
    engine: str,
    options: Optional[Options],
    listen: Optional[Sequence[str]],
    connect: Optional[Sequence[str]],
    config: Optional[str],
    zenoh_mode: Optional[str],
    url: Optional[str],
    redis: dict[str, Any],
) -> Options:
    if engine not in _ENGINES:
        raise ArgumentError(f"engine must be one of {', '.join(_ENGINES)}, got {engine!r}")
    zenoh_given = any(x is not None for x in (listen, connect, config, zenoh_mode))
    redis_given = url is not None or any(v is not None for v in redis.values())
    if options is not None:
        if zenoh_given or redis_given:
            raise ArgumentError(
                "give either options= or the engine's own arguments (listen=, url=, ...)"
            )
        return options
    if engine == "redis":
        if zenoh_given:
            raise ArgumentError("listen=, connect=, config= and zenoh_mode= are Zenoh's")
        extra = {k: v for k, v in redis.items() if v is not None}
        return RedisOptions(url=url or DEFAULT_URL, **extra)
    if redis_given:
        raise ArgumentError("url=, max_entries= and group= are Redis's: give engine='redis'")
    return ZenohOptions(
        listen=None if listen is None else _endpoints(listen, "listen"),
        connect=None if connect is None else _endpoints(connect, "connect"),
        config=config,
        mode=zenoh_mode or "peer",
    )


def _endpoints(value: Union[str, Sequence[str]], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    for e in items:
        if not isinstance(e, str) or "/" not in e:
            raise ArgumentError(f"{what} endpoints look like 'tcp/127.0.0.1:7447', got {e!r}")
    return items


def export(
    names: Union[str, Sequence[str]],
    *,
    key: Optional[str] = None,
    prefix: Optional[str] = None,
    listen: Optional[Sequence[str]] = None,
    connect: Optional[Sequence[str]] = None,
    config: Optional[str] = None,
    zenoh_mode: Optional[str] = None,
    engine: str = "zenoh",
    url: Optional[str] = None,
    max_entries: Optional[int] = None,
    options: Optional[Options] = None,
    start: str = "oldest",
    status: bool = True,
) -> Export:
    """Publish the records and streams ``names`` over Zenoh or Redis, each under a key: ``key``
    (one name only), or ``<prefix>/<name>`` with ``prefix`` defaulting to ``xshm/<hostname>``.

    Zenoh takes ``listen``/``connect``/``config``/``zenoh_mode`` (or ``options=ZenohOptions``);
    ``engine="redis"`` takes ``url`` and ``max_entries`` (or ``options=RedisOptions``).

    A stream is read from the oldest message its ring holds (``start="oldest"``: an export
    restarted after a crash resends what the ring still has, and mirrors skip what they
    committed) or from its next message (``"latest"``). Only what is named is exported. Runs
    until :meth:`Export.close`.
    """
    name_list = [names] if isinstance(names, str) else list(names)
    if not name_list:
        raise ArgumentError("export needs at least one segment name")
    if key is not None and len(name_list) != 1:
        raise ArgumentError("a key names the key of one segment; give a prefix for several")
    if start not in ("latest", "oldest"):
        raise ArgumentError(f"start must be 'latest' or 'oldest', got {start!r}")
    opts = _options(
        engine, options, listen, connect, config, zenoh_mode, url, {"max_entries": max_entries}
    )
    z = isinstance(opts, ZenohOptions)
    if key is not None:
        keys = [check_key(key, z)]
    elif prefix is not None:
        keys = [check_key(f"{prefix.rstrip('/')}/{n.lstrip('/')}", z) for n in name_list]
    else:
        keys = [check_key(default_key(n), z) for n in name_list]
    if len(set(keys)) != len(keys):
        raise ArgumentError(f"two segments would share a key: {keys}")
    return Export(name_list, keys, opts, status, start)


def mirror(
    key: str,
    *,
    into: str,
    listen: Optional[Sequence[str]] = None,
    connect: Optional[Sequence[str]] = None,
    config: Optional[str] = None,
    zenoh_mode: Optional[str] = None,
    engine: str = "zenoh",
    url: Optional[str] = None,
    group: Optional[str] = None,
    options: Optional[Options] = None,
    allow_layout_change: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    mode: int = 0o600,
    status: bool = True,
) -> Mirror:
    """Follow the export published under ``key`` into the local segment ``into``, created
    with the remote layout (``mode`` 0600 unless asked) or attached when it exists with the
    same layout. ``max_bytes`` caps what a remote layout may make the mirror reserve; a remote
    layout change stops the mirror with :class:`~xshm.LayoutError` unless
    ``allow_layout_change`` (then the local segment is recreated: readers reopen it).
    :meth:`Mirror.wait_ready` waits for the first layout and record. Over Redis the mirror of
    a stream is the consumer group ``group`` (default ``xshm-mirror/<host>/<into>``).
    """
    if max_bytes < 1:
        raise ArgumentError(f"max_bytes must be positive, got {max_bytes}")
    opts = _options(engine, options, listen, connect, config, zenoh_mode, url, {"group": group})
    check_key(key, isinstance(opts, ZenohOptions))
    kw: dict[str, Any] = {
        "allow_layout_change": allow_layout_change,
        "max_bytes": max_bytes,
        "mode": mode,
        "status": status,
    }
    m: Mirror
    if isinstance(opts, RedisOptions):
        m = RedisMirror(opts, key, into, **kw)
    else:
        session = ZenohSession(opts, "mirror")
        try:
            m = ZenohMirror(session, key, into, **kw)
        except BaseException:
            session.close()
            raise
    try:
        m._start()
    except BaseException:
        m.close()
        raise
    return m
