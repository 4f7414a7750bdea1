"""The pure parts of cluster mode: a vehicle's shard, that every script's keys hash to
one slot (each store call recorded with a fake pipeline, in both modes), the standalone
names unchanged, and the list's merge of shard pages."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import replace
from typing import Any

import pytest
from redis.crc import key_slot

from gateway.activation import Action, Activation, FailureCategory, State
from gateway.events import Emit, Send, Step
from gateway.intake import PresenceIn, ResponseIn, StateIn
from gateway.keys import CLUSTER_SHARDS, Keys, shard_of
from gateway.listing import (
    ListQuery,
    ShardPage,
    index_keys,
    merge_pages,
    plan,
    possible_index_keys,
)
from gateway.policy import RetryPolicy
from gateway.store import Snapshot, Store
from protocol.models import CommandType

VINS = [f"WVWZZZ1JZ{n:08d}" for n in range(200)]


def test_shard_of_is_crc32_mod_shards_and_one_shard_standalone() -> None:
    for vin in VINS:
        assert shard_of(vin, CLUSTER_SHARDS) == zlib.crc32(vin.encode()) % CLUSTER_SHARDS
        assert shard_of(vin, 1) == 0
    assert {shard_of(v, CLUSTER_SHARDS) for v in VINS} == set(range(CLUSTER_SHARDS))


def test_standalone_names_are_the_old_ones() -> None:
    k = Keys("caas:gw", "caas:events")
    vin = VINS[0]
    assert k.of_vin(vin) is k
    assert k.activation("a1") == "caas:gw:act:a1"
    assert (k.timers, k.leases, k.states) == ("caas:gw:timers", "caas:gw:leases", "caas:gw:states")
    assert k.twin(vin) == f"caas:gw:twin:{vin}"
    assert k.index("failed", "", "f1") == "caas:gw:ix:state=failed:feature=f1"
    assert k.vin_index(vin) == f"caas:gw:ix:vin={vin}"
    assert k.outbox == "caas:events"  # the scripts write the stream itself
    assert k.exporter == "caas:gw:exporter"
    assert k.all_shards() == [k]


def test_cluster_names_carry_the_shard_tag() -> None:
    k = Keys("caas:gw", "caas:events", CLUSTER_SHARDS)
    vin = VINS[0]
    s = shard_of(vin, CLUSTER_SHARDS)
    shard = k.of_vin(vin)
    assert shard.activation("a1") == f"{{caas:gw:{s}}}:act:a1"
    assert shard.outbox == f"{{caas:gw:{s}}}:outbox"
    # a vehicle's keys are in its shard whichever view names them
    assert k.in_shard((s + 1) % CLUSTER_SHARDS).twin(vin) == shard.twin(vin)
    assert k.home("a1") == "caas:gw:home:a1"
    assert len({key_slot(x.timers.encode()) for x in k.all_shards()}) == CLUSTER_SHARDS


# ------------------------------------------------------------ every script, one slot


class Recorder:
    """Stands for the auto-pipeline: records each script call's keys."""

    def __init__(self, results: dict[Any, Any]) -> None:
        self.results = results
        self.calls: list[tuple[Any, list[str]]] = []

    async def run(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        self.calls.append((script, [str(k) for k in keys]))
        return self.results[script]

    async def aclose(self) -> None:
        pass


class FakeRedis:
    """Only what the store touches besides scripts in these calls."""

    def register_script(self, script: str) -> object:
        return object()

    async def set(self, *args: Any, **kwargs: Any) -> bool:
        return True

    async def get(self, key: str) -> str | None:
        return None


POLICY = RetryPolicy(
    max_attempts=3, initial_backoff_s=0.1, backoff_multiplier=2.0, max_backoff_s=1.0,
    jitter_ratio=0.1, status_query_timeout_s=1.0, ack_timeout_s=1.0, ready_wait_s=1.0,
    outcome_wait_s=1.0,
)  # fmt: skip


def recording_store(keys: Keys) -> tuple[Store, Recorder]:
    store = Store(FakeRedis(), keys)  # type: ignore[arg-type]
    results = {
        store._load: False,
        store._create: ["created", "", []],
        store._commit: ["ok", "2"],
        store._claim: ["a1"],
        store._release: 1,
        store._twin: [1, 1],
        store._respond: ['{"act": "a1", "type": "activate", "sent_ms": 1}', 0],
        store._list: ["", 0],
        store._reindex: 1,
        store._register: 1,
    }
    recorder = Recorder(results)
    store.pipeline = recorder  # type: ignore[assignment]

    async def replicated(k: Keys) -> bool:
        return True

    async def take_home(activation_id: str, shard: int) -> int:
        store._remember(activation_id, shard)
        return shard

    store.replicated = replicated  # type: ignore[method-assign]
    store._take_home = take_home  # type: ignore[method-assign]
    return store, recorder


async def every_call(store: Store, vin: str) -> None:
    act = Activation("a1", vin, "f1", Action.ACTIVATE, POLICY, 1.0, 1.0, due_at=1.0)
    await store.create(act, "h", [Emit("activation.accepted", {})], 1.0)
    await store.create(act, "h", [], 1.0, guard_feature="f1")
    snap = Snapshot(act, "1", None, None)
    later = replace(act, state=State.FAILED, failure_category=FailureCategory.TIMEOUT)
    send = Send("c1", CommandType.ACTIVATE, 1, 10.0)
    await store.commit(snap, Step(later, (send,), (Emit("activation.failed", {}),), True), 2.0)
    await store.load("a1")  # its home: remembered by create
    await store.release("a1", 1, None)
    state = StateIn({"features": {}}, 1, 1.0)
    await store.update_twin(vin, recv_at=1.0, state=state)
    await store.update_twin(vin, recv_at=1.0, presence=PresenceIn({}, True, 1.0))
    response = ResponseIn(None, "c1", "ack", None, None, None, None, 1.0)  # type: ignore[arg-type]
    await store.respond(vin, response, 1.0)
    for query in (ListQuery(), ListQuery(vin=vin), ListQuery(state="failed", vin=vin)):
        await store._shard_page(store.keys.of_vin(vin), _plan(store.keys.of_vin(vin), query))
    await store.register_query(vin, "c2", "status", 1.0, "worker-1")
    await store.claim(1.0, 1.0, 10)  # every shard


def _plan(k: Keys, query: ListQuery) -> Any:
    return plan(k, query)


@pytest.mark.parametrize("shards", [1, CLUSTER_SHARDS])
def test_every_script_call_hashes_to_one_slot(shards: int) -> None:
    keys = Keys("caas:gw", "caas:events", shards)
    for vin in VINS[:20]:
        store, recorder = recording_store(keys)
        asyncio.run(every_call(store, vin))
        scripts = {script for script, _ in recorder.calls}
        assert len(scripts) >= 8, "every kind of script was called"
        for script, called in recorder.calls:
            slots = {key_slot(k.encode()) for k in called}
            if shards > 1:
                assert len(slots) == 1, (script, called)
                if script is not store._claim:  # claim runs in every shard
                    assert all(f"{{caas:gw:{shard_of(vin, shards)}}}" in k for k in called)
            else:
                assert all(k.startswith("caas:gw:") or k == "caas:events" for k in called)


def test_reindex_keys_of_one_activation_are_in_its_shard() -> None:
    keys = Keys("caas:gw", "caas:events", CLUSTER_SHARDS)
    for vin in VINS[:20]:
        k = keys.of_vin(vin)
        act = Activation("a1", vin, "f1", Action.ACTIVATE, POLICY, 1.0, 1.0)
        names = [k.activation("a1"), *index_keys(k, act), *possible_index_keys(k, act)]
        assert len({key_slot(n.encode()) for n in names}) == 1


# ------------------------------------------------------------ the list merge


def entry(ms: int, name: str) -> str:
    return f"{ms:013d}|{name}"


def pages_of(
    shards: list[list[str]], limit: int, reverse: bool, after: str = ""
) -> list[ShardPage]:
    """What each shard's LIST returns from cursor ``after``: its next ``limit``."""
    out = []
    for entries in shards:
        ordered = sorted(entries, reverse=reverse)
        rest = [e for e in ordered if not after or (e < after if reverse else e > after)]
        page = rest[:limit]
        out.append(ShardPage(page[-1] if len(rest) > limit else "", len(entries), page))
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_merged_pages_walk_every_entry_once_in_order(reverse: bool, limit: int) -> None:
    shards = [[entry(ms, f"s{s}-{ms}") for ms in range(s, 40, 1 + s)] for s in range(4)]
    shards.append([])
    expected = sorted((e for entries in shards for e in entries), reverse=reverse)
    seen: list[str] = []
    after = ""
    while True:
        merged = merge_pages(pages_of(shards, limit, reverse, after), limit, reverse)
        assert merged.total == len(expected)
        assert len(merged.entries) <= limit
        seen += [e for _, e in merged.entries]
        for shard, e in merged.entries:
            assert e in shards[shard]
        if not merged.after:
            break
        after = merged.after
    assert seen == expected


def test_merge_of_an_exact_page_has_no_next() -> None:
    shards = [[entry(1, "a")], [entry(2, "b")]]
    merged = merge_pages(pages_of(shards, 2, False), 2, False)
    assert [e for _, e in merged.entries] == [entry(1, "a"), entry(2, "b")]
    assert merged.after == ""
