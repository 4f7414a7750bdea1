"""Reconciliation (docs/spec.md §3): a feature the vehicle reports active with no SUCCEEDED
activation behind it is switched off and reported as ``feature.divergence``.

A feature is *accounted for* when its last SUCCEEDED activation was an ``activate``
(``desired``) or an activation for it is still open (the state that shows the
feature may arrive before the ack). Anything else gets a ``deactivate`` activation
with ``origin: reconciliation``; it runs through the same machine (readiness, the
vehicle lock, retries). Its id derives from (vin, feature, state seq), so the same
report seen twice creates it once, and the create script re-checks the two
conditions atomically.

In proportion, because what a vehicle reports is the vehicle's word:
- only the newest state the gateway knows is reconciled (callers pass a state only
  when the twin just stored it), never a late answer's older one;
- the reported features are bounded and consistent (``intake``: at most
  ``MAX_FEATURES``, each active one installed), and at most one deactivation per
  (vin, feature) is open at a time, so the work is bounded by the vehicle's installed
  features;
- at most ``RECONCILE_PER_WINDOW`` deactivations per vehicle per window
  (``keys.RECONCILE_WINDOW_MS``); past it the divergence is counted
  (``caas_gateway_divergences_limited_total``) and looked at again on the vehicle's
  next state change after the window.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.activation import Action, Activation
from gateway.events import Emit
from gateway.metrics import GatewayMetrics
from gateway.policy import RetryPolicy
from gateway.store import Store
from protocol.timeutil import Clock

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self, store: Store, policy: RetryPolicy, clock: Clock, metrics: GatewayMetrics
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.metrics = metrics

    async def check(self, vin: str, state: dict[str, Any] | None) -> list[str]:
        """Open a deactivate for every unaccounted active feature; their activation ids."""
        active = set((state or {}).get("active_features") or ())
        if not active:
            return []
        wanted, open_features = await self.store.divergence_inputs(vin)
        created = []
        for feature in sorted(active - wanted - open_features):
            activation_id = await self._open(vin, feature, int((state or {}).get("seq", 0)))
            if activation_id:
                created.append(activation_id)
        return created

    async def _open(self, vin: str, feature: str, seq: int) -> str | None:
        now = self.clock.now()
        activation_id = f"reconcile-{vin}-{feature}-{seq}"
        act = Activation(
            activation_id, vin, feature, Action.DEACTIVATE, self.policy, now, now,
            origin="reconciliation", due_at=now,
        )  # fmt: skip
        divergence = Emit(
            "feature.divergence",
            {"vin": vin, "feature": feature, "activation_id": activation_id, "state_seq": seq,
             "action": Action.DEACTIVATE.value},
        )  # fmt: skip
        result = await self.store.create(act, "", [divergence], now, guard_feature=feature)
        if result.limited:
            self.metrics.divergences_limited.inc()
            log.info("feature.divergence_limited vin=%s feature=%s", vin, feature)
        if not result.created:
            return None
        self.metrics.divergences.inc()
        log.warning(
            "feature.divergence vin=%s feature=%s activation_id=%s", vin, feature, activation_id
        )
        return activation_id
