"""Redis persistence of the gateway (layout in ``keys``; scripts in ``lua``).

Every state change of an activation is one Lua script: compare-and-set on the
activation's ``version`` (and on the vehicle lock holder and twin revision the
decision was based on), write the new record, move its timer, take or free the
vehicle lock, wake waiters, index the commands it sends, and XADD its events to the
stream. So a transition and its events land together or not at all, exactly once.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

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
    Plan,
    activation_id_of,
    index_keys,
    index_moves,
    member,
    possible_index_keys,
)
from gateway.pipelining import AutoPipeline
from gateway.trimming import GroupMark, StreamId, format_id, parse_id
from gateway.twin import Twin
from protocol.timeutil import format_ts


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
    act = Activation.from_record(json.loads(doc))
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
        dumps(act.to_record()),
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
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._load = client.register_script(lua.LOAD)
        self._create = client.register_script(lua.CREATE)
        self._commit = client.register_script(lua.COMMIT)
        self._claim = client.register_script(lua.CLAIM)
        self._release = client.register_script(lua.RELEASE)
        self._twin = client.register_script(lua.TWIN)
        self._respond = client.register_script(lua.RESPOND)
        self._list = client.register_script(lua.LIST)
        self._reindex = client.register_script(lua.REINDEX)
        self._exporter_hold = client.register_script(lua.EXPORTER_HOLD)
        self._exporter_release = client.register_script(lua.EXPORTER_RELEASE)
        self.pipeline = AutoPipeline(client)

    # ------------------------------------------------------------ activations
    async def load(self, activation_id: str) -> Snapshot | None:
        raw = await self.pipeline.run(
            self._load, keys=[self.keys.activation(activation_id)], args=[self.keys.prefix]
        )
        return snapshot_of(*raw) if raw else None

    async def get(self, activation_id: str) -> Activation | None:
        doc = await self.redis.hget(self.keys.activation(activation_id), "doc")
        return Activation.from_record(json.loads(doc)) if doc else None

    async def create(
        self,
        act: Activation,
        request_hash: str,
        events: list[Emit],
        now: float,
        guard_feature: str = "",
        timer_at: float | None = None,
    ) -> Created:
        """Store a new activation; its timer fires at ``timer_at`` (default: when due)."""
        k = self.keys
        due_ms = ms(act.due_at or now)
        flat = [f for e in events for f in event_fields(e, now, act.origin)]
        result = await self.pipeline.run(
            self._create,
            keys=[
                k.activation(act.activation_id),
                k.timers,
                k.events,
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
                dumps(act.to_record()),
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
            stored = Activation.from_record(json.loads(result[2]))
            return Created(False, stored, result[1])
        if result[0] in ("skip", "limited"):
            return Created(False, None, request_hash, skipped=True, limited=result[0] == "limited")
        snap = Snapshot(act, "1", result[1] or None, twin_of(act.vin, result[2]))
        return Created(True, None, request_hash, snapshot=snap)

    async def commit(self, snap: Snapshot, step: Step, now: float) -> bool:
        """Apply ``step`` if nothing it was based on changed meanwhile; False otherwise."""
        act, k = step.activation, self.keys
        keys = [k.activation(act.activation_id), k.timers, k.leases, k.events, k.states]
        keys += k.vehicle_keys(act.vin)
        leave, join = index_moves(k, snap.activation, act)
        keys += leave + join
        args = commit_args(snap, step, now, len(leave))
        result = await self.pipeline.run(self._commit, keys=keys, args=args)
        return bool(result[0] == "ok")

    # ------------------------------------------------------------ timers
    async def claim(self, now: float, lease_s: float, limit: int) -> tuple[list[str], int]:
        lease_until = ms(now + lease_s)
        ids = await self.pipeline.run(
            self._claim,
            keys=[self.keys.timers, self.keys.leases],
            args=[ms(now), lease_until, limit],
        )
        return [str(i) for i in ids], lease_until

    async def release(self, activation_id: str, lease_ms: int, retry_at: float | None) -> None:
        await self.pipeline.run(
            self._release,
            keys=[self.keys.activation(activation_id), self.keys.timers, self.keys.leases],
            args=[activation_id, lease_ms, "" if retry_at is None else ms(retry_at)],
        )

    async def aclose(self) -> None:
        await self.pipeline.aclose()

    async def next_due(self) -> float | None:
        first = await self.redis.zrange(self.keys.timers, 0, 0, withscores=True)
        return float(first[0][1]) / 1000 if first else None

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
        k = self.keys
        online = bool(presence and presence.online)
        vehicle_at = presence.at if presence else state.at if state else recv_at
        event_data = dumps({"vin": vin, "online": online, "at": format_ts(vehicle_at)})
        changed, state_changed = await self.pipeline.run(
            self._twin,
            keys=[k.twin(vin), k.waiting(vin), k.timers, k.events],
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
        k = self.keys
        keys = [k.commands(vin), k.twin(vin), k.waiting(vin), k.timers, k.events]
        state = response.state
        raw = await self.pipeline.run(
            self._respond,
            keys=keys,
            args=[
                response.command_id,
                k.prefix,
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
        snapshot = snapshot_of(*raw[2:]) if len(raw) > 2 else None
        return Matched(info, snapshot, newest_state=bool(raw[1]))

    async def register_query(
        self, vin: str, command_id: str, ctype: str, now: float, reply_to: str
    ) -> None:
        """Index a live query's command so that whichever worker gets the answer knows
        which worker waits for it."""
        key = self.keys.commands(vin)
        info = {"act": "", "type": ctype, "sent_ms": ms(now), "to": reply_to}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, command_id, dumps(info))
            pipe.pexpire(key, COMMAND_INDEX_TTL_MS)
            await pipe.execute()

    async def push_answer(self, worker: str, command_id: str, body: dict[str, Any]) -> None:
        """Hand a live query's answer to the worker waiting for it (its inbox list)."""
        key = self.keys.inbox(worker)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, dumps({"command_id": command_id, "body": body}))
            pipe.expire(key, REPLY_TTL_S)
            await pipe.execute()

    # ------------------------------------------------------------ the list
    async def list_page(self, plan: Plan) -> Page:
        """One page: ``lua.LIST`` picks the entries, then one pipelined read of their
        records (at most ``plan.limit``; an entry whose record is gone is skipped)."""
        flag = {True: "1", False: "0"}
        raw = await self._list(
            keys=list(plan.sets),
            args=[plan.page_from, plan.page_to, plan.limit, flag[plan.reverse],
                  plan.count_min, plan.count_max],
        )  # fmt: skip
        after, total, entries = str(raw[0]), int(raw[1]), [str(e) for e in raw[2:]]
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hget(self.keys.activation(activation_id_of(entry)), "doc")
            docs = await pipe.execute()
        found = [Activation.from_record(json.loads(doc)) for doc in docs if doc]
        return Page(found, after, total)

    async def reindex(self) -> int:
        """Put every stored activation in exactly the list indexes it belongs in: those
        stored before the indexes existed are then listed, and entries a worker without
        them left behind are removed. Safe while workers run (each one is indexed as it
        stands, by ``lua.REINDEX``); one SCAN of the keyspace and about a hundred set
        writes per activation. Returns how many were indexed."""
        indexed = 0
        async for found in self.redis.scan_iter(match=f"{self.keys.prefix}:act:*", count=500):
            key = str(found)
            while True:
                doc, version = await self.redis.hmget(key, ["doc", "version"])
                if not doc:
                    break
                act = Activation.from_record(json.loads(doc))
                belongs = index_keys(self.keys, act)
                others = possible_index_keys(self.keys, act) - belongs
                keys = [key, *sorted(belongs), *sorted(others)]
                args: list[str | int] = [str(version), member(act), len(belongs)]
                if await self._reindex(keys=keys, args=args):
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

    # ------------------------------------------------------------ gauges
    async def hold_exporter(self, worker_id: str, lease_s: float) -> bool:
        """Take or renew the lease of the worker that exports the Redis gauges."""
        held = await self._exporter_hold(
            keys=[self.keys.exporter], args=[worker_id, max(1, ms(lease_s))]
        )
        return bool(held)

    async def release_exporter(self, worker_id: str) -> None:
        await self._exporter_release(keys=[self.keys.exporter], args=[worker_id])

    async def gauges(self) -> tuple[dict[str, int], int, int]:
        """(activations per state, scheduled timers, leased timers)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.states)
            pipe.zcard(self.keys.timers)
            pipe.zcard(self.keys.leases)
            states, timers, leases = await pipe.execute()
        return {k: int(v) for k, v in states.items()}, int(timers), int(leases)
