"""Start-up probes of the shared dependencies: the MQTT broker and Redis. Each waits
up to the start-up wait for the dependency to answer and refuses at once when it
rejects the credentials (protocol/startup.py says what the caller prints)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from protocol.errors import MqttConnectError, MqttTimeout
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.redis_connect import (
    cluster_db_problem,
    cluster_enabled,
    cluster_state_ok,
    node_url,
    url_db,
)
from protocol.settings import ConfigError
from protocol.startup import CredentialsRefused, Dependency, DependencyUnreachable

# CONNACK reason codes meaning "these credentials": MQTT 5 0x86, 0x87, 0x8C
MQTT_REFUSALS = ("bad user name or password", "not authorized", "bad authentication method")


def redis_refused(exc: BaseException) -> bool:
    """WRONGPASS / NOAUTH (AuthenticationError) or an ACL refusal (NOPERM)."""
    return isinstance(
        exc, (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError)
    )


async def wait_for_redis(url: str, setting: str, wait_s: float) -> None:
    """Redis at ``url`` answers PING within ``wait_s`` (a cluster node: with the cluster
    serving every slot, and db 0 in the URL); raises DependencyUnreachable,
    CredentialsRefused or ConfigError naming ``setting``."""
    timeouts: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    node = aioredis.Redis.from_url(node_url(url), **timeouts)  # no SELECT: a cluster refuses it
    client = aioredis.Redis.from_url(url, **timeouts)
    pool_args = client.connection_pool.connection_kwargs
    where = pool_args.get("path") or f"{pool_args.get('host')}:{pool_args.get('port')}"
    redis_dep = Dependency(
        "Redis",
        str(where),
        setting,
        (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError),
        redis_refused,
    )
    try:
        if await redis_dep.wait(lambda: _node_ready(node), wait_s):
            if url_db(url) != 0:
                raise ConfigError(setting, cluster_db_problem(url))
        else:
            await redis_dep.wait(client.ping, wait_s)  # the URL's db exists
    finally:
        await node.aclose()
        await client.aclose()


async def _node_ready(node: aioredis.Redis) -> bool:
    """PING answers; on a cluster node, the cluster also serves every slot (a cluster
    still electing a master answers PING and refuses the dead one's keys). Whether the
    node is in a cluster."""
    await node.ping()
    if not await cluster_enabled(node):
        return False
    if not await cluster_state_ok(node):
        raise redis.exceptions.ConnectionError("the Redis Cluster's cluster_state is not ok")
    return True


async def wait_for_broker(
    broker: BrokerAddress, setting: str, wait_s: float, log_in: bool = True
) -> None:
    """The broker accepts TCP connections within ``wait_s``, then (``log_in``) our MQTT
    CONNECT with the address's credentials; raises DependencyUnreachable or
    CredentialsRefused naming ``setting``."""
    where = f"{broker.host}:{broker.port}"
    dep = Dependency("MQTT broker", where, setting, (OSError,), lambda _: False)

    async def tcp() -> None:
        _, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.close()

    loop = asyncio.get_running_loop()
    started = loop.time()
    await dep.wait(tcp, wait_s)
    if not log_in:
        return
    options = ConnectionOptions(client_id=f"probe-{uuid.uuid4().hex[:8]}")
    conn = MqttConnection(broker, options)
    try:
        await conn.connect(max(1.0, wait_s - (loop.time() - started)))
    except MqttConnectError as exc:
        if any(refusal in exc.reason.lower() for refusal in MQTT_REFUSALS):
            raise CredentialsRefused("MQTT broker", where, setting, exc.reason) from None
        raise ConfigError(setting, f"the MQTT broker at {where} refused: {exc.reason}") from None
    except MqttTimeout:
        cause = "no CONNACK: is this an MQTT listener without TLS?"
        raise DependencyUnreachable("MQTT broker", where, setting, wait_s, cause) from None
    finally:
        await conn.disconnect()
