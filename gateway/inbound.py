"""What a worker does with each message from the shared subscriptions.

responses  validate; match by command_id in Redis (any worker sent it), update the
           twin (state, freshness, RTT) and load the activation, in one script; then
           feed the activation's machine, or hand a live query's answer to the API
           worker waiting on it
state      validate, store in the twin if newer (seq), wake waiting activations,
           reconcile active features
presence   store if newer, wake waiting activations (event ``vehicle.presence``
           on a change)

Invalid messages are counted and dropped: the activation then runs into its ack
timeout and the status query, never a crash.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from gateway.activation import Action, State
from gateway.dispatcher import Inbound
from gateway.engine import Engine
from gateway.errors import ActivationNotFound
from gateway.events import Reply
from gateway.metrics import GatewayMetrics
from gateway.reconcile import Reconciler
from gateway.store import Store
from gateway.twin import parse_presence, parse_state
from protocol.codec import loads_object
from protocol.models import Response
from protocol.timeutil import parse_ts

log = logging.getLogger(__name__)


class InboundHandler:
    def __init__(
        self, store: Store, engine: Engine, reconciler: Reconciler, metrics: GatewayMetrics
    ) -> None:
        self.store = store
        self.engine = engine
        self.reconciler = reconciler
        self.metrics = metrics

    async def handle(self, item: Inbound) -> None:
        if item.leaf == "responses":
            await self.on_response(item)
        elif item.leaf == "state":
            await self.on_state(item)
        elif item.leaf == "presence":
            await self.on_presence(item)

    async def on_state(self, item: Inbound) -> None:
        update = parse_state(item.vin, item.payload)
        if update is None:
            self.metrics.twin_updates.labels("state", "invalid").inc()
            log.warning("twin.invalid_state vin=%s bytes=%d", item.vin, len(item.payload))
            return
        self.metrics.twin_age.observe(max(0.0, item.recv_at - update.at))
        _, state_changed = await self.store.update_twin(
            item.vin, "state", vehicle_at=update.at, recv_at=item.recv_at, state=update.body
        )
        self.metrics.twin_updates.labels("state", "stored" if state_changed else "old").inc()
        if state_changed:
            await self.reconciler.check(item.vin, update.body)

    async def on_presence(self, item: Inbound) -> None:
        update = parse_presence(item.vin, item.payload)
        if update is None:
            self.metrics.twin_updates.labels("presence", "invalid").inc()
            return
        changed, _ = await self.store.update_twin(
            item.vin, "presence", vehicle_at=update.at, recv_at=item.recv_at, presence=update.body
        )
        self.metrics.twin_updates.labels("presence", "stored" if changed else "old").inc()

    async def on_response(self, item: Inbound) -> None:
        response = self._parse_response(item)
        if response is None:
            return
        body, parsed = response
        state = parsed.state.model_dump(mode="json") if parsed.state else None
        matched = await self.store.respond(
            item.vin, parsed.command_id, vehicle_at=parse_ts(parsed.at), recv_at=item.recv_at,
            state=state,
        )  # fmt: skip
        if matched is None:
            self.metrics.responses.labels("unknown").inc()
            log.info("response.unknown vin=%s command_id=%s", item.vin, parsed.command_id)
            return
        info = matched.info
        rtt_s = max(0.0, item.recv_at - info.sent_at)
        self.metrics.rtt.labels(info.type).observe(rtt_s)
        if not info.activation_id:
            self.metrics.responses.labels("query").inc()
            await self.store.push_reply(parsed.command_id, body)
            await self.reconciler.check(item.vin, state)
            return
        self.metrics.responses.labels("matched").inc()
        reply = Reply(
            command_id=parsed.command_id,
            status=parsed.status.value,
            reason=parsed.reason.value if parsed.reason else None,
            retry_after_s=parsed.retry_after_s,
            state=state,
            diagnostics=parsed.diagnostics.model_dump(mode="json") if parsed.diagnostics else None,
            rtt_s=rtt_s,
        )
        try:
            act = await self.engine.handle(info.activation_id, reply, matched.snapshot)
        except ActivationNotFound:
            return
        if act.terminal and not (act.state is State.SUCCEEDED and act.action is Action.ACTIVATE):
            await self.reconciler.check(item.vin, state)

    def _parse_response(self, item: Inbound) -> tuple[dict[str, Any], Response] | None:
        try:
            body = loads_object(item.payload)
            parsed = Response.model_validate(body)
        except (ValueError, ValidationError) as exc:
            self.metrics.responses.labels("malformed").inc()
            log.warning("response.malformed vin=%s error=%s", item.vin, type(exc).__name__)
            return None
        correlation = item.correlation
        if parsed.vin != item.vin or (
            correlation is not None and correlation != parsed.command_id.encode()
        ):
            self.metrics.responses.labels("malformed").inc()
            log.warning("response.mismatch vin=%s command_id=%s", item.vin, parsed.command_id)
            return None
        if parsed.state is not None and parsed.state.vin != item.vin:
            self.metrics.responses.labels("malformed").inc()
            return None
        return body, parsed
