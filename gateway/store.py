"""Redis persistence of the gateway (layout in ``keys``; scripts in ``lua``).

Every state change of an activation is one Lua script: compare-and-set on the
activation's ``version`` (and on the vehicle lock holder and twin revision the
decision was based on), write the new record, move its timer, take or free the
vehicle lock, wake waiters, index the commands it sends, and XADD its events to the
stream. So a transition and its events land together or not at all, exactly once.

On a Redis Cluster (``Keys.cluster``) an activation lives in its vehicle's shard
(``keys.shard_of``), the scripts write events to the shard's outbox (``forwarder``
copies them to the events stream), the shard-wide structures are read shard by shard,
and a new activation is acknowledged only once a replica has it (``replicated``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from gateway import lua
from gateway.activation import Action, Activation, State
from gateway.events import Emit, Step
from gateway.intake import PresenceIn, ResponseIn, StateIn
from gateway.keys import (
    COMMAND_INDEX_TTL_MS,
    LOCK_MARGIN_MS,
    RECONCILE_PER_WINDOW,
    RECONCILE_WINDOW_MS,
    REPLY_TTL_S,
    Keys,
)
from gateway.listing import (
    ListQuery,
    Plan,
    ShardPage,
    activation_id_of,
    index_keys,
    index_moves,
    member,
    merge_pages,
    plan,
    possible_index_keys,
)
from gateway.pipelining import AutoPipeline
from gateway.trimming import GroupMark, StreamId, after, format_id, parse_id
from gateway.twin import Twin
from protocol.redis_connect import AnyRedis
from protocol.timeutil import format_ts

log = logging.getLogger(__name__)
# cluster mode: how long an acknowledgement waits for a replica to have the write
REPLICA_WAIT_MS = 500
HOMES_CACHED = 100_000  # activation id → shard, remembered (a home never changes)
StreamEntry = tuple[str, dict[str, str]]


def ms(epoch_s: float) -> int:
    return math.floor(epoch_s * 1000)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    activation: Activation
    version: str
    lock_holder: str | None
    twin: Twin | None


@dataclass(frozen=True, slots=True)
class Created:
    created: bool
    activation: Activation | None  # the stored one when it already existed
    request_hash: str = ""
    skipped: bool = False  # reconciliation guard: nothing to do
    limited: bool = False  # reconciliation guard: the vehicle's rate limit is reached
    snapshot: Snapshot | None = None  # the new activation as ``load`` would return it


@dataclass(frozen=True, slots=True)
class CommandInfo:
    activation_id: str  # "" for a live API query
    type: str
    sent_at: float
    reply_to: str = ""  # a live query: the worker waiting for the answer

    @classmethod
    def from_json(cls, raw: str) -> CommandInfo:
        info = json.loads(raw)
        return cls(info["act"], info["type"], int(info["sent_ms"]) / 1000, info.get("to", ""))


@dataclass(frozen=True, slots=True)
class Matched:
    """A response matched to the command it answers (``Store.respond``)."""

    info: CommandInfo
    snapshot: Snapshot | None  # the activation it belongs to; None for a live query
    newest_state: bool = False  # the answer's state is now the twin's (reconcile on it)


def twin_of(vin: str, flat: list[str]) -> Twin | None:
    """The twin from a flat HGETALL reply inside a script's result."""
    return Twin.from_hash(vin, dict(zip(flat[::2], flat[1::2], strict=True)))


def snapshot_of(doc: str, version: Any, lock: str, twin_flat: list[str]) -> Snapshot:
    """A ``Snapshot`` from what ``LOAD`` and ``RESPOND`` return."""
    act = Activation.from_doc(doc)
    return Snapshot(act, str(version), lock or None, twin_of(act.vin, twin_flat))


def event_fields(event: Emit, now: float, origin: str) -> list[str]:
    data = {**event.data, "origin": origin}
    return [str(uuid.uuid4()), event.type, format_ts(now), dumps(data)]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the activation list: the activations, the entry to continue after
    ("" on the last page) and how many match the filters."""

    activations: list[Activation]
    after: str
    total: int


def commit_args(snap: Snapshot, step: Step, now: float, leaving: int) -> list[Any]:
    """ARGV of ``lua.COMMIT`` (documented there, in this order); ``leaving``: how many
    of the script's index KEYS the activation leaves."""
    act = step.activation
    policy = act.policy
    hold_ms = ms(2 * (policy.ack_timeout_s + policy.status_query_timeout_s)) + LOCK_MARGIN_MS
    desired = ""
    if act.state is State.SUCCEEDED:
        desired = "set" if act.action is Action.ACTIVATE else "del"
    cmds: list[Any] = []
    for send in step.sends:
        info = {"act": act.activation_id, "type": send.type.value, "sent_ms": ms(now)}
        cmds += [send.command_id, dumps(info)]
    events = [f for e in step.events for f in event_fields(e, now, act.origin)]
    flag = {True: "1", False: "0"}
    return [
        act.activation_id,
        snap.version,
        snap.lock_holder or "",
        str(snap.twin.rev) if snap.twin else "0",
        act.to_doc(),
        act.state.value,
        snap.activation.state.value,
        "" if act.due_at is None else ms(act.due_at),
        flag[act.holds_lock],
        hold_ms,
        flag[act.waiting],
        flag[act.terminal],
        f"{act.feature}|{act.activation_id}",
        desired,
        act.feature,
        ms(now),
        COMMAND_INDEX_TTL_MS,
        member(act),
        leaving,
        len(step.sends),
        *cmds,
        len(step.events),
        *events,
    ]


class Store:
    def __init__(self, client: AnyRedis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        # cluster mode: called with a shard whose outbox a script just wrote to
        self.events_written: Callable[[int], None] | None = None
        self.unreplicated = 0  # acknowledgements no replica confirmed in time
        self._homes: dict[str, int] = {}
        self._load = client.register_script(lua.LOAD)
        self._create = client.register_script(lua.CREATE)
        self._commit = client.register_script(lua.COMMIT)
        self._claim = client.register_script(lua.CLAIM)
        self._release = client.register_script(lua.RELEASE)
        self._twin = client.register_script(lua.TWIN)
        self._respond = client.register_script(lua.RESPOND)
        self._list = client.register_script(lua.LIST)
        self._reindex = client.register_script(lua.REINDEX)
        self._hold = client.register_script(lua.LEASE_HOLD)
        self._let_go = client.register_script(lua.LEASE_RELEASE)
        self._forwarded = client.register_script(lua.FORWARDED)
        self._register = client.register_script(lua.REGISTER)
        self.pipeline = AutoPipeline(client)

    # ------------------------------------------------------------ shards
    def _remember(self, activation_id: str, shard: int) -> None:
        if len(self._homes) >= HOMES_CACHED:
            self._homes.clear()
        self._homes[activation_id] = shard

    async def shard_keys(self, activation_id: str) -> Keys | None:
        """The keys of the activation's shard; None: it has no home (no such activation).
        Standalone: the one shard, no I/O. Cluster: its home, remembered."""
        if not self.keys.cluster:
            return self.keys
        shard = self._homes.get(activation_id)
        if shard is None:
            raw = await self.redis.get(self.keys.home(activation_id))
            if raw is None:
                return None
            shard = int(raw)
            self._remember(activation_id, shard)
        return self.keys.in_shard(shard)

    async def _take_home(self, activation_id: str, shard: int) -> int:
        """Write the activation's home unless it has one, and wait for a replica to have
        it (the home is in another slot than the activation: a failover must not lose
        it while keeping the activation); the home it has."""
        key = self.keys.home(activation_id)
        (written,), _ = await self._then_wait(key, lambda pipe: pipe.set(key, shard, nx=True))
        home = shard if written else int(await self.redis.get(key) or shard)
        self._remember(activation_id, home)
        return home

    async def replicated(self, k: Keys) -> bool:
        """Cluster mode: wait until a replica of the shard's master has every write made
        to it so far (a write then ``WAIT`` on one connection: ``WAIT`` counts the
        replicas that acknowledged the connection's own last write, and the replication
        stream is in order). False when none did within ``REPLICA_WAIT_MS``."""
        _, confirmed = await self._then_wait(k.synced, lambda pipe: pipe.set(k.synced, "1"))
        return confirmed

    async def _then_wait(self, key: str, write: Callable[[Any], Any]) -> tuple[list[Any], bool]:
        """``write``'s commands (all on ``key``'s node), then ``WAIT`` for one replica on
        the same connection, so it counts those writes; (their replies, whether a
        replica confirmed them in time). An unconfirmed write is counted and logged, not
        refused."""
        async with self.redis.pipeline(transaction=False) as pipe:
            write(pipe)
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS, target_nodes=self._node_of(key))
            *replies, acked = await pipe.execute()
        if int(acked) < 1:
            self.unreplicated += 1
            log.warning("redis.unreplicated key=%s", key)
            return replies, False
        return replies, True

    def _node_of(self, key: str) -> Any:
        """The cluster node serving ``key`` (cluster mode only)."""
        assert isinstance(self.redis, RedisCluster)
        return self.redis.get_node_from_key(key)

    def _wrote_events(self, k: Keys) -> None:
        if k.cluster and self.events_written is not None:
            self.events_written(k.shard)

    # ------------------------------------------------------------ activations
    async def load(self, activation_id: str) -> Snapshot | None:
        k = await self.shard_keys(activation_id)
        if k is None:
            return None
        raw = await self.pipeline.run(self._load, keys=[k.activation(activation_id)], args=[k.base])
        return snapshot_of(*raw) if raw else None

    async def get(self, activation_id: str) -> Activation | None:
        k = await self.shard_keys(activation_id)
        if k is None:
            return None
        doc = await self.redis.hget(k.activation(activation_id), "doc")
        return Activation.from_doc(doc) if doc else None

    async def create(
        self,
        act: Activation,
        request_hash: str,
        events: list[Emit],
        now: float,
        guard_feature: str = "",
        timer_at: float | None = None,
    ) -> Created:
        """Store a new activation; its timer fires at ``timer_at`` (default: when due).
        Cluster mode: its home first (a crash before CREATE leaves a home that the
        retried request finds), and the answer only once a replica has it."""
        k = self.keys.of_vin(act.vin)
        if k.cluster and await self._take_home(act.activation_id, k.shard) != k.shard:
            # the id is already another vehicle's: never the same request
            return Created(False, await self.get(act.activation_id), "")
        due_ms = ms(act.due_at or now)
        flat = [f for e in events for f in event_fields(e, now, act.origin)]
        result = await self.pipeline.run(
            self._create,
            keys=[
                k.activation(act.activation_id),
                k.timers,
                k.outbox,
                k.states,
                k.open(act.vin),
                k.desired(act.vin),
                k.twin(act.vin),
                k.lock(act.vin),
                k.reconciled(act.vin),
                *sorted(index_keys(k, act)),
            ],
            args=[
                act.activation_id,
                act.to_doc(),
                act.state.value,
                due_ms,
                request_hash,
                act.vin,
                f"{act.feature}|{act.activation_id}",
                guard_feature,
                ms(now),
                due_ms if timer_at is None else ms(timer_at),
                RECONCILE_PER_WINDOW,
                RECONCILE_WINDOW_MS,
                member(act),
                len(events),
                *flat,
            ],
        )
        if result[0] == "exists":
            stored = Activation.from_doc(result[2])
            return Created(False, stored, result[1])
        if result[0] in ("skip", "limited"):
            return Created(False, None, request_hash, skipped=True, limited=result[0] == "limited")
        snap = Snapshot(act, "1", result[1] or None, twin_of(act.vin, result[2]))
        if k.cluster:
            await self.replicated(k)
            self._wrote_events(k)
        return Created(True, None, request_hash, snapshot=snap)

    async def commit(self, snap: Snapshot, step: Step, now: float) -> bool:
        """Apply ``step`` if nothing it was based on changed meanwhile; False otherwise."""
        act = step.activation
        k = self.keys.of_vin(act.vin)
        keys = [k.activation(act.activation_id), k.timers, k.leases, k.outbox, k.states]
        keys += k.vehicle_keys(act.vin)
        leave, join = index_moves(k, snap.activation, act)
        keys += leave + join
        args = commit_args(snap, step, now, len(leave))
        result = await self.pipeline.run(self._commit, keys=keys, args=args)
        if result[0] != "ok":
            return False
        if step.events:
            self._wrote_events(k)
        return True

    # ------------------------------------------------------------ timers
    async def claim(self, now: float, lease_s: float, limit: int) -> tuple[list[str], int, bool]:
        """Lease due timers, about ``limit`` in all (an equal part of each shard, all
        shards in one pipeline); (ids, lease expiry, whether some shard had more due)."""
        lease_until = ms(now + lease_s)
        shards = self.keys.all_shards()
        limit = -(-limit // len(shards))
        per_shard = await asyncio.gather(
            *(
                self.pipeline.run(
                    self._claim, keys=[k.timers, k.leases], args=[ms(now), lease_until, limit]
                )
                for k in shards
            )
        )
        ids: list[str] = []
        for k, claimed in zip(shards, per_shard, strict=True):
            for raw in claimed:
                ids.append(str(raw))
                if k.cluster:
                    self._remember(str(raw), k.shard)
        return ids, lease_until, any(len(c) >= limit for c in per_shard)

    async def release(self, activation_id: str, lease_ms: int, retry_at: float | None) -> None:
        k = await self.shard_keys(activation_id)
        if k is None:  # cannot happen for a claimed id; its lease expires anyway
            return
        await self.pipeline.run(
            self._release,
            keys=[k.activation(activation_id), k.timers, k.leases],
            args=[activation_id, lease_ms, "" if retry_at is None else ms(retry_at)],
        )

    async def aclose(self) -> None:
        await self.pipeline.aclose()

    async def next_due(self) -> float | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in self.keys.all_shards():
                pipe.zrange(k.timers, 0, 0, withscores=True)
            firsts = await pipe.execute()
        due = [float(first[0][1]) / 1000 for first in firsts if first]
        return min(due) if due else None

    # ------------------------------------------------------------ twins
    async def update_twin(
        self,
        vin: str,
        *,
        recv_at: float,
        state: StateIn | None = None,
        presence: PresenceIn | None = None,
    ) -> tuple[bool, bool]:
        """Store a state or presence message; wakes activations waiting on the vehicle.
        (changed, new state). Answers to commands go through ``respond``."""
        k = self.keys.of_vin(vin)
        online = bool(presence and presence.online)
        vehicle_at = presence.at if presence else state.at if state else recv_at
        event_data = dumps({"vin": vin, "online": online, "at": format_ts(vehicle_at)})
        changed, state_changed = await self.pipeline.run(
            self._twin,
            keys=[k.twin(vin), k.waiting(vin), k.timers, k.outbox],
            args=[
                "presence" if presence else "state",
                dumps(state.body) if state else "",
                state.seq if state else 0,
                ms(vehicle_at),
                ms(recv_at),
                dumps(presence.body) if presence else "",
                "1" if online else "0",
                "",  # rtt: only answers carry one
                str(uuid.uuid4()),
                format_ts(recv_at),
                event_data,
                ms(state.at) if state else 0,
            ],
        )
        if presence and changed:  # stored: it may have said online/offline (an event)
            self._wrote_events(k)
        return bool(changed), bool(state_changed)

    async def twin(self, vin: str) -> Twin | None:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.twin(vin))  # type: ignore[assignment]
        return Twin.from_hash(vin, raw)

    async def divergence_inputs(self, vin: str) -> tuple[set[str], set[str]]:
        """(features wanted active, features with a non-terminal activation)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.desired(vin))
            pipe.smembers(self.keys.open(vin))
            desired, open_members = await pipe.execute()
        wanted = {f for f, v in desired.items() if v == "active"}
        return wanted, {m.split("|", 1)[0] for m in open_members}

    # ------------------------------------------------------------ commands and replies
    async def respond(self, vin: str, response: ResponseIn, recv_at: float) -> Matched | None:
        """Match an answer to its command, store it in the twin, and load the activation
        it belongs to: one round trip (``lua.RESPOND``). None: not one of our commands."""
        k = self.keys.of_vin(vin)
        keys = [k.commands(vin), k.twin(vin), k.waiting(vin), k.timers, k.outbox]
        state = response.state
        raw = await self.pipeline.run(
            self._respond,
            keys=keys,
            args=[
                response.command_id,
                k.base,
                dumps(state.body) if state else "",
                state.seq if state else 0,
                ms(response.at),
                ms(recv_at),
                f"{recv_at * 1000:.3f}",
                ms(state.at) if state else 0,
            ],
        )
        if not raw:
            return None
        info = CommandInfo.from_json(raw[0])
        if k.cluster and info.activation_id:
            self._remember(info.activation_id, k.shard)
        snapshot = snapshot_of(*raw[2:]) if len(raw) > 2 else None
        return Matched(info, snapshot, newest_state=bool(raw[1]))

    async def register_query(
        self, vin: str, command_id: str, ctype: str, now: float, reply_to: str
    ) -> None:
        """Index a live query's command so that whichever worker gets the answer knows
        which worker waits for it."""
        info = {"act": "", "type": ctype, "sent_ms": ms(now), "to": reply_to}
        await self.pipeline.run(
            self._register,
            keys=[self.keys.commands(vin)],
            args=[command_id, dumps(info), COMMAND_INDEX_TTL_MS],
        )

    async def push_answer(self, worker: str, command_id: str, body: dict[str, Any]) -> None:
        """Hand a live query's answer to the worker waiting for it (its inbox list)."""
        key = self.keys.inbox(worker)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, dumps({"command_id": command_id, "body": body}))
            pipe.expire(key, REPLY_TTL_S)
            await pipe.execute()

    # ------------------------------------------------------------ the list
    async def list_page(self, query: ListQuery) -> Page:
        """One page: ``lua.LIST`` picks the entries in each shard (only the vehicle's
        with a ``vin`` filter), ``listing.merge_pages`` the page among them, then one
        pipelined read of their records (at most ``query.limit``; an entry whose record
        is gone is skipped)."""
        shards = [self.keys.of_vin(query.vin)] if query.vin else self.keys.all_shards()
        pages = await asyncio.gather(*(self._shard_page(k, plan(k, query)) for k in shards))
        merged = merge_pages(pages, query.limit, query.order == "desc")
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, entry in merged.entries:
                k = shards[shard]
                pipe.hget(k.activation(activation_id_of(entry)), "doc")
            docs = await pipe.execute()
        found = [Activation.from_doc(doc) for doc in docs if doc]
        return Page(found, merged.after, merged.total)

    async def _shard_page(self, k: Keys, plan: Plan) -> ShardPage:
        flag = {True: "1", False: "0"}
        raw = await self.pipeline.run(
            self._list,
            keys=list(plan.sets),
            args=[plan.page_from, plan.page_to, plan.limit, flag[plan.reverse],
                  plan.count_min, plan.count_max],
        )  # fmt: skip
        return ShardPage(str(raw[0]), int(raw[1]), [str(e) for e in raw[2:]])

    async def reindex(self) -> int:
        """Put every stored activation in exactly the list indexes it belongs in: those
        stored before the indexes existed are then listed, and entries a worker without
        them left behind are removed. Safe while workers run (each one is indexed as it
        stands, by ``lua.REINDEX``); one SCAN of the keyspace and about a hundred set
        writes per activation. Returns how many were indexed."""
        indexed = 0
        async for found in self.redis.scan_iter(match=self.keys.activations_pattern, count=500):
            key = str(found)
            while True:
                doc, version = await self.redis.hmget(key, ["doc", "version"])
                if not doc:
                    break
                act = Activation.from_doc(doc)
                k = self.keys.of_vin(act.vin)
                belongs = index_keys(k, act)
                others = possible_index_keys(k, act) - belongs
                keys = [key, *sorted(belongs), *sorted(others)]
                args: list[str | int] = [str(version), member(act), len(belongs)]
                if await self.pipeline.run(self._reindex, keys=keys, args=args):
                    indexed += 1
                    break
        return indexed

    # ------------------------------------------------------------ events stream
    async def event_groups(self) -> list[GroupMark]:
        """Every consumer group of the events stream: its last delivered id and its
        oldest pending (delivered, unacknowledged) id."""
        stream = self.keys.events
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
        except redis.exceptions.ResponseError:  # no stream yet: no groups
            return []
        marks = []
        for group in groups:
            oldest = None
            if int(group["pending"]):
                summary = await self.redis.xpending(stream, group["name"])
                oldest = parse_id(summary["min"]) if summary.get("min") else None
            last = parse_id(str(group["last-delivered-id"]))
            marks.append(GroupMark(str(group["name"]), last, oldest))
        return marks

    async def trim_events(self, floor: StreamId) -> int:
        """Remove the entries below ``floor`` (exactly: ``~`` would keep whole nodes)."""
        events = self.keys.events
        return int(await self.redis.xtrim(events, minid=format_id(floor), approximate=False))

    # ------------------------------------------------------------ cluster: the outboxes
    async def outbox_cursor(self, k: Keys) -> str:
        """The id of the last entry of the shard's outbox copied to the events stream."""
        return str(await self.redis.get(k.forwarded) or "0-0")

    async def outbox_entries(self, shards: list[Keys], cursors: list[str], count: int
                             ) -> list[list[StreamEntry]]:  # fmt: skip
        """Each shard's outbox entries after its cursor (at most ``count``)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, cursor in zip(shards, cursors, strict=True):
                pipe.xrange(k.outbox, f"({cursor}", "+", count=count)
            return list(await pipe.execute())

    async def publish(self, entries: list[StreamEntry]) -> bool:
        """Append ``entries``' fields, in order, to the events stream, and wait for a
        replica of its master to have them; False when none did in time."""
        stream = self.keys.events

        def append(pipe: Any) -> None:
            for _, fields in entries:
                pipe.xadd(stream, fields)

        _, confirmed = await self._then_wait(stream, append)
        return confirmed

    async def forwarded(self, k: Keys, cursor: str, last: str) -> bool:
        """Move the shard's cursor from ``cursor`` to ``last`` and trim the outbox up to
        it; False (nothing done) when the cursor was not ``cursor`` any more."""
        moved = await self.pipeline.run(
            self._forwarded,
            keys=[k.forwarded, k.outbox],
            args=[cursor, last, format_id(after(parse_id(last)))],
        )
        return bool(moved)

    # ------------------------------------------------------------ leases
    async def hold_lease(self, key: str, worker_id: str, lease_s: float) -> bool:
        """Take or renew a lease (``key`` = the holder's id, PX)."""
        held = await self.pipeline.run(
            self._hold, keys=[key], args=[worker_id, max(1, ms(lease_s))]
        )
        return bool(held)

    async def release_lease(self, key: str, worker_id: str) -> None:
        await self.pipeline.run(self._let_go, keys=[key], args=[worker_id])

    async def hold_exporter(self, worker_id: str, lease_s: float) -> bool:
        """Take or renew the lease of the worker that exports the Redis gauges."""
        return await self.hold_lease(self.keys.exporter, worker_id, lease_s)

    async def release_exporter(self, worker_id: str) -> None:
        await self.release_lease(self.keys.exporter, worker_id)

    # ------------------------------------------------------------ gauges
    async def gauges(self) -> tuple[dict[str, int], int, int]:
        """(activations per state, scheduled timers, leased timers), summed over shards."""
        shards = self.keys.all_shards()
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in shards:
                pipe.hgetall(k.states)
                pipe.zcard(k.timers)
                pipe.zcard(k.leases)
            replies = await pipe.execute()
        states: dict[str, int] = {}
        timers = leases = 0
        for i in range(len(shards)):
            counts, scheduled, leased = replies[3 * i : 3 * i + 3]
            for state, n in counts.items():
                states[state] = states.get(state, 0) + int(n)
            timers += int(scheduled)
            leases += int(leased)
        return states, timers, leases
