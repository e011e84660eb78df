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
SOCKET_TIMEOUT = 10.0  # seconds a reply may take (a blocking read asks for 0.1 s)


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
    where the broker keeps its place across restarts.
    """

    url: str = DEFAULT_URL
    max_entries: int = DEFAULT_MAX_ENTRIES
    group: Optional[str] = None

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
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class RedisLink:
    """One Redis client (its own connection pool) for one bridge thread."""

    def __init__(self, options: RedisOptions) -> None:
        redis = redis_module()
        self.redis = redis
        self.url = redact(options.url)
        try:
            self.client = redis.Redis.from_url(
                options.url,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=SOCKET_TIMEOUT,
            )
        except ValueError as e:
            raise ArgumentError(f"redis URL {self.url}: {e}") from None
        # Waited out: the broker restarting or unreachable (the bridge reconnects).
        self.transient: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.BusyLoadingError,
        )
        self.connected = False

    def check(self) -> bool:
        """PING: True when the broker answers, False when it cannot be reached (yet);
        :class:`PermissionError` when it refuses the credentials or the certificate."""
        ex = self.redis.exceptions
        try:
            self.client.ping()
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
            return False
        self.connected = True
        return True

    def peers(self) -> list[str]:
        return [self.url] if self.connected else []

    def close(self) -> None:
        self.client.close()
