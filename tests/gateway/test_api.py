"""The HTTP API (docs/spec.md §3): auth, validation, idempotency, cancel, twins, live queries,
keys and metrics."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.api import create_app
from gateway.service import Gateway, readiness_problem
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.conftest import SimFactory
from tests.gateway.conftest import GatewayFactory, resolved, settings_env
from tests.gateway.vehicle import ScriptedVehicle
from tests.helpers import assert_docs_served_locally, eventually, wait_until
from vehicle_sim.fleet import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
VIN = "CAATR1234SB000901"


def body(**over: object) -> dict[str, object]:
    return {"activation_id": str(uuid.uuid4()), "vin": VIN, "feature": "climate_plus",
            "action": "activate", **over}  # fmt: skip


async def test_token_required_except_health_and_metrics(make_gateway: GatewayFactory) -> None:
    """401 without or with a wrong bearer token; /healthz /readyz /metrics stay open."""
    async with make_gateway() as gw:
        client = gw.client
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
            client.headers.update(headers)
            assert (await client.post("/v1/activations", json=body())).status_code == 401
            assert (await client.get("/v1/activations/x")).status_code == 401
            assert (await client.get("/v1/keys")).status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200


async def test_docs_work_offline(make_gateway: GatewayFactory) -> None:
    async with make_gateway() as gw:
        await assert_docs_served_locally(gw.client)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"vin": "CAATR1234SB00090I"}, "vin"),  # I is not in the VIN alphabet
        ({"vin": "SHORT"}, "vin"),
        ({"action": "enable"}, "action"),
        ({"feature": "Climate Plus"}, "feature"),
        ({"activation_id": ""}, "activation_id"),
        ({"policy": {"jitter_ratio": 1.5}}, "jitter_ratio"),
        ({"policy": {"max_attempts": 0}}, "max_attempts"),
        ({"policy": {"retries": 3}}, "retries"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_clear_422(
    make_gateway: GatewayFactory, over: dict[str, object], field: str
) -> None:
    """Bad VIN, action, feature, id or policy → 422 naming the field; nothing stored."""
    async with make_gateway() as gw:
        response = await gw.client.post("/v1/activations", json=body(**over))
        assert response.status_code == 422
        assert field in response.text
        assert await gw.events() == []


async def test_inconsistent_policy_is_refused(make_gateway: GatewayFactory) -> None:
    """A policy whose fields contradict each other (max < initial backoff) → 422."""
    async with make_gateway() as gw:
        policy = {"initial_backoff_s": 10, "max_backoff_s": 5}
        response = await gw.client.post("/v1/activations", json=body(policy=policy))
        assert response.status_code == 422
        assert "max_backoff_s" in response.text


async def test_post_is_idempotent_on_activation_id(make_gateway: GatewayFactory) -> None:
    """Same body → 200 and the same resource; another body under the id → 409."""
    async with make_gateway() as gw:
        request = body(policy={"max_attempts": 2})
        first = await gw.client.post("/v1/activations", json=request)
        assert first.status_code == 202
        again = await gw.client.post("/v1/activations", json=request)
        assert again.status_code == 200
        assert again.json()["activation_id"] == first.json()["activation_id"]
        assert again.json()["created_at"] == first.json()["created_at"]
        other = await gw.client.post("/v1/activations", json={**request, "feature": "x_y"})
        assert other.status_code == 409
        accepted = [e for e in await gw.events() if e["type"] == "activation.accepted"]
        assert len(accepted) == 1
        assert first.json()["policy"]["max_attempts"] == 2


async def test_get_unknown_is_404(make_gateway: GatewayFactory) -> None:
    """Unknown activation ids and unheard-of vehicles are 404."""
    async with make_gateway() as gw:
        assert (await gw.client.get("/v1/activations/nope")).status_code == 404
        assert (await gw.client.post("/v1/activations/nope/cancel")).status_code == 404
        assert (await gw.client.get(f"/v1/vehicles/{VIN}")).status_code == 404
        assert (await gw.client.get("/v1/vehicles/bad")).status_code == 422


async def test_errors_are_the_shared_body(make_gateway: GatewayFactory) -> None:
    """Every error is {"error": code, "detail": …} (protocol/http_errors.py), as the
    backend's and the payment provider's are; a 422 lists its problems."""
    async with make_gateway() as gw:
        missing = await gw.client.get("/v1/activations/nope")
        assert missing.json() == {"error": "not_found", "detail": "no activation nope"}
        cancel = await gw.client.post("/v1/activations/nope/cancel")
        assert cancel.json() == {"error": "not_found", "detail": "no activation nope"}
        unheard = await gw.client.get(f"/v1/vehicles/{VIN}")
        assert unheard.json() == {"error": "not_found", "detail": f"nothing heard from {VIN}"}
        bad_vin = await gw.client.get("/v1/vehicles/bad")
        assert bad_vin.json()["error"] == "invalid_request"
        assert bad_vin.json()["detail"][0]["loc"] == ["path", "vin"]
        invalid = await gw.client.post("/v1/activations", json=body(vin="SHORT"))
        assert invalid.json()["error"] == "invalid_request"
        assert invalid.json()["detail"][0]["loc"] == ["body", "vin"]
        policy = {"initial_backoff_s": 10, "max_backoff_s": 5}
        refused = await gw.client.post("/v1/activations", json=body(policy=policy))
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "policy"]
        request = body()
        assert (await gw.client.post("/v1/activations", json=request)).status_code == 202
        reused = await gw.client.post("/v1/activations", json={**request, "feature": "x_y"})
        assert (reused.status_code, reused.json()["error"]) == (409, "activation_id_reused")
        path = f"/v1/activations/{request['activation_id']}/cancel"
        assert (await gw.client.post(path)).status_code == 200
        again = await gw.client.post(path)
        assert (again.status_code, again.json()["error"]) == (409, "activation_ended")
        gw.client.headers["Authorization"] = "Bearer nope"
        unauthorized = await gw.client.get("/v1/activations/nope")
        assert unauthorized.json() == {
            "error": "unauthorized",
            "detail": "missing or wrong bearer token",
        }
        assert unauthorized.headers["www-authenticate"] == "Bearer"


async def test_cancel_then_cancel_again(make_gateway: GatewayFactory) -> None:
    """Cancel of a waiting activation → CANCELLED + event; cancelling again → 409."""
    async with make_gateway() as gw:  # no vehicle: it waits for readiness
        created = await gw.activate(VIN, "climate_plus")
        path = f"/v1/activations/{created['activation_id']}/cancel"
        cancelled = await gw.client.post(path)
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "CANCELLED"
        assert (await gw.client.post(path)).status_code == 409
        types = [e["type"] for e in await gw.events()]
        assert types.count("activation.cancelled") == 1


async def test_twin_and_live_queries(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """GET twin shows state, presence and RTT; live status and diagnostics queries answer."""
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        status = await gw.client.post(f"/v1/vehicles/{spec.vin}/status-query")
        assert status.status_code == 200, status.text
        assert status.json()["state"]["vin"] == spec.vin
        diag = await gw.client.post(f"/v1/vehicles/{spec.vin}/diagnostics")
        assert diag.status_code == 200
        assert diag.json()["diagnostics"]["model"] == spec.model
        twin = (await gw.client.get(f"/v1/vehicles/{spec.vin}")).json()
        assert twin["online"] is True
        assert twin["state"]["model"] == spec.model
        assert twin["rtt"]["count"] >= 2
        assert twin["last_seen"] is not None


async def test_live_query_times_out_with_504(
    make_gateway: GatewayFactory, make_sim: SimFactory
) -> None:
    """A vehicle that never answers → 504 after status_query_timeout_s."""
    async with (
        make_sim(vehicles=1, mix={Mode.TIMEOUT: 1}) as sim,
        make_gateway(status_query_timeout_s=0.3) as gw,
    ):
        response = await gw.client.post(f"/v1/vehicles/{sim.specs[0].vin}/status-query")
        assert response.status_code == 504
        assert response.json()["error"] == "query_timeout"


@pytest.mark.timeout(60)
@pytest.mark.standalone_only
async def test_redis_down_answers_503_then_recovers(
    make_gateway: GatewayFactory, stack: LocalStack
) -> None:
    """Redis SIGKILLed: reads and writes answer 503 with Retry-After within seconds (not
    500, not a hang); once Redis is back (AOF), the same requests work again."""
    assert stack.redis is not None
    async with make_gateway() as gw:
        created = await gw.activate(VIN, "climate_plus")
        await asyncio.to_thread(stack.redis.kill)
        try:
            started = time.monotonic()
            read = await gw.client.get(f"/v1/activations/{created['activation_id']}")
            write = await gw.client.post("/v1/activations", json=body())
            assert (read.status_code, write.status_code) == (503, 503)
            assert read.headers["retry-after"] == "1"
            assert "unavailable" in read.json()["detail"]
            assert read.json()["error"] == write.json()["error"] == "store_unavailable"
            assert time.monotonic() - started < 15
        finally:
            await asyncio.to_thread(stack.redis.start)

        async def ready() -> bool:
            return (await gw.client.get("/readyz")).status_code == 200

        await eventually(ready, 20)
        again = await gw.client.get(f"/v1/activations/{created['activation_id']}")
        assert again.status_code == 200


@pytest.mark.timeout(60)
async def test_broker_down_live_query_503_activation_accepted(
    make_gateway: GatewayFactory, stack: LocalStack
) -> None:
    """Broker SIGKILLed: a live query answers 503 at once (it cannot be sent), while a
    new activation is still accepted (202: durable in Redis, sent when the broker is back)."""
    async with make_gateway() as gw:
        assert gw.gateway is not None
        await asyncio.to_thread(stack.broker.kill)
        try:
            await wait_until(lambda: gw.gateway is not None and not gw.gateway.dispatcher.connected)
            started = time.monotonic()
            query = await gw.client.post(f"/v1/vehicles/{VIN}/status-query")
            assert query.status_code == 503
            assert time.monotonic() - started < 1.0
            assert "broker" in query.json()["detail"]
            assert query.json()["error"] == "broker_unavailable"
            created = await gw.client.post("/v1/activations", json=body())
            assert created.status_code == 202
        finally:
            await asyncio.to_thread(stack.broker.start)


async def test_keys_serves_the_public_pem(make_gateway: GatewayFactory, stack: LocalStack) -> None:
    """GET /v1/keys returns the gateway's public key, the one vehicles verify with."""
    async with make_gateway() as gw:
        response = await gw.client.get("/v1/keys")
        assert response.status_code == 200
        assert response.text == stack.public_key_path.read_text()


async def test_metrics_names_and_no_vin(make_gateway: GatewayFactory, make_sim: SimFactory) -> None:
    """/metrics exposes the caas_gateway_* families after traffic and never a VIN."""
    async with make_sim(vehicles=1) as sim, make_gateway() as gw:
        spec = sim.specs[0]
        created = await gw.activate(spec.vin, spec.installed_features[0])
        await gw.wait_terminal(created["activation_id"])
        text = (await gw.client.get("/metrics")).text
        for name in (
            "caas_gateway_attempts_total",
            "caas_gateway_activations_total",
            "caas_gateway_first_attempt_success_ratio",
            "caas_gateway_attempts_to_success_bucket",
            "caas_gateway_time_to_activation_seconds_bucket",
            "caas_gateway_escalations_total",
            "caas_gateway_in_flight",
            "caas_gateway_scheduled_timers",
            "caas_gateway_twin_age_seconds_bucket",
            "caas_gateway_mqtt_reconnects_total",
            "caas_gateway_command_rtt_seconds_bucket",
        ):
            assert name in text, name
        assert 'caas_gateway_activation_states{state="SUCCEEDED"} 1.0' in text
        assert "caas_gateway_first_attempt_success_ratio 1.0" in text
        assert spec.vin not in text


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("broker", "redis", "booted", "reason"),
    [
        (True, True, True, None),
        (True, True, False, "twin_bootstrap_running"),
        (True, False, False, "redis_unavailable"),
        (False, True, True, "broker_disconnected"),
        (False, False, False, "broker_disconnected"),
    ],
)
def test_readiness_names_the_first_problem(
    broker: bool, redis: bool, booted: bool, reason: str | None
) -> None:
    """Ready only with the broker up, Redis answering and the twins loaded."""
    got = readiness_problem(broker_connected=broker, redis_answers=redis, bootstrapped=booted)
    assert got == reason


async def test_ready_only_after_the_twin_bootstrap(
    stack: LocalStack, topics: Topics, redis_db: int
) -> None:
    """A worker starting beside a car that left its retained state: /readyz is 503
    (twin_bootstrap_running) until that state is in the twin, then 200 with the twin there."""
    cfg = resolved(settings_env(stack, topics, redis_db))
    plain = aioredis.Redis.from_url(cfg.redis_url, decode_responses=True)
    await plain.flushdb()
    await plain.aclose()
    car = ScriptedVehicle(stack.broker.fleet_address(), topics, [])
    async with car:
        gateway = Gateway(cfg)
        app = create_app(gateway, manage_lifespan=False)
        headers = {"Authorization": f"Bearer {stack.secrets['gateway_token']}"}
        async with (
            gateway.running(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=headers
            ) as client,
        ):
            first = await client.get("/readyz")
            assert first.status_code == 503
            assert first.json() == {"ready": False, "reason": "twin_bootstrap_running"}
            while (answer := await client.get("/readyz")).status_code != 200:
                assert answer.json()["reason"] == "twin_bootstrap_running"
                await asyncio.sleep(0.02)
            assert answer.json() == {"ready": True, "reason": None}
            twin = await client.get(f"/v1/vehicles/{car.vin}")
            assert twin.status_code == 200, twin.text
            assert twin.json()["state"]["vin"] == car.vin
            assert twin.json()["online"] is True
