"""Every Redis key and TTL of the gateway (one Redis db, or one Redis Cluster, per
deployment).

On a single Redis (standalone) ``{b}`` below is the prefix (``caas:gw`` by default)
and the names are the same as they always were. On a Redis Cluster every vehicle
belongs to one of ``CLUSTER_SHARDS`` shards (``shard_of``: CRC-32 of the VIN), and
``{b}`` is the shard's hash tag ``{caas:gw:<shard>}``: everything of a vehicle, of its
activations, and the shard's own timers, leases, counts, indexes and events outbox
hash to one slot, so each Lua script runs inside one slot of one node
(docs/gateway.md, "Redis Cluster"). ``{p}`` keys are not in a shard.

    {b}:act:{activation_id}   hash   doc (JSON), version, state, vin, due_ms, request_hash
    {b}:timers                zset   activation_id → due time (epoch ms)
    {b}:leases                zset   activation_id → lease expiry (epoch ms) while a worker runs it
    {b}:twin:{vin}            hash   state, presence (JSON), seq, fresh_ms, seen_ms, rev, rtt_*
    {b}:lock:{vin}            string activation_id holding the vehicle's one command slot (PX)
    {b}:waiting:{vin}         set    activation ids waiting for this vehicle (woken on change)
    {b}:cmds:{vin}            hash   command_id → JSON {act, type, sent_ms}; whole key expires
    {b}:open:{vin}            set    "feature|activation_id" of non-terminal activations
    {b}:desired:{vin}         hash   feature → "active" after a SUCCEEDED activate
    {b}:reconciled:{vin}      string reconciliation deactivations opened in the current window
    {b}:states                hash   activation count per state (metrics gauges)
    {b}:ix[:state=S][:category=C][:feature=F]
                              zset   "created_ms|activation_id" of the activations with
                                     those values (one zset per combination; score 0,
                                     read by lex range: the list route's indexes)
    {b}:ix:vin={vin}          zset   the same members, per vehicle
    {p}:inbox:{worker_id}     list   live query answers for the worker that asked (BLPOP)
    {p}:exporter              string the worker exporting the Redis gauges (PX lease)
    caas:events               stream docs/spec.md §4 events (name from CAAS_EVENTS_STREAM)

Cluster mode only:

    {b}:outbox                stream the shard's events, as the scripts write them
    {b}:forwarder             string the worker forwarding the outbox (PX lease)
    {b}:forwarded             string id of the last outbox entry copied to caas:events
    {b}:synced                string written before a WAIT for the replica (its value unused)
    {p}:home:{activation_id}  string the activation's shard (written before it is created)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

DEFAULT_PREFIX = "caas:gw"
# Shards on a Redis Cluster. Each shard is one slot, so the shards spread over the
# masters only as far as CRC16 spreads 16 tags over 16384 slots (16 put 4-7 on each
# of three masters); more shards spread better but every poller (timers, forwarder,
# gauges, list) then makes one call per shard per round. 16 is both: work on every
# master of a cluster of up to ~8, and 16 script calls per round, pipelined.
CLUSTER_SHARDS = 16
COMMAND_INDEX_TTL_MS = 24 * 3600 * 1000  # answers later than a day are not matched
REPLY_TTL_S = 60  # a live-query inbox nobody pops (its worker is gone)
RECONCILE_WINDOW_MS = 3600 * 1000  # reconciliation rate limit: per vehicle and window...
RECONCILE_PER_WINDOW = 16  # ...at most this many deactivations opened
LOCK_MARGIN_MS = 60_000  # vehicle lock outlives the longest expected hold by this much
# the indexed fields of an activation, in the order their values appear in an index key
INDEXED_FIELDS = ("state", "category", "feature")


def layout(prefix: str, events: str, cluster: bool) -> Keys:
    """The key names of a deployment: sharded on a Redis Cluster, one shard otherwise."""
    return Keys(prefix, events, CLUSTER_SHARDS if cluster else 1)


def shard_of(vin: str, shards: int) -> int:
    """The shard a vehicle (and every activation of it) lives in: stable across
    processes and releases (CRC-32, not Python's salted ``hash``)."""
    return zlib.crc32(vin.encode()) % shards if shards > 1 else 0


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names. ``shards`` > 1: cluster mode; then a view of one shard
    (``in_shard``, ``of_vin``) names that shard's keys."""

    prefix: str = DEFAULT_PREFIX
    events: str = "caas:events"  # the one stream the backend reads
    shards: int = 1
    shard: int = 0

    @property
    def cluster(self) -> bool:
        return self.shards > 1

    @property
    def base(self) -> str:
        """What the shard's keys start with: the prefix, or the shard's hash tag."""
        return f"{{{self.prefix}:{self.shard}}}" if self.cluster else self.prefix

    def _vehicle_base(self, vin: str) -> str:
        """A vehicle's keys are in its own shard, whichever view names them."""
        return self.of_vin(vin).base if self.cluster else self.prefix

    def in_shard(self, shard: int) -> Keys:
        return replace(self, shard=shard) if self.cluster else self

    def of_vin(self, vin: str) -> Keys:
        return self.in_shard(shard_of(vin, self.shards))

    def all_shards(self) -> list[Keys]:
        return [self.in_shard(s) for s in range(self.shards)]

    @property
    def outbox(self) -> str:
        """The stream the scripts XADD events to: the events stream itself, or on a
        cluster the shard's outbox (a script cannot write another slot's key)."""
        return f"{self.base}:outbox" if self.cluster else self.events

    @property
    def forwarder(self) -> str:
        return f"{self.base}:forwarder"

    @property
    def forwarded(self) -> str:
        return f"{self.base}:forwarded"

    @property
    def synced(self) -> str:
        return f"{self.base}:synced"

    @property
    def activations_pattern(self) -> str:
        """A SCAN pattern of every activation record, whatever its shard."""
        return f"{{{self.prefix}:*}}:act:*" if self.cluster else f"{self.prefix}:act:*"

    def home(self, activation_id: str) -> str:
        return f"{self.prefix}:home:{activation_id}"

    def activation(self, activation_id: str) -> str:
        return f"{self.base}:act:{activation_id}"

    @property
    def timers(self) -> str:
        return f"{self.base}:timers"

    @property
    def leases(self) -> str:
        return f"{self.base}:leases"

    @property
    def states(self) -> str:
        return f"{self.base}:states"

    @property
    def exporter(self) -> str:
        return f"{self.prefix}:exporter"

    def index(self, state: str = "", category: str = "", feature: str = "") -> str:
        """The list index of the activations with these values ("" = any)."""
        values = zip(INDEXED_FIELDS, (state, category, feature), strict=True)
        return f"{self.base}:ix" + "".join(f":{name}={v}" for name, v in values if v)

    def vin_index(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:ix:vin={vin}"

    def twin(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:twin:{vin}"

    def lock(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:lock:{vin}"

    def waiting(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:waiting:{vin}"

    def commands(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:cmds:{vin}"

    def open(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:open:{vin}"

    def desired(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:desired:{vin}"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}:inbox:{worker_id}"

    def reconciled(self, vin: str) -> str:
        return f"{self._vehicle_base(vin)}:reconciled:{vin}"

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
