"""The Redis engine: a client of a Redis server (``redis-py``), for users who want a broker with
durable, replayable streams and consumer groups.

Under an export's key ``K`` the bridge keeps three Redis keys: ``K``, a Redis stream of entries
whose one field ``e`` is an envelope (a record's update, or one stream message as a batch of
one); ``K/@layout``, a string holding the layout envelope; and ``K/@mirrors``, a hash where
each stream mirror's consumer group keeps its place (``docs/BRIDGE.md``, "Over Redis"). This
module builds the client (secure, explicit defaults; the URL carries AUTH, ACL users and
``rediss://``) and sorts Redis's failures into those the bridge waits out (the broker is
unreachable: it reconnects) and those it stops on (refused credentials, a bad URL).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ArgumentError

__all__ = [
    "DEFAULT_URL",
    "RedisLink",
    "RedisOptions",
    "redact",
    "redis_module",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_ENTRIES = 100_000
CONNECT_TIMEOUT = 2.0  # seconds to reach the broker
SOCKET_TIMEOUT = 2.0  # seconds a reply may take (a blocking read asks for 0.1 s); also the
# longest close() waits for a broker that keeps the connection open and stops answering
# Server replies the bridge waits out like an absent broker (the status says which): a replica
# or a cluster in transition, a full broker, a key someone made of another type, an ACL that
# does not allow a command yet; an operator can fix each without restarting the bridge. By
# reply code (redis-py maps some codes to classes and strips them from the message, and
# prefixes a pipeline's with the command that failed: both are looked at).
WAIT_OUT = ("OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "LOADING", "CLUSTERDOWN", "WRONGTYPE",
            "NOPERM", "NOAUTH", "WRONGPASS", "BUSY ", "UNBLOCKED", "MISCONF", "MOVED", "ASK ",
            "EXECABORT")  # fmt: skip
_PIPELINE = "of pipeline caused error: "
# Connection settings a URL may not change: the bridge reads bytes in RESP2 replies, and a
# command whose reply was lost must not be sent again behind its back (a consumer group would
# deliver entries no one reads: the bridge reconnects and rereads what is pending itself).
_OWN = {"decode_responses": (False,), "protocol": (2, "2"), "retry_on_timeout": (False,)}


@dataclass
class RedisOptions:
    """How a bridge reaches Redis.

    ``url`` is a redis-py URL: ``redis://[[user]:password@]host:port/db`` (AUTH, or an ACL user),
    ``rediss://...`` for TLS, whose certificates come as query arguments
    (``?ssl_ca_certs=ca.pem&ssl_certfile=client.pem&ssl_keyfile=client.key``).
    ``max_entries``: the most entries an export keeps in a stream's Redis stream: under
    ``"block"`` the export reads no further while its mirrors' groups leave that many
    unconsumed, under ``"drop_oldest"`` Redis trims the oldest (the mirrors count what they
    miss). ``group``: a mirror's consumer group (default ``xshm-mirror/<host>/<segment>``),
    where the broker keeps its place across restarts. ``cluster``: ``url`` names one node of a
    Redis Cluster (the client learns the others); an export's keys share a hash tag, so each
    export lives on one node and different exports spread over the cluster.
    """

    url: str = DEFAULT_URL
    max_entries: int = DEFAULT_MAX_ENTRIES
    group: Optional[str] = None
    cluster: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ArgumentError(
                f"a Redis URL starts with redis://, rediss:// or unix://, got {redact(self.url)!r}"
            )
        if not isinstance(self.max_entries, int) or self.max_entries < 1:
            raise ArgumentError(f"max_entries must be a positive int, got {self.max_entries!r}")
        if self.group is not None and (not self.group or len(self.group) > 255):
            raise ArgumentError(f"a consumer group name has 1 to 255 characters: {self.group!r}")


def redis_module() -> Any:
    """``import redis``, or an ImportError that says how to install it."""
    try:
        import redis
    except ImportError:
        raise ImportError(
            "the Redis engine needs the redis package: pip install 'xshm[bridge]'"
        ) from None
    return redis


def redact(url: object) -> str:
    """The URL with its password replaced by ``***`` (for logs and status records)."""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]  # as written: brackets, port and all
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class RedisLink:
    """One Redis client (its own connection pool) for one bridge thread."""

    def __init__(self, options: RedisOptions) -> None:
        redis = redis_module()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.redis = redis
        self.url = redact(options.url)
        try:
            given = redis.connection.parse_url(options.url)
        except ValueError as e:
            raise ArgumentError(f"redis URL {self.url}: {e}") from None
        for name, allowed in _OWN.items():
            if given.get(name) not in (None, *allowed):
                raise ArgumentError(
                    f"redis URL {self.url}: {name}={given[name]!r} is the bridge's own setting "
                    "(remove it from the URL)"
                )
        if given.get("retry_on_error"):
            raise ArgumentError(f"redis URL {self.url}: retry_on_error is the bridge's own")
        kind = redis.cluster.RedisCluster if options.cluster else redis.Redis

        def make() -> Any:
            return kind.from_url(
                options.url,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )

        self._make = make
        # A cluster client asks a node for the cluster's slots when it is made: made once the
        # broker answers (check); a single server's client connects at its first command.
        self.client: Any = None if options.cluster else make()
        # Waited out: the broker restarting or unreachable (the bridge reconnects).
        self.transient: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.BusyLoadingError,
            redis.exceptions.RedisClusterException,  # no node of the cluster answered
        )
        ex = redis.exceptions
        self.waited: tuple[type[BaseException], ...] = (
            ex.OutOfMemoryError, ex.ReadOnlyError, ex.NoPermissionError, ex.ClusterError,
            ex.TryAgainError, ex.AskError, ex.AuthenticationError,
        )  # fmt: skip
        self.errors = (redis.RedisError, ex.RedisClusterException)  # what the bridge looks at
        self.connected = False
        self.last_error: Optional[str] = None

    def check(self) -> bool:
        """PING: True when the broker answers, False when it cannot be reached (yet);
        :class:`PermissionError` when it refuses the credentials or the certificate."""
        ex = self.redis.exceptions
        try:
            if self.client is None:
                self.client = self._make()
            self.client.ping()
            self.last_error = None
        except (ex.AuthenticationError, ex.AuthorizationError, ex.NoPermissionError) as e:
            raise PermissionError(f"redis {self.url}: refused: {e}") from None
        except ex.ResponseError as e:
            if str(e).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise PermissionError(f"redis {self.url}: refused: {e}") from None
            raise
        except self.transient as e:
            # A TLS handshake refused (a certificate not trusted, or none given where the
            # broker asks for one) surfaces as a connection error naming OpenSSL.
            if "certificate" in str(e).lower() or "_ssl.c" in str(e):
                raise PermissionError(f"redis {self.url}: TLS refused: {e}") from None
            self.connected = False
            self.last_error = f"{type(e).__name__}: {e}"  # e.g. "Cluster mode is not enabled"
            return False
        self.connected = True
        return True

    def waits_out(self, e: BaseException) -> bool:
        """Whether ``e`` is waited out (reconnect, try again) rather than stopping the bridge."""
        ex = self.redis.exceptions
        if isinstance(e, ex.CrossSlotTransactionError):
            return False  # the bridge's own keys in two slots: a bug, not a condition
        if isinstance(e, (*self.transient, *self.waited)):
            return True
        if not isinstance(e, ex.ResponseError):
            return False
        text = str(e).partition(_PIPELINE)[2] or str(e)
        return text.startswith(WAIT_OUT)

    @staticmethod
    def no_group(e: BaseException) -> bool:
        """A consumer group (or its stream) gone: the mirror makes it again."""
        return (str(e).partition(_PIPELINE)[2] or str(e)).startswith("NOGROUP")

    def peers(self) -> list[str]:
        return [self.url] if self.connected else []

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
