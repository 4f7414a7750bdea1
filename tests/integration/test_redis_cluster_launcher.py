"""launcher/redis_cluster.py: the test cluster is what it claims to be (every slot
served, one replica per master, AOF on, the password required and on no command
line), and a killed master's replica takes over with its data."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from launcher.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_cluster_shape_and_password(redis_cluster: RedisClusterServer) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert all(len(redis_cluster.replicas_of(m)) == 1 for m in masters)
    password = redis_cluster.settings.password
    for node in redis_cluster.nodes():
        assert list(node.ask("CONFIG", "GET", "appendonly").values()) == [b"yes"]
        assert node.proc is not None
        assert password not in Path(f"/proc/{node.proc.pid}/cmdline").read_text()
        assert _anonymous_ping(node.port).startswith(b"-NOAUTH")


def _anonymous_ping(port: int) -> bytes:
    """PING without a password on a raw socket (redis-py takes seconds to give up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(200)


def test_a_killed_masters_replica_takes_over_with_its_data(
    redis_cluster: RedisClusterServer,
) -> None:
    client = RedisCluster.from_url(redis_cluster.url())
    key = f"failover:{uuid.uuid4().hex}"
    try:
        client.set(key, "kept")
        old = redis_cluster.master_of_key(key)
        redis_cluster.wait_replicated(old)
        redis_cluster.kill_master(old)
        try:
            promoted = redis_cluster.wait_for_failover(15.0)
            assert promoted is not old
            assert redis_cluster.master_of_key(key) is promoted
            assert client.get(key) == b"kept"
        finally:
            redis_cluster.restart(old)
        assert redis_cluster.replicas_of(promoted) == [old]
        client.delete(key)
    finally:
        client.close()
