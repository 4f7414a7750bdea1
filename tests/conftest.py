"""Shared fixtures.

Integration tests run against a real mosquitto and redis-server started once per
session by the project's own launcher (project configs: auth, ACL, persistence, AOF)
on free ports. Each test gets its own topic root (``caas/t<hex>``) so tests never see
each other's retained messages or commands; the broker ACL is rendered for ``caas/+``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.probe import FleetProbe
from launcher.redis_cluster import RedisClusterServer, RedisClusterSettings
from launcher.stack import LocalStack, StackOptions
from protocol.signing import Signer, load_private_key
from protocol.topics import Topics
from vehicle_sim.app import RunConfig, Simulator
from vehicle_sim.behaviour import Behaviour
from vehicle_sim.fleet import Mode

SimFactory = Callable[..., AbstractAsyncContextManager[Simulator]]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    run_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(StackOptions(run_dir=run_dir, acl_root="caas/+")) as started:
        yield started


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A Redis Cluster (3 masters + 3 replicas, 1 s node timeout) started by the first
    test that asks for it, stopped at the end of the session. Only db 0: tests use keys
    of their own. A test that kills a master (``kill_master``, ``wait_for_failover``)
    starts it again (``restart``: it rejoins as a replica), so the next test finds
    every master with a replica."""
    run_dir = tmp_path_factory.mktemp("redis-cluster")
    cluster = RedisClusterServer(RedisClusterSettings(run_dir, secrets.token_hex(16)))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A broker of the test's own (no Redis), for tests that kill it or delete its
    persistence without disturbing the session stack."""
    with LocalStack(StackOptions(run_dir=tmp_path, acl_root="caas/+", with_redis=False)) as own:
        yield own


@pytest.fixture
def topics() -> Topics:
    return Topics(f"caas/t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def signer(stack: LocalStack) -> Signer:
    return Signer(load_private_key(stack.private_key_path))


@pytest.fixture
def make_sim(stack: LocalStack, topics: Topics) -> SimFactory:
    """``async with make_sim(vehicles=3, mix={Mode.BUSY: 1}) as sim`` on this test's root."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Simulator]:
        mode = overrides.get("connection_mode", "multiplexed")
        cfg = RunConfig(
            broker=stack.broker.fleet_address()
            if mode == "multiplexed"
            else stack.broker.vehicle_address(),
            public_key=stack.public_key_path,
            topic_root=topics.root,
            live=False,
            fleet_secret=stack.secrets["fleet_secret"],
            **{"vehicles": 4, "mix": {Mode.ONLINE: 1.0}, "behaviour": Behaviour(), **overrides},
        )
        sim = Simulator(cfg)
        if mode == "per-vehicle":
            stack.allow_vehicles([spec.vin for spec in sim.specs])
        async with sim:
            yield sim

    return factory


@pytest.fixture
async def probe(stack: LocalStack, signer: Signer, topics: Topics) -> AsyncIterator[FleetProbe]:
    async with FleetProbe(
        stack.broker.gateway_address(), signer, topics, client_id=f"probe-{uuid.uuid4().hex[:8]}"
    ) as started:
        yield started


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
