"""Redis cache backend: shared by every replica, one round trip per cache call.

Reads are one MGET, writes one pipelined batch of `SET ... PX`. Socket timeouts are short and a
call retries once without backoff, so a dead Redis costs milliseconds (the cache layer then
treats it as "no cache") and a restarted Redis is picked up again on the next call through the
connection pool. redis-py's own default (10 retries with backoff) would stall every re-rank for
seconds while Redis is down.

On a Redis Cluster (`redis+cluster://` or `cluster=True`) the same calls go through redis-py's
cluster clients. Keys carry no hash tags: pair-score keys are SHA-256 digests, so one query's
candidates spread over every primary instead of making one slot hot. A read is then one MGET per
slot, pipelined, one round trip per primary (`mget_nonatomic`); a write one pipelined batch per
primary. The semantic cache's log is one stream, hence one slot. When a primary dies, calls on its
slots fail fast (the cache layer serves "no cache") and the client reloads the slot map, so calls
reach the promoted replica as soon as the cluster has one.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from rerank_prod.cache import check_ttl
from rerank_prod.validation import check_number

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    SyncClient = redis.Redis | redis.cluster.RedisCluster
    AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_SCHEMES = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_LOG_FIELD = b"d"


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.cluster
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("RedisCache needs the redis client: pip install 'rerank-prod[redis]'") from exc
    return redis


def _cluster_url(url: str) -> str:
    """The URL redis-py's cluster clients take: redis:// or rediss:// to one node, database 0."""
    location = urlsplit(url)
    scheme = _CLUSTER_SCHEMES.get(location.scheme, location.scheme)
    if scheme == "unix":
        raise ValueError("a Redis Cluster is reached over TCP: use redis+cluster://host:port, not unix://")
    if location.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, the url names {location.path.strip('/')!r}")
    return location._replace(scheme=scheme, path="").geturl()


class RedisCache:
    """`CacheBackend` (and `EntryLog`) on Redis, with sync and native async clients.

    - `url`: `redis://[user:password@]host:port/db`, `rediss://...` for TLS (pass `ssl_ca_certs=`,
      `ssl_certfile=`, ... as keyword arguments), or `unix:///path/to/socket`. A Redis Cluster:
      `redis+cluster://host:port` (or `rediss+cluster://`, or `cluster=True`) naming any one node;
      the client discovers the others.
    - `key_prefix`: prepended to every key, to share one Redis between applications.
    - `ttl_s`: default time to live of an entry (None: no expiry); a cache layer's own `ttl_s` wins.
    - `socket_timeout_s` / `connect_timeout_s`: how long one Redis operation may stall a re-rank.
    - `cluster`: talk to a Redis Cluster (implied by a `redis+cluster://` URL).
    - other keyword arguments go to `redis.Redis.from_url` (and its asyncio twin) unchanged.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        key_prefix: str = "",
        ttl_s: float | None = 3600.0,
        socket_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.25,
        cluster: bool = False,
        **client_kwargs: Any,
    ) -> None:
        scheme = urlsplit(url).scheme if isinstance(url, str) else None
        if scheme not in (*_SCHEMES, *_CLUSTER_SCHEMES):
            raise ValueError(f"url must be a redis://, rediss://, unix:// or redis+cluster:// URL, got {url!r}")
        if not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool, got {type(cluster).__name__}")
        cluster = cluster or scheme in _CLUSTER_SCHEMES
        if cluster:
            url = _cluster_url(url)
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {type(key_prefix).__name__}")
        if client_kwargs.get("decode_responses"):
            raise ValueError("decode_responses must stay off: cache values are bytes")
        check_ttl(ttl_s)
        check_number("socket_timeout_s", socket_timeout_s)
        check_number("connect_timeout_s", connect_timeout_s)
        redis_module = _import_redis()
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.cluster = cluster
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s
        options = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": connect_timeout_s, **client_kwargs}
        # One immediate retry: enough to replace a pooled connection that died with a restarted Redis,
        # or (cluster) to follow the slot map the client reloads after a node failed.
        self._sync_options = {"retry": Retry(NoBackoff(), 1), **options}
        # The asyncio cluster pipeline sleeps 0.25 s before each retry: fail at once instead (the
        # failed call is "no cache"; the client reloads the slot map for the next one).
        self._async_options = {"retry": AsyncRetry(NoBackoff(), 0 if cluster else 1), **options}
        self._sync_client: SyncClient | None = None
        self._sync_lock = threading.Lock()
        if cluster:
            # The sync cluster client connects when built, so it is built on first use: a cluster
            # that is down at start-up is "no cache", not a crash. The asyncio one connects lazily:
            # building it here checks the options now.
            redis_module.asyncio.cluster.RedisCluster.from_url(url, **self._async_options)
        else:
            self._sync_client = redis_module.Redis.from_url(url, **self._sync_options)
        # redis.asyncio connections belong to the event loop that opened them: one client per loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        """The URL without its credentials."""
        location = urlsplit(self.url)
        netloc = f"{location.hostname or ''}{f':{location.port}' if location.port else ''}"
        cluster = ", cluster=True" if self.cluster else ""
        return f"RedisCache({location._replace(netloc=netloc).geturl()!r}, key_prefix={self.key_prefix!r}{cluster})"

    @property
    def _client(self) -> SyncClient:
        if self._sync_client is None:
            with self._sync_lock:
                if self._sync_client is None:
                    cluster_client = _import_redis().cluster.RedisCluster
                    self._sync_client = cluster_client.from_url(self.url, **self._sync_options)
        return self._sync_client

    def _async_client(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            asyncio_module = _import_redis().asyncio
            client_type = asyncio_module.cluster.RedisCluster if self.cluster else asyncio_module.Redis
            client = client_type.from_url(self.url, **self._async_options)
            self._async_clients[loop] = client
        return client

    async def _acall(self, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        """Runs one operation on this loop's client. A cluster client that saw a node fail drops its
        connections, so the next call reloads the slot map (its own retry would do so after a sleep)."""
        client = self._async_client()
        try:
            return await operation(client)
        except Exception as exc:
            if self.cluster and isinstance(exc, _import_redis().asyncio.cluster.RedisCluster.ERRORS_ALLOW_RETRY):
                await client.aclose()
            raise

    def _names(self, keys: Sequence[str]) -> list[str]:
        return [self.key_prefix + key for key in keys]

    def _expiry_ms(self, ttl_s: float | None) -> int | None:
        check_ttl(ttl_s)
        ttl = self.ttl_s if ttl_s is None else ttl_s
        return None if ttl is None else max(1, round(ttl * 1000))

    # --- CacheBackend ----------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        client: Any = self._client
        values = client.mget_nonatomic(self._names(keys)) if self.cluster else client.mget(self._names(keys))
        return cast(list[bytes | None], values)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        names = self._names(keys)
        values = await self._acall(lambda client: (client.mget_nonatomic if self.cluster else client.mget)(names))
        return cast(list[bytes | None], values)

    def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        if items:
            self._queue_sets(self._client.pipeline(transaction=False), items, ttl_s).execute()

    async def aset_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        if items:
            await self._acall(
                lambda client: self._queue_sets(client.pipeline(transaction=False), items, ttl_s).execute()
            )

    def _queue_sets(self, pipe: Any, items: Mapping[str, bytes], ttl_s: float | None) -> Any:
        expiry_ms = self._expiry_ms(ttl_s)
        for name, value in zip(self._names(list(items)), items.values(), strict=True):
            pipe.set(name, value, px=expiry_ms)
        return pipe

    # --- EntryLog: a capped Redis stream ------------------------------------------------------------

    def append_log(self, log: str, entries: Sequence[bytes], max_entries: int, ttl_s: float | None = None) -> None:
        if entries:
            self._queue_appends(self._client.pipeline(transaction=False), log, entries, max_entries, ttl_s).execute()

    async def aappend_log(
        self, log: str, entries: Sequence[bytes], max_entries: int, ttl_s: float | None = None
    ) -> None:
        if entries:
            await self._acall(
                lambda client: self._queue_appends(
                    client.pipeline(transaction=False), log, entries, max_entries, ttl_s
                ).execute()
            )

    def _queue_appends(
        self, pipe: Any, log: str, entries: Sequence[bytes], max_entries: int, ttl_s: float | None
    ) -> Any:
        name = self.key_prefix + log
        for entry in entries:
            pipe.xadd(name, {_LOG_FIELD: entry}, maxlen=max_entries, approximate=True)
        expiry_ms = self._expiry_ms(ttl_s)
        if expiry_ms is not None:
            pipe.pexpire(name, expiry_ms)
        return pipe

    def read_log(self, log: str, cursor: str | None, count: int) -> tuple[str | None, list[bytes]]:
        return self._parse_log(self._client.xread({self.key_prefix + log: cursor or "0-0"}, count=count), cursor)

    async def aread_log(self, log: str, cursor: str | None, count: int) -> tuple[str | None, list[bytes]]:
        reply = await self._acall(lambda client: client.xread({self.key_prefix + log: cursor or "0-0"}, count=count))
        return self._parse_log(reply, cursor)

    @staticmethod
    def _parse_log(reply: Any, cursor: str | None) -> tuple[str | None, list[bytes]]:
        """XREAD reply of one stream (RESP2: [[name, messages]], RESP3: {name: [messages]})
        -> (id of the last entry read, entry payloads)."""
        if isinstance(reply, dict):
            reply = [(name, messages) for name, (messages,) in reply.items()]
        messages = reply[0][1] if reply else []
        if not messages:
            return cursor, []
        last_id = messages[-1][0]
        return (
            last_id.decode() if isinstance(last_id, bytes) else last_id,
            [fields[_LOG_FIELD] for _, fields in messages if _LOG_FIELD in fields],
        )

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()

    async def aclose(self) -> None:
        """Closes the client of the running event loop."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
