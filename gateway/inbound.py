"""What a worker does with each message from the shared subscriptions.

responses  accept (``intake``); match by command_id in Redis (any worker sent it),
           update the twin (state, freshness, RTT) and load the activation, in one
           script; then feed the activation's machine, or hand a live query's answer
           to the worker waiting on it
state      accept, store in the twin if newer, wake waiting activations, reconcile
presence   accept, store if newer, wake waiting activations (event
           ``vehicle.presence`` on a change)

A refused message is counted by leaf and reason and dropped: an activation waiting on
it runs into its ack timeout and the status query, never a crash. Reconciliation only
ever looks at the newest state the gateway knows of the vehicle (the one the twin
just stored): a late answer carrying an older state says nothing about now.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import intake
from gateway.activation import Action, State
from gateway.backlog import Inbound
from gateway.engine import Engine
from gateway.errors import ActivationNotFound
from gateway.events import Reply
from gateway.metrics import GatewayMetrics
from gateway.reconcile import Reconciler
from gateway.rejections import Rejections
from gateway.store import Store
from protocol.errors import PayloadRejected

log = logging.getLogger(__name__)

QueryAnswer = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class InboundHandler:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        reconciler: Reconciler,
        metrics: GatewayMetrics,
        rejections: Rejections,
        answer_query: QueryAnswer,
    ) -> None:
        self.store = store
        self.engine = engine
        self.reconciler = reconciler
        self.metrics = metrics
        self.rejections = rejections
        self.answer_query = answer_query  # (command_id, reply_to, body) of a live query

    async def handle(self, item: Inbound) -> None:
        try:
            if item.leaf == "responses":
                await self.on_response(item)
            elif item.leaf == "state":
                await self.on_state(item)
            elif item.leaf == "presence":
                await self.on_presence(item)
        except PayloadRejected as exc:
            self.rejections.count(item.leaf, item.vin, exc)

    async def on_state(self, item: Inbound) -> None:
        state = intake.read_state(item.vin, item.payload, item.recv_at)
        self.metrics.twin_age.observe(max(0.0, item.recv_at - state.at))
        _, state_changed = await self.store.update_twin(item.vin, recv_at=item.recv_at, state=state)
        self.metrics.twin_updates.labels("state", "stored" if state_changed else "old").inc()
        if state_changed:
            await self.reconciler.check(item.vin, state.body)

    async def on_presence(self, item: Inbound) -> None:
        presence = intake.read_presence(item.vin, item.payload, item.recv_at)
        changed, _ = await self.store.update_twin(item.vin, recv_at=item.recv_at, presence=presence)
        self.metrics.twin_updates.labels("presence", "stored" if changed else "old").inc()

    async def on_response(self, item: Inbound) -> None:
        response = intake.read_response(item.vin, item.payload, item.correlation, item.recv_at)
        matched = await self.store.respond(item.vin, response, item.recv_at)
        if matched is None:
            self.metrics.responses.labels("unknown").inc()
            log.info("response.unknown vin=%s command_id=%s", item.vin, response.command_id)
            return
        info = matched.info
        rtt_s = max(0.0, item.recv_at - info.sent_at)
        self.metrics.rtt.labels(info.type).observe(rtt_s)
        newest = response.state.body if response.state and matched.newest_state else None
        if not info.activation_id:
            self.metrics.responses.labels("query").inc()
            await self.answer_query(response.command_id, info.reply_to, response.body())
            await self.reconciler.check(item.vin, newest)
            return
        self.metrics.responses.labels("matched").inc()
        reply = Reply(
            command_id=response.command_id,
            status=response.status,
            reason=response.reason,
            retry_after_s=response.retry_after_s,
            state=response.state.body if response.state else None,
            diagnostics=response.diagnostics,
            rtt_s=rtt_s,
        )
        try:
            act = await self.engine.handle(info.activation_id, reply, matched.snapshot)
        except ActivationNotFound:
            return
        if act.terminal and not (act.state is State.SUCCEEDED and act.action is Action.ACTIVATE):
            await self.reconciler.check(item.vin, newest)
