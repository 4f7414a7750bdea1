"""Load → machine → atomic commit → send, retried when another worker got there first.

Any worker can run any activation: the record, its timer and the vehicle's command
slot live in Redis, and a commit only lands if nothing it was decided on changed
(optimistic concurrency on the activation version, lock holder and twin revision).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from gateway.activation import Action, Activation
from gateway.errors import (
    ActivationConflict,
    ActivationNotFound,
    ActivationTerminal,
    TransitionConflict,
)
from gateway.events import Cancel, Emit, Event, Send, Step, Tick, VehicleView
from gateway.machine import step
from gateway.policy import RetryPolicy
from gateway.store import Snapshot, Store, dumps
from protocol.timeutil import Clock

log = logging.getLogger(__name__)
MAX_TRIES = 25
# A new activation's first step runs at once in the worker that accepted it (the CREATE
# script returns what it needs); its timer is only the safety net, due this much later
# in case that worker dies first.
FIRST_STEP_GRACE_S = 2.0


class CommandSender(Protocol):
    async def send_command(self, act: Activation, send: Send) -> None: ...


class StepObserver(Protocol):
    def on_step(self, before: Activation, step: Step, now: float) -> None: ...

    def on_conflict(self) -> None: ...


class Wakeable(Protocol):
    def wake(self) -> None: ...


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(body).encode()).hexdigest()


class Engine:
    def __init__(
        self,
        store: Store,
        sender: CommandSender,
        clock: Clock,
        observer: StepObserver,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.observer = observer
        self.rng = rng or random.SystemRandom()
        self.waker: Wakeable | None = None
        self.after_terminal: Callable[[Activation], Awaitable[None]] | None = None
        self._first_steps: set[asyncio.Task[None]] = set()
        self.send_failures = 0  # sends that raised after their commit (logged, not raised)

    async def create(
        self,
        *,
        activation_id: str,
        vin: str,
        feature: str,
        action: Action,
        policy: RetryPolicy,
        body: dict[str, Any],
    ) -> tuple[Activation, bool]:
        """Store a new activation (due at once); (activation, created). 409 on another body."""
        now = self.clock.now()
        digest = request_hash(body)
        act = Activation(activation_id, vin, feature, action, policy, now, now, due_at=now)
        accepted = Emit(
            "activation.accepted",
            {"activation_id": activation_id, "vin": vin, "feature": feature,
             "action": action.value, "policy": policy.to_dict()},
        )  # fmt: skip
        result = await self.store.create(
            act, digest, [accepted], now, timer_at=now + FIRST_STEP_GRACE_S
        )
        if not result.created or result.snapshot is None:
            if result.request_hash != digest or result.activation is None:
                raise ActivationConflict(activation_id)
            return result.activation, False
        log.info("activation.accepted activation_id=%s feature=%s", activation_id, feature)
        task = asyncio.create_task(self._first_step(result.snapshot), name="first-step")
        self._first_steps.add(task)
        task.add_done_callback(self._first_steps.discard)
        return act, True

    async def _first_step(self, snap: Snapshot) -> None:
        activation_id = snap.activation.activation_id
        try:
            await self.handle(activation_id, Tick(), snap)
        except Exception as exc:  # the timer runs it FIRST_STEP_GRACE_S later
            log.warning("activation.first_step_failed activation_id=%s error=%r",
                        activation_id, exc)  # fmt: skip

    async def aclose(self) -> None:
        """Stop first steps still running (their timers pick them up)."""
        for task in list(self._first_steps):
            task.cancel()
        await asyncio.gather(*self._first_steps, return_exceptions=True)

    async def handle(
        self, activation_id: str, event: Event, snap: Snapshot | None = None
    ) -> Activation:
        """Apply ``event`` to the activation; returns the activation as it now stands.
        ``snap``: the activation as just loaded with something else (first try only)."""
        for _ in range(MAX_TRIES):
            snap = snap or await self.store.load(activation_id)
            if snap is None:
                raise ActivationNotFound(activation_id)
            if isinstance(event, Cancel) and snap.activation.terminal:
                raise ActivationTerminal(activation_id, snap.activation.state.value)
            result = await self._try(snap, event)
            if result is not None:
                return result
            snap = None
            self.observer.on_conflict()
        raise TransitionConflict(activation_id, MAX_TRIES)

    async def _try(self, snap: Snapshot, event: Event) -> Activation | None:
        now = self.clock.now()
        view = VehicleView(snap.twin, snap.lock_holder)
        result = step(snap.activation, replace(event, view=view), now, self.rng)
        if not result.changed:
            return snap.activation
        if not await self.store.commit(snap, result, now):
            return None
        act = result.activation
        self.observer.on_step(snap.activation, result, now)
        _log_step(snap.activation, result)
        for send in result.sends:
            # committed: a failed send must not skip the rest of the step, and the ack
            # timeout and status query recover a lost command (crash-safety point 5)
            try:
                await self.sender.send_command(act, send)
            except Exception as exc:
                self.send_failures += 1
                log.warning(
                    "command.send_failed activation_id=%s type=%s command_id=%s error=%s",
                    act.activation_id,
                    send.type.value,
                    send.command_id,
                    f"{type(exc).__name__}: {exc}",
                )
        if act.terminal and self.after_terminal is not None:
            await self.after_terminal(act)
        if act.due_at is not None and act.due_at <= now + 0.001:
            self._wake()
        return act

    def _wake(self) -> None:
        if self.waker is not None:
            self.waker.wake()


def _log_step(before: Activation, result: Step) -> None:
    act = result.activation
    for event in result.events:
        log.info(
            "%s activation_id=%s state=%s attempt=%d",
            event.type,
            act.activation_id,
            act.state.value,
            act.current,
        )
    if before.state is not act.state and not result.events:
        log.debug(
            "activation.transition activation_id=%s from=%s to=%s phase=%s",
            act.activation_id,
            before.state.value,
            act.state.value,
            act.phase.value,
        )
