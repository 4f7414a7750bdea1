"""Every Redis key and TTL of the gateway (one Redis db per deployment).

Key layout (``{p}`` is the prefix, ``caas:gw`` by default):

    {p}:act:{activation_id}   hash   doc (JSON), version, state, vin, due_ms, request_hash
    {p}:timers                zset   activation_id → due time (epoch ms)
    {p}:leases                zset   activation_id → lease expiry (epoch ms) while a worker runs it
    {p}:twin:{vin}            hash   state, presence (JSON), seq, fresh_ms, seen_ms, rev, rtt_*
    {p}:lock:{vin}            string activation_id holding the vehicle's one command slot (PX)
    {p}:waiting:{vin}         set    activation ids waiting for this vehicle (woken on change)
    {p}:cmds:{vin}            hash   command_id → JSON {act, type, sent_ms}; whole key expires
    {p}:open:{vin}            set    "feature|activation_id" of non-terminal activations
    {p}:desired:{vin}         hash   feature → "active" after a SUCCEEDED activate
    {p}:inbox:{worker_id}     list   live query answers for the worker that asked (BLPOP)
    {p}:reconciled:{vin}      string reconciliation deactivations opened in the current window
    {p}:states                hash   activation count per state (metrics gauges)
    {p}:exporter              string the worker exporting the Redis gauges (PX lease)
    {p}:ix[:state=S][:category=C][:feature=F]
                              zset   "created_ms|activation_id" of the activations with
                                     those values (one zset per combination; score 0,
                                     read by lex range: the list route's indexes)
    {p}:ix:vin={vin}          zset   the same members, per vehicle
    caas:events               stream docs/spec.md §4 events (name from CAAS_EVENTS_STREAM)
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "caas:gw"
COMMAND_INDEX_TTL_MS = 24 * 3600 * 1000  # answers later than a day are not matched
REPLY_TTL_S = 60  # a live-query inbox nobody pops (its worker is gone)
RECONCILE_WINDOW_MS = 3600 * 1000  # reconciliation rate limit: per vehicle and window...
RECONCILE_PER_WINDOW = 16  # ...at most this many deactivations opened
LOCK_MARGIN_MS = 60_000  # vehicle lock outlives the longest expected hold by this much
# the indexed fields of an activation, in the order their values appear in an index key
INDEXED_FIELDS = ("state", "category", "feature")


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX
    events: str = "caas:events"

    def activation(self, activation_id: str) -> str:
        return f"{self.prefix}:act:{activation_id}"

    @property
    def timers(self) -> str:
        return f"{self.prefix}:timers"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def states(self) -> str:
        return f"{self.prefix}:states"

    @property
    def exporter(self) -> str:
        return f"{self.prefix}:exporter"

    def index(self, state: str = "", category: str = "", feature: str = "") -> str:
        """The list index of the activations with these values ("" = any)."""
        values = zip(INDEXED_FIELDS, (state, category, feature), strict=True)
        return f"{self.prefix}:ix" + "".join(f":{name}={v}" for name, v in values if v)

    def vin_index(self, vin: str) -> str:
        return f"{self.prefix}:ix:vin={vin}"

    def twin(self, vin: str) -> str:
        return f"{self.prefix}:twin:{vin}"

    def lock(self, vin: str) -> str:
        return f"{self.prefix}:lock:{vin}"

    def waiting(self, vin: str) -> str:
        return f"{self.prefix}:waiting:{vin}"

    def commands(self, vin: str) -> str:
        return f"{self.prefix}:cmds:{vin}"

    def open(self, vin: str) -> str:
        return f"{self.prefix}:open:{vin}"

    def desired(self, vin: str) -> str:
        return f"{self.prefix}:desired:{vin}"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}:inbox:{worker_id}"

    def reconciled(self, vin: str) -> str:
        return f"{self.prefix}:reconciled:{vin}"

    def vehicle_keys(self, vin: str) -> list[str]:
        """The per-vehicle keys a transition touches, in the order the Lua scripts expect."""
        return [
            self.twin(vin),
            self.lock(vin),
            self.waiting(vin),
            self.commands(vin),
            self.open(vin),
            self.desired(vin),
        ]
