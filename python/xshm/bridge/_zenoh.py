"""The Zenoh engine: a session inside the process (peer mode by default, no server needed).

What the bridge asks of an engine is small: publish a payload under a key (blocking or dropping
when the link is congested), answer queries on a key, deliver what is published under a key to
a callback, and ask a key once. ``eclipse-zenoh`` does all of it; this module only builds the
session's configuration (secure, explicit defaults) and names Zenoh's failures.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ArgumentError
from ._status import log

__all__ = [
    "DEFAULT_ENDPOINT",
    "ZenohOptions",
    "ZenohSession",
    "check_key",
    "zenoh_module",
]

DEFAULT_ENDPOINT = "tcp/127.0.0.1:7447"
_MODES = ("peer", "client", "router")
CLIENT_CONNECT_TIMEOUT_MS = 10_000


@dataclass
class ZenohOptions:
    """How a bridge's Zenoh session is configured.

    ``listen`` and ``connect`` are Zenoh endpoints (``tcp/127.0.0.1:7447``, ``tls/host:7447``,
    ...). When neither is given, an exporter listens on ``tcp/127.0.0.1:7447`` and a mirror
    connects there: two processes of one machine find each other with no configuration, and
    nothing is reachable from another host until asked. ``config`` is a Zenoh configuration
    file (JSON5) read first; ``listen``, ``connect``, ``mode`` and ``scouting`` given here
    override it, and where neither it nor ``listen`` says where to listen, a mirror listens
    nowhere and an export on ``tcp/127.0.0.1:7447`` (not Zenoh's default, every interface in
    plain TCP, which would let a peer that TLS refuses in by gossip). Multicast scouting stays
    off unless ``scouting`` is true, and Zenoh's own shared-memory transport is always off (a
    bridge is for crossing machines: on one, open the segment itself).
    """

    listen: Optional[list[str]] = None
    connect: Optional[list[str]] = None
    mode: str = "peer"
    config: Optional[str] = None
    scouting: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def config_for(self, role: str) -> Any:
        zenoh = zenoh_module()
        if self.mode not in _MODES:
            raise ArgumentError(f"zenoh mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        try:
            cfg = zenoh.Config.from_file(self.config) if self.config else zenoh.Config()
        except zenoh.ZError as e:
            raise ArgumentError(f"zenoh config {self.config!r}: {e}") from None
        listen, connect = self.listen, self.connect
        if listen is None and connect is None and not self.config:
            if role == "export":
                listen = [DEFAULT_ENDPOINT]
            else:
                connect = [DEFAULT_ENDPOINT]
        # A file that does not say where to listen would leave Zenoh's peer default, every
        # interface in plain TCP (tcp/[::]:0), which peers learn by gossip and connect to: one
        # TLS refuses would get the data that way. A mirror listens nowhere, an export on the
        # loopback default, unless the file or `listen` says otherwise.
        unsaid = zenoh.Config().get_json("listen/endpoints")
        if listen is None and self.config and cfg.get_json("listen/endpoints") == unsaid:
            listen = [DEFAULT_ENDPOINT] if role == "export" else []
        settings: dict[str, Any] = {
            "mode": self.mode,
            "transport/shared_memory/enabled": False,
            **self.extra,
        }
        if not self.config or self.scouting:
            settings["scouting/multicast/enabled"] = self.scouting
        if listen is not None or not self.config:
            settings["listen/endpoints"] = list(listen or [])
        if connect is not None:
            settings["connect/endpoints"] = list(connect)
            if self.mode == "client":
                # A client must reach a router to open: a router still starting gets this long
                # (a peer opens at once and keeps trying in the background).
                settings["connect/timeout_ms"] = CLIENT_CONNECT_TIMEOUT_MS
        for key, value in settings.items():
            try:
                cfg.insert_json5(key, json.dumps(value))
            except zenoh.ZError as e:
                raise ArgumentError(f"zenoh config {key} = {value!r}: {e}") from None
        return cfg


def zenoh_module() -> Any:
    """``import zenoh``, or an ImportError that says how to install it."""
    try:
        import zenoh
    except ImportError:
        raise ImportError(
            "the bridge needs the eclipse-zenoh package: pip install 'xshm[bridge]'"
        ) from None
    return zenoh


def check_key(key: str, zenoh_expr: bool = True) -> str:
    """Refuse a key that is not one concrete key (no wildcards): an export publishes, and a
    mirror follows, exactly one key; with ``zenoh_expr``, also one that is not a Zenoh key
    expression."""
    if (
        not isinstance(key, str)
        or not key
        or any(c in key for c in "*$?#")
        or key.startswith("/")
        or key.endswith("/")
    ):
        raise ArgumentError(
            f"bridge key {key!r} must be a concrete key such as 'xshm/host/name' "
            "(no wildcards, no leading or trailing '/')"
        )
    if not zenoh_expr:
        if "{" in key or "}" in key:  # Redis: the bridge wraps the key in a hash tag of its own
            raise ArgumentError(f"bridge key {key!r}: no '{{' or '}}' in a key over Redis")
        return key
    zenoh = zenoh_module()
    try:
        zenoh.KeyExpr(key)
    except zenoh.ZError as e:
        raise ArgumentError(f"bridge key {key!r} is not a Zenoh key expression: {e}") from None
    return key


class ZenohSession:
    """One Zenoh session and what the bridge declared on it; :meth:`close` undeclares all."""

    def __init__(self, options: ZenohOptions, role: str) -> None:
        zenoh = zenoh_module()
        self._zenoh = zenoh
        try:
            self._session = zenoh.open(options.config_for(role))
        except zenoh.ZError as e:
            raise OSError(f"zenoh session could not open: {e}") from None
        self._declared: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def publisher(self, key: str, block: bool, express: bool = False) -> Callable[[bytes], None]:
        """The put function of a publisher on ``key``: reliable, and under congestion blocking
        (``block``) or dropping (Zenoh's DROP); ``express``: sent at once, never batched."""
        z = self._zenoh
        pub = self._session.declare_publisher(
            key,
            congestion_control=z.CongestionControl.BLOCK if block else z.CongestionControl.DROP,
            reliability=z.Reliability.RELIABLE,
            express=express,
        )
        self._declared.append(pub)
        return pub.put  # type: ignore[no-any-return]

    # Zenoh hands samples and queries to Python callbacks on threads of its own that it does
    # not join: one still waking when the interpreter exits aborts the process ("FATAL:
    # exception not rethrown"). So the bridge receives through Zenoh's channels, on threads of
    # its own that end when the channel is closed (close() undeclares, then joins them).
    def queryable(self, key: str, answer: Callable[[], Optional[bytes]]) -> None:
        """Answer every query on ``key`` with what ``answer()`` returns (nothing when None)."""
        queryable = self._session.declare_queryable(key, self._zenoh.handlers.FifoChannel(64))

        def serve(query: Any) -> None:
            try:
                payload = answer()
                if payload is not None:
                    query.reply(key, payload)
            finally:
                query.drop()  # the querier's answer is complete

        self._receive(queryable, serve, key)

    def subscribe(
        self,
        key: str,
        on_payload: Callable[[memoryview], None],
        latest_only: bool = False,
        capacity: int = 0,
    ) -> None:
        """Call ``on_payload`` with each payload published under ``key``, in order, on a thread
        of the session's. The channel holds ``capacity`` payloads (at least 256) waiting: a
        stream mirror's window, so that Zenoh's own thread never waits on it (``_flow``);
        with ``latest_only`` it keeps only the newest few instead (a record)."""
        h = self._zenoh.handlers
        channel = h.RingChannel(4) if latest_only else h.FifoChannel(max(256, capacity + 64))
        subscriber = self._session.declare_subscriber(key, channel)
        self._receive(subscriber, lambda s: on_payload(memoryview(s.payload.to_bytes())), key)

    def _receive(self, entity: Any, handle: Callable[[Any], None], key: str) -> None:
        handler = entity.handler  # not the entity: undeclaring it must not wait for recv()

        def loop() -> None:
            while True:
                try:
                    item = handler.recv()
                except self._zenoh.ZError:
                    return  # undeclared: the channel is closed
                try:
                    handle(item)
                except Exception:  # one bad item must not end the receiving
                    log.exception("zenoh %s: error handling what was received", key)

        t = threading.Thread(target=loop, name=f"xshm-zenoh-{key}", daemon=True)
        with self._lock:
            self._declared.append(entity)
            self._threads.append(t)
        t.start()

    def get(self, key: str, timeout: float) -> Optional[bytes]:
        """The first payload answering a query on ``key`` within ``timeout`` seconds."""
        try:
            for reply in self._session.get(key, timeout=timeout):
                if reply.ok is not None:
                    return bytes(reply.ok.payload.to_bytes())
        except self._zenoh.ZError:
            return None
        return None

    def peers(self) -> list[str]:
        """The Zenoh ids of the peers and routers this session is connected to."""
        info = self._session.info
        return [str(z) for z in (*info.peers_zid(), *info.routers_zid())]

    def zid(self) -> str:
        return str(self._session.zid())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for d in reversed(self._declared):
            with contextlib.suppress(self._zenoh.ZError):
                d.undeclare()
        self._declared.clear()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        self._session.close()
