"""GET /v1/activations on a real Redis: pagination, filters, bad input, and what a page
costs in Redis commands (docs/protocol.md, "Listing activations")."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.activation import Action, Activation, FailureCategory, State
from gateway.listing import encode_cursor
from gateway.policy import RetryPolicy
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, Harness, settings_env
from tests.helpers import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
OFFLINE = [f"CAATR1234SB00091{i}" for i in range(6)]
# vehicles nobody simulates: an activation probes its vehicle once (short, as each takes
# the vehicle's command slot in turn), then waits for it (WAITING_VEHICLE) all test long
WAIT = {"ready_wait_s": 300.0, "status_query_timeout_s": 0.2}


async def walk(client: httpx.AsyncClient, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page of a query, following Link; (activations in order, X-Total-Count)."""
    found: list[dict[str, Any]] = []
    totals = set()
    url: str | None = "/v1/activations"
    first = True
    while url is not None:
        response = await client.get(url, params=params if first else None)
        first = False
        assert response.status_code == 200, response.text
        found += response.json()
        totals.add(int(response.headers["X-Total-Count"]))
        link = response.headers.get("Link")
        cursor = response.headers.get("X-Next-Cursor")
        assert (link is None) == (cursor is None)
        if link is None:
            url = None
            continue
        match = re.fullmatch(r'<(http://gateway(/v1/activations\?[^>]*))>; rel="next"', link)
        assert match, link
        assert f"cursor={cursor}" in match[2]
        url = match[2]
    assert len(totals) == 1, totals
    return found, totals.pop()


def ids(activations: list[dict[str, Any]]) -> list[str]:
    return [a["activation_id"] for a in activations]


def oldest_first(activations: list[dict[str, Any]]) -> list[str]:
    return ids(sorted(activations, key=lambda a: (a["created_at"], a["activation_id"])))


async def create_waiting(gw: Harness, n: int) -> list[dict[str, Any]]:
    return [
        await gw.activate(OFFLINE[i % len(OFFLINE)], f"feature_{i % 4}", policy=WAIT)
        for i in range(n)
    ]


async def until_quiet(gw: Harness) -> None:
    """Until every activation waits out its long ready_wait_s (its status probe went
    unanswered): no worker touches Redis for them meanwhile."""
    far = (time.time() + 60) * 1000

    async def waiting() -> bool:
        shards = gw.shards()
        firsts = [await gw.redis.zrange(k.timers, 0, 0, withscores=True) for k in shards]
        leased = sum([await gw.redis.zcard(k.leases) for k in shards])
        due = [first[0][1] for first in firsts if first]
        return not leased and bool(due) and min(due) > far

    await eventually(waiting, 10)


async def test_pages_walk_every_activation_exactly_once(make_gateway: GatewayFactory) -> None:
    """60 activations, 7 a page, both orders: each listed once, in creation order, the
    Link/X-Next-Cursor on every page but the last, X-Total-Count the same on each."""
    async with make_gateway() as gw:
        created = await create_waiting(gw, 60)
        await until_quiet(gw)  # so that the records stand still while they are compared
        expected = oldest_first(created)
        listed, total = await walk(gw.client, limit=7)
        assert (ids(listed), total) == (expected, 60)
        listed, total = await walk(gw.client, limit=7, order="desc")
        assert (ids(listed), total) == (expected[::-1], 60)
        one_page = await gw.client.get("/v1/activations", params={"limit": 500})
        assert "Link" not in one_page.headers and "X-Next-Cursor" not in one_page.headers
        assert one_page.json() == [await gw.get(i) for i in expected]  # the GET's body
        default = await gw.client.get("/v1/activations")
        assert len(default.json()) == 50


async def test_a_page_reads_only_its_own_records(make_gateway: GatewayFactory) -> None:
    """A page costs one range read, one count and `limit` record reads, however many
    activations exist; a vin filter with another walks only that vehicle's entries."""
    async with make_gateway() as gw:
        await create_waiting(gw, 90)
        await until_quiet(gw)
        shards = len(gw.shards())  # a page reads each shard's index (one on a single Redis)
        await reset_stats(gw)
        response = await gw.client.get("/v1/activations", params={"limit": 5, "order": "desc"})
        assert len(response.json()) == 5
        stats = await command_calls(gw)
        assert stats["hget"] == 5
        assert stats["zrevrangebylex"] == shards
        assert stats["zlexcount"] == shards
        assert not {"scan", "keys", "hgetall"} & set(stats)
        await reset_stats(gw)
        vin = OFFLINE[0]
        params = {"vin": vin, "state": "WAITING_VEHICLE", "limit": 4}
        listed, total = await walk(gw.client, **params)
        assert total == 15 and len(listed) == 15 and {a["vin"] for a in listed} == {vin}
        stats = await command_calls(gw)
        # 4 pages, in the vehicle's shard only; each counts (15 lookups) and reads its
        # page (at most 15 more)
        assert stats["zscore"] <= 4 * (15 + 15)


async def reset_stats(gw: Harness) -> None:
    if gw.cluster:
        await gw.redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    else:
        await gw.redis.config_resetstat()


async def command_calls(gw: Harness) -> dict[str, int]:
    """Calls per command since ``reset_stats``, summed over the masters of a cluster."""
    if gw.cluster:
        per_node = await gw.redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    else:
        per_node = {"one": await gw.redis.info("commandstats")}
    calls: dict[str, int] = {}
    for stats in per_node.values():
        for name, stat in stats.items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + int(stat["calls"])
    return calls


async def settled_mix(gw: Harness, make_sim: SimFactory) -> list[dict[str, Any]]:
    """SUCCEEDED, FAILED (configuration_conflict), WAITING_VEHICLE and CANCELLED ones."""
    done = []
    async with make_sim(vehicles=3) as sim:
        for spec in sim.specs:
            for feature in (spec.installed_features[0], "not_on_this_car"):
                created = await gw.activate(spec.vin, feature)
                done.append(await gw.wait_terminal(created["activation_id"]))
    waiting = await create_waiting(gw, 4)
    cancelled = await gw.client.post(f"/v1/activations/{waiting[0]['activation_id']}/cancel")
    assert cancelled.status_code == 200
    return done + [await gw.get(a["activation_id"]) for a in waiting]


async def test_filters_agree_with_the_records(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """Every combination of state, failure_category, feature and vin, in both orders,
    lists exactly the activations whose records match, with the right total."""
    async with make_gateway() as gw:
        everything = await settled_mix(gw, make_sim)
        states = {a["state"] for a in everything}
        assert states == {"SUCCEEDED", "FAILED", "WAITING_VEHICLE", "CANCELLED"}
        assert {a["failure_category"] for a in everything} == {None, "configuration_conflict"}
        values: dict[str, list[Any]] = {
            "state": [None, "SUCCEEDED", "FAILED", "WAITING_VEHICLE", "QUEUED"],
            "failure_category": [None, "configuration_conflict", "timeout"],
            "feature": [None, "not_on_this_car", everything[0]["feature"], "feature_1"],
            "vin": [None, everything[0]["vin"], OFFLINE[0]],
        }
        for combo in itertools.product(*values.values()):
            filters = {k: v for k, v in zip(values, combo, strict=True) if v is not None}
            match = [a for a in everything if all(a[k] == v for k, v in filters.items())]
            listed, total = await walk(gw.client, limit=2, **filters)
            assert (ids(listed), total) == (oldest_first(match), len(match)), filters
            listed, total = await walk(gw.client, limit=3, order="desc", **filters)
            assert (ids(listed), total) == (oldest_first(match)[::-1], len(match)), filters


async def test_time_window_is_since_inclusive_until_exclusive(
    make_gateway: GatewayFactory,
) -> None:
    """since/until select on created_at (to the millisecond), with the other filters."""
    async with make_gateway() as gw:
        created = await create_waiting(gw, 12)
        ordered = sorted(created, key=lambda a: (a["created_at"], a["activation_id"]))
        since, until = ordered[3]["created_at"], ordered[9]["created_at"]
        inside = [a for a in ordered if since <= a["created_at"] < until]
        listed, total = await walk(gw.client, since=since, until=until, limit=4)
        assert (ids(listed), total) == (ids(inside), len(inside))
        assert total >= 1
        feature = {"feature": "feature_2", "since": since}
        listed, total = await walk(gw.client, **feature)
        expected = [a for a in ordered if a["created_at"] >= since and a["feature"] == "feature_2"]
        assert (ids(listed), total) == (ids(expected), len(expected))
        offset = "2000-01-01T01:00:00+01:00"  # an offset other than Z
        listed, total = await walk(gw.client, until=offset)
        assert (listed, total) == ([], 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": encode_cursor("hello|x")}, "cursor"),
        ({"state": "DONE"}, "state"),
        ({"failure_category": "bad_luck"}, "failure_category"),
        ({"feature": "Climate-Plus"}, "feature"),
        ({"vin": "caatr1234sb000911"}, "vin"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),  # no offset
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    make_gateway: GatewayFactory, params: dict[str, str], field: str
) -> None:
    """Each bad value answers 422 invalid_request, its problem located at the query field."""
    async with make_gateway() as gw:
        response = await gw.client.get("/v1/activations", params=params)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "invalid_request"
        assert ["query", field] in [p["loc"] for p in body["detail"]]


async def test_list_needs_the_token(make_gateway: GatewayFactory) -> None:
    """The list is an API route like the others: 401 without or with a wrong token."""
    async with make_gateway() as gw:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
            response = await gw.client.get("/v1/activations", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"


def reindex(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--reindex"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.standalone_only
async def test_reindex_lists_activations_stored_before_the_indexes(
    make_gateway: GatewayFactory, stack: LocalStack, topics: Topics, redis_db: int
) -> None:
    """Activations whose index entries are missing (stored by an older gateway) are not
    listed, and a stale entry lists one under a state it left; `python -m gateway
    --reindex` puts every activation back in exactly its indexes, filters included."""
    async with make_gateway() as gw:
        created = await create_waiting(gw, 10)
        await until_quiet(gw)
        entry = (await gw.redis.zrange("caas:gw:ix", 0, 0))[0]  # the oldest
        indexes = [key async for key in gw.redis.scan_iter(match="caas:gw:ix*")]
        await gw.redis.delete(*indexes)
        assert (await walk(gw.client)) == ([], 0)
        await gw.redis.zadd("caas:gw:ix:state=SUCCEEDED", {entry: 0})  # as if it had been
        assert (await walk(gw.client, state="SUCCEEDED"))[1] == 1
        env = {**os.environ, **settings_env(stack, topics, redis_db)}
        done = await asyncio.to_thread(reindex, env)
        assert (done.returncode, done.stdout) == (0, "gateway: 10 activations indexed\n")
        listed, total = await walk(gw.client, limit=3)
        assert (ids(listed), total) == (oldest_first(created), 10)
        listed, total = await walk(gw.client, state="WAITING_VEHICLE", vin=OFFLINE[1])
        assert total == 2 and {a["vin"] for a in listed} == {OFFLINE[1]}
        assert (await walk(gw.client, state="SUCCEEDED")) == ([], 0)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    refused = await asyncio.to_thread(reindex, clean)
    assert refused.returncode == 2
    assert refused.stderr.startswith("gateway: CAAS_REDIS_URL: not set (expected redis://")


async def test_vin_with_another_filter_walks_past_one_chunk(make_gateway: GatewayFactory) -> None:
    """900 activations of one vehicle (stored as the store stores them), 300 FAILED:
    the vin + state pages walk the smaller set in chunks of 256 and list each match
    once, in both orders; another vehicle's activations stay out."""
    async with make_gateway() as gw:
        assert gw.gateway is not None
        store, vin = gw.gateway.store, OFFLINE[0]
        started = time.time() - 3600
        for i in range(920):
            failed = i % 3 == 0
            act = Activation(
                f"bulk-{i:04d}", vin if i < 900 else OFFLINE[1], "climate_plus",
                Action.ACTIVATE, RetryPolicy(), started + i * 0.001, started,
                state=State.FAILED if failed else State.SUCCEEDED,
                failure_category=FailureCategory.TIMEOUT if failed else None,
            )  # fmt: skip
            later = time.time() + 3600  # their timers stay out of the test's way
            assert (await store.create(act, "h", [], act.created_at, timer_at=later)).created
        expected = [f"bulk-{i:04d}" for i in range(0, 900, 3)]
        listed, total = await walk(gw.client, vin=vin, state="FAILED", limit=70)
        assert (ids(listed), total) == (expected, 300)
        listed, total = await walk(gw.client, vin=vin, state="FAILED", order="desc", limit=500)
        assert (ids(listed), total) == (expected[::-1], 300)
        listed, total = await walk(gw.client, vin=vin, state="SUCCEEDED", limit=500)
        assert total == 600 and len(set(ids(listed))) == 600
