"""Simulator at run time: scenario stages, control API, broker restart, the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from bench.probe import FleetProbe
from launcher.procs import free_port
from launcher.stack import LocalStack
from protocol.models import CommandType
from protocol.topics import Topics
from tests.conftest import SimFactory, project_root
from tests.helpers import (
    Watcher,
    assert_docs_served_locally,
    save_broker_persistence,
    wait_until,
)
from vehicle_sim import transport
from vehicle_sim import vehicle as vm
from vehicle_sim.app import RunConfig, Simulator
from vehicle_sim.fleet import Mode
from vehicle_sim.scenario import Stage, select_for_stage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_stage_takes_exactly_the_selected_vehicles_offline(
    make_sim: SimFactory, probe: FleetProbe, stack: LocalStack, topics: Topics
) -> None:
    """A stage at t=0.3 s sends 50 % of the online fleet off line: those and only those."""
    watch = Watcher(stack, topics)
    watcher = watch.conn
    await watcher.connect(5)
    stage = Stage(at_s=0.3, fraction=0.5, from_modes=[Mode.ONLINE], set_mode=Mode.OFFLINE)
    try:
        async with make_sim(vehicles=10, stages=[stage]) as sim:
            expected = set(select_for_stage(sim.runtime, stage, 0))
            assert len(expected) == 5
            await wait_until(lambda: sum(not v for v in watch.online().values()) == 5)
            assert {vin for vin, online in watch.online().items() if not online} == expected
            silent = next(iter(expected))
            cmd = probe.command(silent, CommandType.STATUS)
            probe.send(cmd)
            assert await probe.expect_silence(cmd.command_id, 0.5)
            awake = next(s.vin for s in sim.specs if s.vin not in expected)
            assert (await probe.ask(awake, CommandType.STATUS))["status"] == "ack"
    finally:
        await watcher.disconnect()


async def test_control_api_steers_a_vehicle(make_sim: SimFactory, probe: FleetProbe) -> None:
    """Control API: mode change, trip and park, busy, forced features, 404 and 422;
    /metrics with the simulator's counters and its process metrics."""
    port = free_port()
    async with make_sim(vehicles=1, control_port=port) as sim:
        await sim.wait_control_ready()
        vin = sim.specs[0].vin
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await assert_docs_served_locally(http)
            r = await http.post(f"/v1/vehicles/{vin}/mode", json={"mode": "conflict"})
            assert r.json()["mode"] == "conflict"
            nack = await probe.ask(
                vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="c"
            )
            assert nack["reason"] == "conflict"
            await http.post(f"/v1/vehicles/{vin}/mode", json={"mode": "online"})
            r = await http.post(f"/v1/vehicles/{vin}/trip", json={"duration_s": 60})
            assert r.json()["state"]["moving"] is True
            driving = await probe.ask(
                vin, CommandType.ACTIVATE, feature="climate_plus", activation_id="c"
            )
            assert driving["reason"] == "driving"
            await http.post(f"/v1/vehicles/{vin}/park")
            r = await http.post(f"/v1/vehicles/{vin}/busy", json={"for_s": 30})
            assert r.json()["state"]["busy"] is True
            busy = await probe.ask(
                vin, CommandType.DEACTIVATE, feature="climate_plus", activation_id="c"
            )
            assert busy["reason"] == "busy"
            r = await http.post(f"/v1/vehicles/{vin}/features", json={"active": ["climate_plus"]})
            assert r.json()["state"]["active_features"] == ["climate_plus"]
            assert (await http.get("/v1/vehicles/NOPE")).status_code == 404
            assert (
                await http.post(f"/v1/vehicles/{vin}/mode", json={"mode": "warp"})
            ).status_code == 422
            fleet = (await http.get("/v1/fleet")).json()
            assert fleet["answers_sent"]["nack/conflict"] == 1
            metrics = (await http.get("/metrics")).text
            assert 'caas_sim_responses_sent_total{reason="conflict",status="nack"} 1.0' in metrics
            assert vin not in metrics  # labels never carry a VIN
            assert "process_cpu_seconds_total" in metrics and "python_info" in metrics


async def test_fleet_survives_a_broker_restart(
    make_sim: SimFactory, stack: LocalStack, signer: object, topics: Topics
) -> None:
    """Broker killed and restarted: shard connections come back and answer again."""
    async with make_sim(vehicles=6, shards=2) as sim:
        stack.broker.restart(hard=True)
        links = sim.link.connections
        assert isinstance(links, list)
        await wait_until(lambda: all(c.reconnects >= 1 for c in links), timeout_s=15)
        await wait_until(lambda: sim.link.connected_count() == 2, timeout_s=15)
        async with (
            FleetProbe(
                stack.broker.gateway_address(),
                signer,
                topics,  # type: ignore[arg-type]
                client_id=f"p-{uuid.uuid4().hex[:6]}",
            ) as probe
        ):
            for spec in sim.specs:
                body = await probe.ask(spec.vin, CommandType.STATUS)
                assert body["status"] == "ack"


@pytest.mark.parametrize(
    ("mode", "vehicles", "persistence"),
    [
        ("multiplexed", 40, "absent"),
        ("per-vehicle", 6, "absent"),
        ("per-vehicle", 6, "stale"),
    ],
)
async def test_fleet_republishes_presence_and_state_after_a_broker_sigkill(
    own_stack: LocalStack,
    topics: Topics,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    vehicles: int,
    persistence: str,
) -> None:
    """Broker SIGKILLed, vehicles change state, drop off and come back while it is down,
    and it restarts without its retained messages (no persistence file, or one older
    than the fleet's last changes): every vehicle's retained presence and state are
    current again within seconds, and nothing logged an error or a traceback."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(transport, "CONNECT_TIMEOUT_S", 0.3)  # several tries fail while down
    broker = own_stack.broker
    cfg = RunConfig(
        broker=broker.vehicle_address() if mode == "per-vehicle" else broker.fleet_address(),
        public_key=own_stack.public_key_path,
        topic_root=topics.root,
        live=False,
        fleet_secret=own_stack.secrets["fleet_secret"],
        vehicles=vehicles,
        connection_mode=mode,
        shards=2,
    )
    sim = Simulator(cfg)
    vins = [spec.vin for spec in sim.specs]
    if mode == "per-vehicle":
        own_stack.allow_vehicles(vins)
    db = broker.settings.run_dir / "mosquitto.db"
    async with sim:
        runtime = sim.runtime
        runtime.set_mode(vins[5], Mode.OFFLINE)  # closed before the kill, back while down
        if mode == "per-vehicle":
            await wait_until(lambda: sim.link.connected_count() == vehicles - 1)
        if persistence == "stale":
            await asyncio.to_thread(save_broker_persistence, broker)
            runtime.start_trip(vins[4], 60)  # after the save: the broker will not have it
            await asyncio.sleep(0.2)
        await asyncio.to_thread(broker.kill)
        if persistence == "absent":
            db.unlink(missing_ok=True)
        await wait_until(lambda: sim.link.connected_count() == 0)
        runtime.start_trip(vins[0], 60)  # a state change while down
        runtime.set_mode(vins[1], Mode.OFFLINE)  # goes off line while down
        runtime.set_mode(vins[2], Mode.OFFLINE, abrupt=True)
        runtime.set_mode(vins[2], Mode.ONLINE)  # drops and comes back while down
        runtime._go_offline_for(vins[3], 0.2)  # a flaky drop; back on line by a timer
        runtime.set_mode(vins[5], Mode.ONLINE)
        await asyncio.sleep(1.2)
        await asyncio.to_thread(broker.start)
        watch = Watcher(own_stack, topics)
        await watch.conn.connect(5)

        def current() -> bool:
            for vin in vins:
                vehicle = runtime.vehicles[vin]
                presence = watch.last.get(topics.presence(vin))
                if presence is None or presence["online"] is not vehicle.online:
                    return False
                state = watch.last.get(topics.state(vin))
                if vehicle.online and state != json.loads(vm.state_payload(vehicle)):
                    return False
            return True

        try:
            await wait_until(current, timeout_s=10)
        finally:
            await watch.conn.disconnect()
        assert not runtime.vehicles[vins[1]].online and runtime.vehicles[vins[3]].online
    problems = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert problems == []
    retries = [r for r in caplog.records if r.getMessage().startswith("sim.connect_retry")]
    assert bool(retries) is (mode == "per-vehicle"), "vins[5] tried to connect while down"


def test_cli_runs_writes_manifest_and_stops_on_sigint(stack: LocalStack, tmp_path: Path) -> None:
    """`python -m vehicle_sim run` connects, writes the manifest and exits 0 on Ctrl-C."""
    manifest = tmp_path / "manifest.json"
    env = {**os.environ, **stack.env(), "CAAS_TOPIC_ROOT": f"caas/cli{uuid.uuid4().hex[:6]}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vehicle_sim",
            "run",
            "--vehicles",
            "20",
            "--seed",
            "4",
            "--mix",
            "online=0.5,busy=0.5",
            "--manifest",
            str(manifest),
            "--no-live",
        ],
        cwd=project_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "20 vehicles connected" in first, first
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    data = json.loads(manifest.read_text())
    assert data["modes"] == {"online": 10, "busy": 10}
    assert {v["mode"] for v in data["fleet"]} == {"online", "busy"}


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "vehicle_sim", "--help"],
        ["-m", "vehicle_sim", "run", "--help"],
        ["-m", "launcher", "--help"],
        ["-m", "launcher", "demo", "--help"],
    ],
)
def test_every_cli_has_help(argv: list[str]) -> None:
    """--help works on every command line entry point."""
    out = subprocess.run(
        [sys.executable, *argv],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "usage:" in out.stdout


def test_cli_reports_bad_input_clearly(tmp_path: Path) -> None:
    """A bad --mix or scenario exits 2 with a message naming the problem, no traceback."""
    bad = subprocess.run(
        [sys.executable, "-m", "vehicle_sim", "manifest", "--mix", "online=lots"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "--mix" in bad.stderr and "Traceback" not in bad.stderr
    scenario = tmp_path / "s.yaml"
    scenario.write_text("stages: [{at_s: -1, set_mode: online}]")
    bad = subprocess.run(
        [sys.executable, "-m", "vehicle_sim", "manifest", "--scenario", str(scenario)],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "at_s" in bad.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's main job: fleet, gateway, backend, purchases; exit 0 with invariants held."""
    fast = {
        "CAAS_RETRY_MAX_ATTEMPTS": "2",
        "CAAS_RETRY_INITIAL_BACKOFF_S": "0.2",
        "CAAS_RETRY_MAX_BACKOFF_S": "0.5",
        "CAAS_RETRY_ACK_TIMEOUT_S": "1",
        "CAAS_RETRY_STATUS_QUERY_TIMEOUT_S": "0.5",
        "CAAS_RETRY_READY_WAIT_S": "1",
        "CAAS_RETRY_OUTCOME_WAIT_S": "1",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher",
            "demo",
            "--run-dir",
            str(tmp_path / "demo"),
            "--vehicles",
            "30",
            "--no-live",
            "--timeout",
            "90",
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, **fast},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Money invariants HOLD: 0 violation(s)" in out.stdout
    assert "Time to activation" in out.stdout


async def test_sigkilled_per_vehicle_simulator_leaves_wills(
    stack: LocalStack, topics: Topics
) -> None:
    """Killing the simulator process: the broker publishes every vehicle's Will (offline)."""
    from vehicle_sim.fleet import build_fleet

    vins = [s.vin for s in build_fleet(9, 3, {Mode.ONLINE: 1.0})]
    stack.allow_vehicles(vins)
    watch = Watcher(stack, topics)
    watcher = watch.conn
    await watcher.connect(5)
    env = {**os.environ, **stack.env(), "CAAS_TOPIC_ROOT": topics.root}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vehicle_sim", "run", "--vehicles", "3", "--seed", "9",
        "--connection-mode", "per-vehicle", "--broker", stack.env()["CAAS_VEHICLE_MQTT_URL"],
        "--no-live", cwd=project_root(), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(
            lambda: sorted(watch.online()) == sorted(vins) and all(watch.online().values()),
            timeout_s=20,
        )
        proc.kill()
        await wait_until(lambda: not any(watch.online().values()), timeout_s=10)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await watcher.disconnect()
