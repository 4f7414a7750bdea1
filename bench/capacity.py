"""Measurements for the capacity model of docs/performance.md ("Capacity model").

``python -m bench capacity [--vehicles N] [--activations M] [--rates R,R,...] [--json OUT]``

One run, one machine, one local stack (mosquitto, Redis), in this order:

  (1) inbound baseline: a publisher floods valid state and presence messages (the
      simulator's own payload builders, QoS 1, retained, as vehicles publish them) at
      each of ``--rates``; a bare subscriber on the gateway's shared subscription, in a
      process of its own, only counts them: what the broker delivers on this machine;
  (2) twin memory: ``used_memory`` of the fresh Redis before and after one gateway
      worker's twin bootstrap of N vehicles (an all-online simulated fleet), and
      ``MEMORY USAGE`` of every key by kind;
  (3) activation memory: M activations through ``POST /v1/activations`` to SUCCEEDED,
      the same two measures, per activation and by key kind;
  (4) inbound through the gateway: the same flood as (1), now taken by the one worker;
      handled per second (its ``caas_gateway_twin_updates_total``) and the CPU of each
      process per message, at each rate;
  (5) reconnect storm: mosquitto SIGKILLed and started again on its port; the time until
      every twin's ``fresh_ms`` is newer than the restart, and until every vehicle's
      presence is on line again from after it, with each process's CPU meanwhile.

Exit code 0 when every activation SUCCEEDED and every twin was fresh again within
300 s of the restart (the report says how many were not).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import redis.asyncio as aioredis
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.activations import (
    Driver,
    Outcomes,
    Phase,
    cpu_seconds,
    process_ids,
    start_fleet,
    start_gateways,
    twin_updates,
)
from bench.report import emit
from gateway.keys import DEFAULT_PREFIX
from launcher.services import PythonService
from launcher.stack import LocalStack, StackOptions
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.topics import Topics
from vehicle_sim import vehicle as vm
from vehicle_sim.fleet import VehicleSpec, build_fleet, parse_mix

SEED = 3  # the fleet start_fleet runs by default
EVENTS = "caas:events"
PUBLISHERS = 4  # flood connections (the simulator's multiplexed link uses 8)
TICK_S = 0.01  # the flood's pacing step
QUIET_S = 1.5  # a count that has not moved for this long has drained
STORM_TIMEOUT_S = 300.0
READ_BATCH = 5000  # twins checked per script call while the storm is followed
POLL_S = 0.5


def used_memory(info: dict[str, Any]) -> dict[str, int]:
    """``used_memory`` and its ``used_memory_dataset`` part (without Redis's own fixed
    overhead: clients, scripts, replication buffers), which small runs are dominated by."""
    return {"used": int(info["used_memory"]), "dataset": int(info["used_memory_dataset"])}


def kind_of(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The key kind of gateway/keys.py a key is (``twin``, ``act``, ``ix``, ``ix:vin``...)."""
    if key == EVENTS:
        return "events"
    if not key.startswith(f"{prefix}:"):
        return "other"
    rest = key[len(prefix) + 1 :]
    if rest.startswith("ix:vin="):
        return "ix:vin"
    return rest.split(":", 1)[0]


async def key_census(redis: aioredis.Redis) -> dict[str, dict[str, int]]:
    """Keys and bytes (``MEMORY USAGE ... SAMPLES 0``: every element counted) by kind."""
    census: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    batch: list[str] = []

    async def flush() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            row = census[kind_of(key)]
            row["keys"] += 1
            row["bytes"] += int(size or 0)
        batch.clear()

    async for raw in redis.scan_iter(count=2000):
        batch.append(raw.decode() if isinstance(raw, bytes) else raw)
        if len(batch) >= 1000:
            await flush()
    if batch:
        await flush()
    return dict(census)


def census_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], per: int
) -> dict[str, dict[str, float]]:
    """Keys and bytes added per unit (activation), by kind."""
    out = {}
    for kind in sorted(set(before) | set(after)):
        b = before.get(kind, {"keys": 0, "bytes": 0})
        a = after.get(kind, {"keys": 0, "bytes": 0})
        out[kind] = {
            "keys": round((a["keys"] - b["keys"]) / per, 3),
            "bytes": round((a["bytes"] - b["bytes"]) / per, 1),
        }
    return out


class Flood:
    """Valid state and presence messages for many vehicles, as the simulator builds them
    (``vehicle_sim.vehicle``), every state newer than the last (``seq``, ``at``), so
    each one changes its twin: the gateway's full work per message, not a dedup."""

    def __init__(self, conns: list[MqttConnection], specs: list[VehicleSpec]) -> None:
        now = time.time()
        self.conns = conns
        self.topics = Topics()
        self.vehicles = [vm.Vehicle(spec=s, mode=s.initial_mode, changed_at=now, booted_at=now)
                         for s in specs]  # fmt: skip
        self.seq = 1_000_000  # above anything the simulator reaches in a run
        self.sent = 0

    def publish_one(self) -> None:
        n = self.sent
        vehicle = self.vehicles[(n // 2) % len(self.vehicles)]
        vin = vehicle.spec.vin
        now = time.time()
        if n % 2 == 0:
            self.seq += 1
            body = vm.state_payload(replace(vehicle, seq=self.seq, changed_at=now))
            topic = self.topics.state(vin)
        else:
            body = vm.presence_payload(vin, True, now)
            topic = self.topics.presence(vin)
        self.conns[n % len(self.conns)].publish(topic, body, 1, True)
        self.sent += 1

    async def run(self, rate: float, seconds: float) -> dict[str, float]:
        """Publish ``rate`` messages/s for ``seconds``; returns what was published and
        the rate actually offered (until the broker acknowledged the last one)."""
        first = self.sent
        started = time.perf_counter()
        end = started + seconds
        while (now := time.perf_counter()) < end:
            due = int((now - started) * rate) - (self.sent - first)
            for _ in range(min(due, int(rate * TICK_S * 5) + 1)):
                self.publish_one()
            await asyncio.sleep(TICK_S)
        for conn in self.conns:
            await conn.flush(120)
        sent = self.sent - first
        return {"sent": sent, "offered_per_s": round(sent / (time.perf_counter() - started), 1)}


async def follow(
    read: Callable[[], Awaitable[int]], work: Awaitable[dict[str, float]], pids: dict[str, int]
) -> dict[str, Any]:
    """Run ``work`` (a flood) while reading a received-messages count; the count taken
    between the flood's start and the moment it stopped moving, its rate, and each
    process's CPU over that time (ms per message)."""
    start_count = await read()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    task = asyncio.ensure_future(work)
    count, last_change = start_count, started
    while True:
        await asyncio.sleep(0.2)
        now_count = await read()
        now = time.perf_counter()
        if now_count != count:
            count, last_change = now_count, now
        elif task.done() and now - last_change > QUIET_S:
            break
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    flood = task.result()
    taken = count - start_count
    seconds = max(1e-6, last_change - started)
    return {
        **flood,
        "received": taken,
        "received_per_s": round(taken / seconds, 1),
        "lost": max(0, int(flood["sent"]) - taken),
        "cpu_ms_per_message": {n: round(s * 1000 / max(1, taken), 4) for n, s in cpu.items()},
        "cpu_share_of_a_core": {n: round(s / seconds, 3) for n, s in cpu.items()},
    }


def count_forever(broker_url: str, filters: list[str], received: Any, ready: Any) -> None:
    """The baseline subscriber, in a process of its own (so that the publisher's CPU does
    not cap it): counts every message into ``received`` (a shared integer)."""

    def count(_: paho.MQTTMessage) -> None:
        received.value += 1

    async def run() -> None:
        counter = MqttConnection(
            BrokerAddress.from_url(broker_url),
            ConnectionOptions("capacity-counter", subscriptions=[(f, 1) for f in filters]),
            on_message=count,
        )
        await counter.connect()
        ready.set()
        await asyncio.Event().wait()  # until the bench terminates this process

    uvloop.run(run())


async def baseline(
    stack: LocalStack, flood: Flood, rates: list[float], step_s: float
) -> list[dict[str, Any]]:
    """(1) A subscriber on the gateway's own shared subscriptions that only counts."""
    group = stack.env()["CAAS_GATEWAY_SHARE_GROUP"]
    filters = [Topics().shared(leaf, group) for leaf in ("state", "presence")]
    spawn = multiprocessing.get_context("spawn")
    received = spawn.Value("q", 0, lock=False)  # one writer: the counter process
    ready = spawn.Event()
    counter = spawn.Process(
        target=count_forever,
        args=(stack.broker.gateway_address().url(), filters, received, ready),
        daemon=True,
    )
    counter.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the baseline subscriber did not connect in 30 s")

        async def read() -> int:
            return int(received.value)

        assert counter.pid is not None
        pids = {**broker_and_self(stack), "counter": counter.pid}
        steps = []
        for rate in rates:
            step = await follow(read, flood.run(rate, step_s), pids)
            steps.append({"rate": rate, **step})
            print(f"    {rate:g}/s offered: counted {step['received_per_s']}/s, "
                  f"lost {step['lost']}", flush=True)  # fmt: skip
    finally:
        counter.terminate()
        counter.join(10)
    return steps


def broker_and_self(stack: LocalStack) -> dict[str, int]:
    pids = {"driver (this process)": os.getpid()}
    if stack.broker.proc is not None:
        pids["mosquitto"] = stack.broker.proc.pid
    return pids


async def through_gateway(
    url: str, flood: Flood, rates: list[float], step_s: float, pids: dict[str, int]
) -> list[dict[str, Any]]:
    """(4) The same flood taken by one gateway worker, counted on its /metrics."""
    async with httpx.AsyncClient(timeout=10) as http:

        async def read() -> int:
            return twin_updates((await http.get(f"{url}/metrics")).text)

        steps = []
        for rate in rates:
            step = await follow(read, flood.run(rate, step_s), pids)
            steps.append({"rate": rate, **step})
            gw = step["cpu_ms_per_message"].get("gateway-0", 0)
            print(f"    {rate:g}/s offered: handled {step['received_per_s']}/s, "
                  f"lost {step['lost']}, gateway {gw} ms CPU per message", flush=True)  # fmt: skip
    return steps


async def publishers(stack: LocalStack) -> list[MqttConnection]:
    conns = [
        MqttConnection(stack.broker.fleet_address(), ConnectionOptions(client_id=f"flood-{n}"))
        for n in range(PUBLISHERS)
    ]
    for conn in conns:
        await conn.connect()
    return conns


async def memory(redis: aioredis.Redis) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    info = await redis.info("memory")
    return used_memory(info), await key_census(redis)


async def activate(
    stack: LocalStack, url: str, vins: list[str], window: int = 64
) -> dict[str, Any]:
    """(3) Every VIN gets one activation, ``window`` outstanding, until all are done."""
    assert stack.redis is not None
    outcomes = await Outcomes.open(stack.redis.url(), EVENTS)
    follower = asyncio.create_task(outcomes.run())
    driver = Driver([url], stack.env()["CAAS_GATEWAY_TOKEN"], vins, outcomes)
    try:
        phase = await driver.closed_loop(Phase("memory", None, 3600, window))
    finally:
        follower.cancel()
        await driver.close()
        await outcomes.redis.aclose()
    return phase.report()


# Which of the twins in KEYS are not fresh since ARGV[1] (epoch ms), and which have
# no on-line presence from after it: 1-based positions. Counted inside Redis, so that
# following 30,000 twins every half second costs the bench (which shares the CPU with
# what it measures) a few milliseconds, not a pipeline of 30,000 replies to parse.
NOT_YET = """
local stale, offline = {}, {}
local since = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local t = redis.call('HMGET', key, 'fresh_ms', 'presence_ms', 'online')
  if tonumber(t[1] or '0') < since then stale[#stale + 1] = i end
  if tonumber(t[2] or '0') < since or t[3] ~= '1' then offline[#offline + 1] = i end
end
return {stale, offline}
"""


async def not_yet(
    redis: aioredis.Redis, vins: list[str], since_ms: int
) -> tuple[set[str], set[str]]:
    """(VINs whose twin is not fresh since ``since_ms``, VINs not on line since then)."""
    script = redis.register_script(NOT_YET)
    stale: set[str] = set()
    offline: set[str] = set()
    for start in range(0, len(vins), READ_BATCH):
        chunk = vins[start : start + READ_BATCH]
        keys = [f"{DEFAULT_PREFIX}:twin:{vin}" for vin in chunk]
        s, o = await script(keys=keys, args=[since_ms])
        stale.update(chunk[i - 1] for i in s)
        offline.update(chunk[i - 1] for i in o)
    return stale, offline


WORKER_COUNTERS = {
    "reconnects": "caas_gateway_mqtt_reconnects_total",
    "pauses": "caas_gateway_inbound_pauses_total",
}


async def worker_counts(url: str) -> dict[str, int]:
    """Twin updates, MQTT reconnects and backlog pauses of a worker so far."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    counts = {"twin_updates": twin_updates(text)}
    for name, sample_name in WORKER_COUNTERS.items():
        counts[name] = int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == sample_name
            )
        )
    return counts


async def storm(
    stack: LocalStack,
    redis: aioredis.Redis,
    vins: list[str],
    services: list[PythonService],
    url: str,
) -> dict[str, Any]:
    """(5) SIGKILL the broker, start it again, follow every twin until fresh again."""
    before = await worker_counts(url)
    stack.broker.kill()
    killed = time.time()
    stack.broker.start()
    restart = time.time()
    restart_ms = int(restart * 1000)
    pids = process_ids(stack, services)  # mosquitto's new pid
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    stale, offline = set(vins), set(vins)
    curve: list[tuple[float, int, int]] = []  # (seconds after the restart, stale, offline)
    while (stale or offline) and time.time() - restart < STORM_TIMEOUT_S:
        await asyncio.sleep(POLL_S)
        stale_now, offline_now = await not_yet(redis, sorted(stale | offline), restart_ms)
        stale &= stale_now
        offline &= offline_now
        curve.append((round(time.time() - restart, 2), len(stale), len(offline)))
    seconds = time.time() - restart
    cpu = {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
    after = await worker_counts(url)
    counts = {name: after[name] - before[name] for name in after}

    def first(column: int, at_most: int) -> float | None:
        return next((point[0] for point in curve if point[column] <= at_most), None)

    return {
        "vehicles": len(vins),
        "broker_down_s": round(restart - killed, 2),
        "all_fresh_s": first(1, 0),
        "half_fresh_s": first(1, len(vins) // 2),
        "all_online_s": first(2, 0),
        # announced again + the retained ones mosquitto hands to a re-made subscription
        "messages_handled": counts["twin_updates"],
        "worker_reconnects": counts["reconnects"],
        "worker_read_pauses": counts["pauses"],
        "still_stale": len(stale),
        "still_offline": len(offline),
        "cpu_s": cpu,
        "cpu_share_of_a_core": {n: round(s / max(1e-6, seconds), 3) for n, s in cpu.items()},
        "poll_interval_s": POLL_S,
        "curve": curve[:: max(1, len(curve) // 40)],
    }


async def measure(
    vehicles: int, activations: int, rates: list[float], step_s: float
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="caas-capacity-") as run_dir,
        LocalStack(StackOptions(run_dir=Path(run_dir), acl_root="caas/+")) as stack,
    ):
        assert stack.redis is not None
        specs = build_fleet(SEED, vehicles, parse_mix("online=1"))
        vins = [s.vin for s in specs]
        activated, flooded = vins[:activations], specs[activations:] or specs
        redis = aioredis.Redis.from_url(stack.redis.url())
        conns = await publishers(stack)
        flood = Flood(conns, flooded)
        report: dict[str, Any] = {"vehicles": vehicles, "activations": activations,
                                  "flooded_vehicles": len(flooded), "step_s": step_s}  # fmt: skip
        print(f"(1) baseline: a bare subscriber counts the flood ({len(flooded)} vehicles)",
              flush=True)  # fmt: skip
        report["baseline"] = await baseline(stack, flood, rates, step_s)
        empty = used_memory(await redis.info("memory"))
        print(f"(2) twin memory: {vehicles} vehicles, one gateway worker", flush=True)
        services = [start_fleet(stack, vehicles)]
        try:
            gateways, urls = start_gateways(stack, 1)
            services += gateways
            await wait_bootstrapped(redis, vins)
            loaded, census1 = await memory(redis)
            report["twins"] = twin_memory(empty, loaded, census1, vehicles)
            print(f"    {report['twins']['used_memory_per_twin']} B used_memory per twin, "
                  f"{report['twins']['twin_hash_bytes']} B per twin hash", flush=True)  # fmt: skip
            print(f"(3) activation memory: {activations} activations", flush=True)
            events_before = int(await redis.xlen(EVENTS))
            phase = await activate(stack, urls[0], activated)
            await asyncio.sleep(1.0)  # the last commits' index writes
            done, census2 = await memory(redis)
            report["activation_phase"] = phase
            report["activation_memory"] = activation_memory(
                loaded, done, census1, census2, max(1, phase["succeeded"]),
                int(await redis.xlen(EVENTS)) - events_before,
            )  # fmt: skip
            print(f"    {phase['succeeded']} SUCCEEDED; "
                  f"{report['activation_memory']['used_memory_per_activation']} B per "
                  "activation", flush=True)  # fmt: skip
            print("(4) the same flood through one gateway worker", flush=True)
            pids = process_ids(stack, services)
            report["gateway"] = await through_gateway(urls[0], flood, rates, step_s, pids)
            report["ratio"] = ratios(report["baseline"], report["gateway"])
            print(f"(5) reconnect storm: {vehicles} vehicles, broker SIGKILLed", flush=True)
            report["storm"] = await storm(stack, redis, vins, services, urls[0])
            print(f"    every twin fresh {report['storm']['all_fresh_s']} s after the "
                  f"restart, every presence on line {report['storm']['all_online_s']} s",
                  flush=True)  # fmt: skip
        finally:
            for conn in conns:
                conn.drop()
            for service in reversed(services):
                service.stop()
            await redis.aclose()
    report["cpus"] = os.cpu_count()
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return report


async def wait_bootstrapped(
    redis: aioredis.Redis, vins: list[str], timeout_s: float = 300.0
) -> None:
    """Until every vehicle's twin holds its state and presence (the bootstrap wrote
    them; the worker's twin_updates count more, mosquitto also hands the retained
    messages to the shared subscription)."""
    deadline = time.monotonic() + timeout_s
    missing = list(vins)
    while missing and time.monotonic() < deadline:
        async with redis.pipeline(transaction=False) as pipe:
            for vin in missing:
                pipe.hmget(f"{DEFAULT_PREFIX}:twin:{vin}", "state", "presence")
            rows = await pipe.execute()
        missing = [v for v, (s, p) in zip(missing, rows, strict=True) if not (s and p)]
        if missing:
            await asyncio.sleep(1.0)
    await asyncio.sleep(2.0)  # the duplicate retained deliveries land too


def twin_memory(
    empty: dict[str, int], loaded: dict[str, int], census: dict[str, dict[str, int]], vehicles: int
) -> dict[str, Any]:
    twins = census.get("twin", {"keys": 0, "bytes": 0})
    events = census.get("events", {"keys": 0, "bytes": 0})
    return {
        "used_memory_empty": empty,
        "used_memory_loaded": loaded,
        "used_memory_per_twin": round((loaded["used"] - empty["used"]) / vehicles, 1),
        "dataset_per_twin": round((loaded["dataset"] - empty["dataset"]) / vehicles, 1),
        "twin_keys": twins["keys"],
        "twin_hash_bytes": round(twins["bytes"] / max(1, twins["keys"]), 1),
        "events_bytes_per_twin": round(events["bytes"] / vehicles, 1),
        "census": census,
    }


def activation_memory(
    loaded: dict[str, int],
    done: dict[str, int],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    succeeded: int,
    events_added: int,
) -> dict[str, Any]:
    by_kind = census_delta(before, after, succeeded)
    retained = ("act", "ix", "ix:vin", "desired", "twin")  # never expire
    transient = ("events", "cmds", "open", "lock", "waiting", "timers", "leases")
    return {
        "used_memory_per_activation": round((done["used"] - loaded["used"]) / succeeded, 1),
        "dataset_per_activation": round((done["dataset"] - loaded["dataset"]) / succeeded, 1),
        "by_kind": by_kind,
        "retained_bytes_per_activation": round(
            sum(by_kind[k]["bytes"] for k in retained if k in by_kind), 1
        ),
        "transient_bytes_per_activation": round(
            sum(by_kind[k]["bytes"] for k in transient if k in by_kind), 1
        ),
        "events_entries_per_activation": round(events_added / succeeded, 2),
        "census": after,
    }


def ratios(base: list[dict[str, Any]], gateway: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker's best handled rate against the counter's best, in the same run."""
    best_base = max((s["received_per_s"] for s in base), default=0.0)
    best_gw = max((s["received_per_s"] for s in gateway), default=0.0)
    return {
        "baseline_best_per_s": best_base,
        "gateway_best_per_s": best_gw,
        "gateway_to_baseline": round(best_gw / best_base, 3) if best_base else None,
    }


def run(
    vehicles: int, activations: int, rates: list[float], step_s: float, json_out: Path | None
) -> int:
    if activations >= vehicles:
        raise SystemExit("--activations must be below --vehicles (the rest are flooded)")
    report = uvloop.run(measure(vehicles, activations, rates, step_s))
    emit(report, json_out)
    storm_done = report["storm"]["all_fresh_s"] is not None
    return 0 if storm_done and report["activation_phase"]["succeeded"] == activations else 1
