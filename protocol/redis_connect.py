"""One way to open Redis for every process: standalone or Redis Cluster, told apart by
asking the node that CAAS_REDIS_URL names (``INFO cluster`` → ``cluster_enabled:1``).
A deployer points CAAS_REDIS_URL at any node of a cluster; nothing else changes.

In cluster mode the client is ``redis.asyncio.cluster.RedisCluster`` (redis-py 8.1):

- It learns the slot map from the node in the URL (CLUSTER SLOTS) and then from every
  node it found (``dynamic_startup_nodes``), so the URL's node may die later.
- MOVED and ASK are followed inside one call (up to 16 hops); after
  ``reinitialize_steps`` MOVEDs the whole map is read again.
- ConnectionError, TimeoutError, ClusterDownError and SlotNotCoveredError are retried
  ``retry.get_retries()`` times (10 by default), each time re-reading the slot map
  first; only the count of ``retry`` is used, not its backoff (ClusterDown waits
  0.25 s). Until the replica is promoted the other nodes still name the dead master,
  so each retry fails again: on loopback one call gives up after about 1 s with 10
  retries (1.8 s with 30), while a failover takes about 2.4 s with the test cluster's
  1000 ms ``cluster-node-timeout`` (node timeout, then an election).
  **A failover is therefore survived by the caller's own loop retrying for longer
  than that window**, not by a bigger retry count — the events consumer does (after
  any error it sleeps 0.5 s and re-reads its pending entries first). The connections
  need a ``socket_timeout`` so a call to a master that vanished without a RST (a host
  down, not a process) ends instead of hanging. Writes the old master acknowledged but
  had not yet copied to its replica are lost on promotion (replication is
  asynchronous); ``WAIT 1 <ms>`` after a write narrows that window where it matters.
- Per-node connection pools do not wait: past ``max_connections`` per node a call
  raises MaxConnectionsError (the standalone BlockingConnectionPool waits instead).
- Pipelines (ClusterPipeline) group commands by node and send each group in one
  round trip (not atomic across nodes). ClusterPipeline refuses ``.evalsha()`` and
  Script objects (``register_script(...)(client=pipe)``) with RedisClusterException;
  ``pipe.execute_command("EVALSHA", sha, n, *keys, *args)`` works and is routed by
  its keys, which must share one hash slot (``{tag}``). A NOSCRIPT inside a pipeline
  comes back as an error (nothing reloads it); ``script_load`` on the cluster client
  goes to every master, and a promoted replica has the scripts its master had
  (checked against the test cluster). A pipeline that hits a retryable error is sent
  again as a whole: its commands must be idempotent.
- Blocking reads (BLPOP, XREADGROUP BLOCK) go to the key's master on a pooled
  connection of that node: ``socket_timeout`` must exceed the block time.
- ``decode_responses`` applies as on a plain client.
- Only db 0 exists: a db in the URL other than 0 is refused here, naming the setting.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster

from protocol.settings import ConfigError

AnyRedis = aioredis.Redis | RedisCluster
REDIS_URL_SETTING = "CAAS_REDIS_URL"


async def is_cluster(url: str, **kwargs: Any) -> bool:
    """Whether the node at ``url`` runs in cluster mode (one INFO on a throwaway client)."""
    probe = aioredis.Redis.from_url(node_url(url), **{"socket_connect_timeout": 2.0, **kwargs})
    try:
        return await cluster_enabled(probe)
    finally:
        await probe.aclose()


async def cluster_enabled(node: aioredis.Redis) -> bool:
    info = await node.info("cluster")
    return bool(int(info.get("cluster_enabled", 0)))


async def cluster_state_ok(node: aioredis.Redis) -> bool:
    """CLUSTER INFO's cluster_state: ok once every slot has a live master."""
    raw = await node.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return "cluster_state:ok" in text.split()


def url_db(url: str) -> int:
    """The db of a Redis URL: a ``db`` query parameter, else a redis:// URL's path, else
    0 (a unix:// URL's path is the socket)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "db" in query:
        return int(query["db"])
    path = parts.path.strip("/") if parts.scheme != "unix" else ""
    return int(path) if path else 0


def node_url(url: str) -> str:
    """``url`` without its db: connecting to it sends no SELECT, which a cluster node
    refuses whatever the db."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    path = parts.path if parts.scheme == "unix" else ""
    # by hand: urlunsplit writes unix:/path for an empty host
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")


async def open_redis(
    url: str,
    *,
    decode_responses: bool = False,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
    setting: str = REDIS_URL_SETTING,
    **kwargs: Any,
) -> AnyRedis:
    """A client for ``url``: RedisCluster when that node is in a cluster, else a plain
    Redis. ``max_connections`` (and ``pool_timeout``): a standalone client gets a
    BlockingConnectionPool of that size whose callers wait up to ``pool_timeout`` s;
    a cluster client gets that many connections per node. ``kwargs`` (timeouts,
    ``retry``, ``health_check_interval``...) go to both kinds of client."""
    if not await is_cluster(url, **_probe_args(kwargs)):
        if max_connections is None:
            return aioredis.Redis.from_url(url, decode_responses=decode_responses, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=decode_responses,
            max_connections=max_connections,
            timeout=pool_timeout,
            **kwargs,
        )
        return aioredis.Redis(connection_pool=pool)
    if url_db(url) != 0:
        raise ConfigError(setting, cluster_db_problem(url))
    cluster_args: dict[str, Any] = dict(kwargs)
    if max_connections is not None:
        cluster_args["max_connections"] = max_connections
    client = RedisCluster.from_url(url, decode_responses=decode_responses, **cluster_args)
    await client.initialize()
    return client


def open_redis_sync(
    url: str, *, decode_responses: bool = False, setting: str = REDIS_URL_SETTING, **kwargs: Any
) -> redis.Redis | SyncRedisCluster:
    """open_redis for blocking code (the load generator's gevent greenlets)."""
    probe = redis.Redis.from_url(
        node_url(url), **{"socket_connect_timeout": 2.0, **_probe_args(kwargs)}
    )
    try:
        clustered = bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    finally:
        probe.close()
    if not clustered:
        return redis.Redis.from_url(url, decode_responses=decode_responses, **kwargs)
    if url_db(url) != 0:
        raise ConfigError(setting, cluster_db_problem(url))
    return SyncRedisCluster.from_url(url, decode_responses=decode_responses, **kwargs)


def cluster_db_problem(url: str) -> str:
    return f"the node is in a Redis Cluster, which has only db 0; the URL names db {url_db(url)}"


def _probe_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The connection options the detection probe shares with the real client."""
    keep = ("socket_connect_timeout", "socket_timeout", "ssl_ca_certs", "ssl_cert_reqs")
    return {k: v for k, v in kwargs.items() if k in keep}
