"""Faults at the vehicle boundary, measured from outside, on the real parts.

``python -m bench faults [SCENARIO ...] [--activations N] [--freeze-s S] [--json OUT]``

Every scenario runs on a fresh local stack (mosquitto with the project's config and
auth plugin, Redis), a simulated fleet in its own process and gateway workers in
theirs, and counts what an operator would: lost, failed, doubled, switched off,
tracebacks in the logs, memory.

share-group     five car identities try to join the gateway's share group (its secret
                name and a guess), then N activations run
bogus-features  one car's states list 2,000 bogus features, features that are not
                installed, and names outside the contract
junk            one car sends 10,000 junk payloads, then 6,000 messages of 244 kB;
                the worker's RSS, its refusals, then a normal activation
broker-kill     mosquitto SIGKILLed with >= N activations in flight, restarted 3 s later
freeze          SIGSTOP of one of two workers for --freeze-s with >= N in flight

Exit code 0 only if every scenario run met its bar (``ok`` in the report).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.activations import Outcomes, start_fleet, start_gateways, wait_twins_loaded
from bench.junk import mutate
from bench.report import emit
from launcher.procs import free_port
from launcher.services import PythonService
from launcher.stack import LocalStack, StackOptions
from protocol.codec import canonical_bytes
from protocol.credentials import vehicle_password
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.redis_connect import AnyRedis, open_redis
from protocol.timeutil import format_ts
from vehicle_sim.fleet import Mode, VehicleSpec, build_fleet

SCENARIOS = ("share-group", "bogus-features", "junk", "broker-kill", "freeze")
SEED = 11
# The handbook's policy compressed to seconds, as the demo runs it; a vehicle may take
# longer than a freeze to become ready, and a missing answer is asked for again.
POLICY = {
    "CAAS_RETRY_MAX_ATTEMPTS": "5", "CAAS_RETRY_INITIAL_BACKOFF_S": "1",
    "CAAS_RETRY_MAX_BACKOFF_S": "8", "CAAS_RETRY_STATUS_QUERY_TIMEOUT_S": "2",
    "CAAS_RETRY_ACK_TIMEOUT_S": "3", "CAAS_RETRY_READY_WAIT_S": "45",
    "CAAS_RETRY_OUTCOME_WAIT_S": "40",
}  # fmt: skip
# Right before the activations, nine vehicles in ten set off on trips of 5-40 s: their
# activations wait for them to park, so a fault a few seconds in finds most of them in
# flight, and vehicles act all through it.
TRIPS_S = (5.0, 40.0)
DRIVING_SHARE = 0.9


@dataclass
class Rig:
    """A running platform: stack, fleet process, gateway worker processes."""

    stack: LocalStack
    specs: list[VehicleSpec]
    sim: PythonService
    sim_url: str
    gateways: list[PythonService]
    urls: list[str]
    redis: AnyRedis
    outcomes: Outcomes
    http: httpx.AsyncClient
    logs: list[Path] = field(default_factory=list)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.env()['CAAS_GATEWAY_TOKEN']}"}

    async def activate_all(self, specs: list[VehicleSpec]) -> dict[str, asyncio.Future[str]]:
        """POST one activation per vehicle (its first installed feature), spread over the
        workers; {activation_id: future of its final state}."""
        slots = asyncio.Semaphore(64)
        futures: dict[str, asyncio.Future[str]] = {}

        async def one(n: int, spec: VehicleSpec) -> None:
            activation_id = str(uuid.uuid4())
            futures[activation_id] = self.outcomes.expect(activation_id)
            body = {"activation_id": activation_id, "vin": spec.vin,
                    "feature": spec.installed_features[0], "action": "activate"}  # fmt: skip
            async with slots:
                url = self.urls[n % len(self.urls)]
                reply = await self.http.post(
                    f"{url}/v1/activations", json=body, headers=self.auth()
                )
            reply.raise_for_status()

        await asyncio.gather(*(one(n, spec) for n, spec in enumerate(specs)))
        return futures

    async def finals(self, ids: list[str]) -> list[dict[str, Any]]:
        url = self.urls[-1]
        replies = [await self.http.get(f"{url}/v1/activations/{i}", headers=self.auth())
                   for i in ids]  # fmt: skip
        return [r.json() for r in replies]

    async def events(self) -> list[dict[str, Any]]:
        entries: Any = await self.redis.xrange("caas:events")
        return [{**f, "data": json.loads(f["data"])} for _, f in entries]

    async def metrics(self, url: str) -> str:
        return (await self.http.get(f"{url}/metrics")).text

    async def active_on_vehicle(self, vin: str) -> list[str]:
        state = (await self.http.get(f"{self.sim_url}/v1/vehicles/{vin}")).json()["state"]
        return list(state["active_features"])

    async def send_on_trips(self) -> None:
        """DRIVING_SHARE of the fleet starts a trip of TRIPS_S seconds now (seeded)."""
        rng = random.Random(SEED)
        slots = asyncio.Semaphore(32)

        async def trip(vin: str) -> None:
            async with slots:
                body = {"duration_s": rng.uniform(*TRIPS_S)}
                reply = await self.http.post(f"{self.sim_url}/v1/vehicles/{vin}/trip", json=body)
            reply.raise_for_status()

        drivers = [s.vin for s in self.specs if rng.random() < DRIVING_SHARE]
        await asyncio.gather(*(trip(vin) for vin in drivers))

    async def answers_received(self) -> int:
        """Responses the workers took off the wire: matched, unknown or refused."""
        total = 0.0
        for url in self.urls:
            text = await self.metrics(url)
            total += sum(_samples(text, "caas_gateway_responses_total").values())
            rejected = _samples(text, "caas_gateway_inbound_rejected_total")
            total += sum(v for k, v in rejected.items() if 'leaf="responses"' in k)
        return int(total)

    def tracebacks(self) -> dict[str, int]:
        return {p.name: p.read_text(errors="replace").count("Traceback") for p in self.logs}


@asynccontextmanager
async def rig(vehicles: int, workers: int = 1) -> AsyncIterator[Rig]:
    """An all-online fleet of ``vehicles`` and ``workers`` gateway processes."""
    with tempfile.TemporaryDirectory(prefix="caas-faults-") as tmp:
        run_dir = Path(tmp)
        specs = build_fleet(SEED, vehicles, {Mode.ONLINE: 1.0})
        with LocalStack(StackOptions(run_dir=run_dir)) as stack:
            port = free_port()
            sim = start_fleet(stack, vehicles, ["--seed", str(SEED), "--mix", "online=1"], port)
            gateways, urls = start_gateways(stack, workers, POLICY)
            assert stack.redis is not None
            redis = await open_redis(stack.redis.url(), decode_responses=True)
            outcomes = await Outcomes.open(stack.redis.url(), "caas:events")
            follower = asyncio.create_task(outcomes.run())
            try:
                await wait_twins_loaded(urls, vehicles)
                async with httpx.AsyncClient(timeout=30) as http:
                    logs = [run_dir / "sim.log", *(run_dir / f"{g.name}.log" for g in gateways)]
                    yield Rig(stack, specs, sim, f"http://127.0.0.1:{port}", gateways, urls,
                              redis, outcomes, http, logs)  # fmt: skip
            finally:
                follower.cancel()
                for service in [*gateways, sim]:
                    service.stop()
                await redis.aclose()


async def car(stack: LocalStack, vin: str) -> MqttConnection:
    """A connection with a car's own credentials on the vehicle listener."""
    stack.allow_vehicles([vin])
    password = vehicle_password(stack.secrets["fleet_secret"], vin)
    conn = MqttConnection(
        stack.broker.vehicle_address(vin, password),
        ConnectionOptions(client_id=vin, auto_reconnect=False),
    )
    await conn.connect(10)
    return conn


def rss_kb(service: PythonService) -> int:
    assert service.proc is not None
    for line in Path(f"/proc/{service.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def settle(futures: dict[str, asyncio.Future[str]], timeout_s: float) -> Counter[str]:
    """Final states once every activation has ended (or 'lost' for those that did not)."""
    done, _ = await asyncio.wait(futures.values(), timeout=timeout_s)
    return Counter(f.result() if f in done else "lost" for f in futures.values())


def in_flight(futures: dict[str, asyncio.Future[str]]) -> int:
    return sum(1 for f in futures.values() if not f.done())


async def false_failures(r: Rig, finals: list[dict[str, Any]]) -> int:
    """FAILED activations whose vehicle did act: the feature is on, or was switched off
    by reconciliation (a divergence for that vehicle and feature)."""
    diverged = {(e["data"]["vin"], e["data"]["feature"]) for e in await r.events()
                if e["type"] == "feature.divergence"}  # fmt: skip
    count = 0
    for final in finals:
        if final["state"] != "FAILED":
            continue
        key = (final["vin"], final["feature"])
        if key in diverged or final["feature"] in await r.active_on_vehicle(final["vin"]):
            count += 1
    return count


# ---------------------------------------------------------------- scenarios
async def share_group(activations: int, **_options: Any) -> dict[str, Any]:
    async with rig(activations) as r:
        group = r.stack.secrets["gateway_share_group"]
        filters = [
            (f"$share/{g}/caas/v1/vehicles/+/{leaf}", 1)
            for g in (group, "gateway")
            for leaf in ("responses", "state", "presence")
        ]
        cars, refused = [], 0
        for spec in r.specs[:5]:
            conn = await car(r.stack, spec.vin)
            try:
                await conn.subscribe(filters)
            except Exception:  # SUBACK "Not authorized": what we want
                refused += 1
            cars.append(conn)
        futures = await r.activate_all(r.specs)
        outcome = await settle(futures, 120)
        await asyncio.sleep(1)  # answers still on their way
        sent = sum((await r.http.get(f"{r.sim_url}/v1/fleet")).json()["answers_sent"].values())
        received = await r.answers_received()
        for conn in cars:
            await conn.disconnect()
    return {
        "car_connections": len(cars), "subscriptions_refused": refused,
        "activations": activations, "outcomes": dict(outcome),
        "answers_sent_by_fleet": sent, "answers_received_by_gateway": received,
        "answers_lost": sent - received,
        "ok": refused == len(cars) and sent == received and outcome == {"succeeded": activations},
    }  # fmt: skip


async def bogus_features(**_options: Any) -> dict[str, Any]:
    async with rig(10) as r:
        spec = r.specs[0]
        url = r.urls[0]
        before = _series(await r.metrics(url))
        conn = await car(r.stack, spec.vin)
        names = [f"bogus_{i}" for i in range(2000)]
        topic = f"caas/v1/vehicles/{spec.vin}/state"
        states = [
            {"installed_features": names, "active_features": names},
            {"installed_features": ["climate_plus"], "active_features": names[:50]},
            {"installed_features": ["../../etc/passwd", "a\nb", "x" * 2000],
             "active_features": ["../../etc/passwd"]},
        ]  # fmt: skip
        for n, change in enumerate(states):
            body = {**_state(spec.vin, 1000 + n), **change}
            await conn.publish_and_wait(topic, canonical_bytes(body))
        await asyncio.sleep(2)
        await conn.disconnect()
        events = await r.events()
        after = _series(await r.metrics(url))
        rejected = _samples(await r.metrics(url), "caas_gateway_inbound_rejected_total")
    divergences = sum(1 for e in events if e["type"] == "feature.divergence")
    return {
        "states_sent": len(states), "bogus_features_in_them": 2050 + 3,
        "deactivations_opened": divergences, "metric_series_before": before,
        "metric_series_after": after, "rejected": rejected,
        "ok": divergences == 0 and after - before <= 5,
    }  # fmt: skip


async def junk(**_options: Any) -> dict[str, Any]:
    async with rig(10) as r:
        spec = r.specs[0]
        gateway = r.gateways[0]
        conn = await car(r.stack, spec.vin)
        rng = random.Random(7)
        rss = {"start": rss_kb(gateway)}
        seeds = _seeds(spec.vin)
        for n in range(10_000):
            leaf = ("state", "presence", "responses")[n % 3]
            conn.publish(f"caas/v1/vehicles/{spec.vin}/{leaf}", mutate(rng, seeds[leaf]))
        await conn.flush(120)
        await _until_handled(r, 10_000)
        rss["after_10000_junk"] = rss_kb(gateway)
        big = b'{"pad": "' + b"x" * 244_000 + b'"}'
        for _ in range(6000):
            conn.publish(f"caas/v1/vehicles/{spec.vin}/state", big)
        await conn.flush(300)
        await _until_handled(r, 16_000)
        rss["after_6000_x_244kB"] = rss_kb(gateway)
        await conn.disconnect()
        ready = (await r.http.get(f"{r.urls[0]}/readyz")).status_code == 200
        futures = await r.activate_all(r.specs[1:2])
        after = await settle(futures, 60)
        rejected = _samples(await r.metrics(r.urls[0]), "caas_gateway_inbound_rejected_total")
        tracebacks = r.tracebacks()
    grown_mb = (max(rss.values()) - rss["start"]) / 1024
    return {
        "junk_payloads": 10_000, "big_messages": 6000, "rejected": rejected,
        "rss_kb": rss, "rss_growth_mb": round(grown_mb, 1), "ready_afterwards": ready,
        "activation_afterwards": dict(after), "tracebacks": tracebacks,
        "ok": sum(tracebacks.values()) == 0 and ready and after == {"succeeded": 1}
        and grown_mb < 100,
    }  # fmt: skip


async def broker_kill(activations: int, **_options: Any) -> dict[str, Any]:
    async with rig(activations) as r:
        await r.send_on_trips()
        futures = await r.activate_all(r.specs)
        await asyncio.sleep(1)
        flying = in_flight(futures)
        r.stack.broker.kill()
        await asyncio.sleep(3)
        r.stack.broker.start()
        outcome = await settle(futures, 240)
        finals = await r.finals(list(futures))
        wrong = await false_failures(r, finals)
        tracebacks = r.tracebacks()
    return {
        "activations": activations, "in_flight_at_kill": flying, "outcomes": dict(outcome),
        "lost": outcome.get("lost", 0), "failed_although_acted": wrong,
        "tracebacks": tracebacks,
        "ok": flying >= 1000 and "lost" not in outcome and wrong == 0
        and sum(tracebacks.values()) == 0,
    }  # fmt: skip


async def freeze(activations: int, freeze_s: float, **_options: Any) -> dict[str, Any]:
    async with rig(activations, workers=2) as r:
        await r.send_on_trips()
        futures = await r.activate_all(r.specs)
        await asyncio.sleep(1)
        flying = in_flight(futures)
        frozen = r.gateways[0].proc
        assert frozen is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(freeze_s)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        outcome = await settle(futures, 240)
        finals = await r.finals(list(futures))
        wrong = await false_failures(r, finals)
        switched_off = sum(1 for e in await r.events() if e["type"] == "feature.divergence")
        tracebacks = r.tracebacks()
    return {
        "activations": activations, "in_flight_at_freeze": flying, "freeze_s": freeze_s,
        "outcomes": dict(outcome), "failed_although_acted": wrong,
        "switched_off": switched_off, "tracebacks": tracebacks,
        "ok": flying >= 1000 and "lost" not in outcome and wrong == 0 and switched_off == 0,
    }  # fmt: skip


# ---------------------------------------------------------------- helpers
def _state(vin: str, seq: int) -> dict[str, Any]:
    return {"vin": vin, "model": "Tourer", "firmware": "5.0.2", "online": True, "power": "off",
            "moving": False, "speed_kmh": 0.0, "gear": "P", "busy": False,
            "installed_features": ["climate_plus"], "active_features": [], "seq": seq,
            "at": format_ts(time.time())}  # fmt: skip


def _seeds(vin: str) -> dict[str, bytes]:
    state = _state(vin, 5)
    response = {"v": 1, "command_id": "c-1", "vin": vin, "type": "status", "status": "ack",
                "reason": None, "retry_after_s": None, "state": state, "diagnostics": None,
                "at": format_ts(time.time())}  # fmt: skip
    presence = {"vin": vin, "online": True, "at": format_ts(time.time())}
    return {"state": canonical_bytes(state), "presence": canonical_bytes(presence),
            "responses": canonical_bytes(response)}  # fmt: skip


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            out[line[len(name) :].split(" ")[0]] = float(line.rsplit(" ", 1)[1])
    return out


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def _until_handled(r: Rig, count: int, timeout_s: float = 300) -> None:
    """Until the worker has handled ``count`` vehicle messages (accepted or refused)."""
    families = ("caas_gateway_inbound_rejected_total", "caas_gateway_twin_updates_total",
                "caas_gateway_responses_total")  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await r.metrics(r.urls[0])
        if sum(sum(_samples(text, name).values()) for name in families) >= count:
            return
        await asyncio.sleep(0.5)


RUNNERS: dict[str, Callable[..., Any]] = {
    "share-group": share_group, "bogus-features": bogus_features, "junk": junk,
    "broker-kill": broker_kill, "freeze": freeze,
}  # fmt: skip


async def measure(scenarios: list[str], activations: int, freeze_s: float) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name in scenarios:
        print(f"[faults] {name} ...", flush=True)
        started = time.monotonic()
        result = await RUNNERS[name](activations=activations, freeze_s=freeze_s)
        result["seconds"] = round(time.monotonic() - started, 1)
        report[name] = result
        print(f"[faults] {name}: {'ok' if result['ok'] else 'NOT OK'} {json.dumps(result)}",
              flush=True)  # fmt: skip
    return report


def run(scenarios: list[str], activations: int, freeze_s: float, json_out: Path | None) -> int:
    report = uvloop.run(measure(scenarios or list(SCENARIOS), activations, freeze_s))
    emit(report, json_out)
    return 0 if all(r["ok"] for r in report.values()) else 1
