"""Micro-benchmarks behind choices on the message path, each against its alternative
in the same run (ratios, since absolute times drift on a shared machine).

    python -m bench micro
"""

from __future__ import annotations

import asyncio
import json
import time
import timeit
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import nacl.signing
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes

from gateway import intake, store
from gateway.activation import Action, Activation, Attempt, AttemptResult
from gateway.api import create_app
from gateway.policy import RetryPolicy
from protocol import paho_fast
from protocol.codec import canonical_bytes
from protocol.models import Response
from protocol.timeutil import format_ts


def per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def publish_properties(cls: Any) -> Callable[[], object]:
    def build() -> object:
        props = cls(PacketTypes.PUBLISH)
        props.ResponseTopic = "caas/v1/vehicles/CAATRL9A5SB000000/responses"
        props.CorrelationData = b"5f0b0c8e-8d6c-4a43-9b8a-3c2f1f8c9a10"
        props.MessageExpiryInterval = 120
        packed = props.pack()
        return cls(PacketTypes.PUBLISH).unpack(packed)

    return build


def run() -> dict[str, dict[str, float]]:
    key = Ed25519PrivateKey.generate()
    message = canonical_bytes({"v": 1, "command_id": "x" * 36, "vin": "V" * 17, "pad": "p" * 200})
    signature = key.sign(message)
    public = key.public_key()
    # the same raw operation on the same bytes in both libraries
    sodium_key = nacl.signing.SigningKey(key.private_bytes_raw())
    sodium_public = nacl.signing.VerifyKey(public.public_bytes_raw())
    results = {
        "ed25519_sign": {
            "cryptography_us": per_call_us(lambda: key.sign(message), 500),
            "libsodium_us": per_call_us(lambda: sodium_key.sign(message), 500),
        },
        "ed25519_verify": {
            "cryptography_us": per_call_us(lambda: public.verify(signature, message), 500),
            "libsodium_us": per_call_us(lambda: sodium_public.verify(message, signature), 500),
        },
        "mqtt5_publish_properties_pack_unpack": {
            "paho_us": per_call_us(publish_properties(paho_fast._ORIGINAL), 500),
            "fast_us": per_call_us(publish_properties(paho_fast.FastProperties), 500),
        },
    }
    for row in results.values():
        slow, fast = row.values()
        row["speedup"] = round(slow / fast, 2)
        for name in list(row):
            row[name] = round(row[name], 2)
    results["vehicle_answer_intake"] = intake_cost()
    results["post_activation"] = post_activation_cost()
    results["activation_record_json"] = record_json_cost()
    return results


def intake_cost() -> dict[str, float]:
    """What the gateway's intake (size, depth, schema bounds, clamped clocks) costs per
    answer over the least any parse does (json.loads + the wire model), same bytes."""
    vin = "CAATR1234SB000901"
    now = format_ts(time.time())
    state = {"vin": vin, "model": "Tourer", "firmware": "5.0.2", "online": True,
             "power": "off", "moving": False, "speed_kmh": 0.0, "gear": "P", "busy": False,
             "installed_features": ["climate_plus", "power_boost_50"],
             "active_features": ["climate_plus"], "seq": 3, "at": now}  # fmt: skip
    payload = canonical_bytes({
        "v": 1, "command_id": "5f0b0c8e-8d6c-4a43-9b8a-3c2f1f8c9a10", "vin": vin,
        "type": "activate", "status": "ack", "reason": None, "retry_after_s": None,
        "state": state, "diagnostics": None, "at": now})  # fmt: skip
    bare = per_call_us(lambda: Response.model_validate(json.loads(payload)), 5000)
    full = per_call_us(lambda: intake.read_response(vin, payload, None, time.time()), 5000)
    return {"bare_parse_us": round(bare, 2), "intake_us": round(full, 2),
            "cost_ratio": round(full / bare, 2), "speedup": round(bare / full, 2)}  # fmt: skip


def record_json_cost() -> dict[str, float]:
    """An activation's stored record written and read back (each commit writes one,
    each answer reads one): the stdlib's json against orjson, the same record."""
    now = time.time()
    attempt = Attempt(1, "5f0b0c8e-8d6c-4a43-9b8a-3c2f1f8c9a10", now, {"seq": 3}, True, "ack",
                      None, AttemptResult.SUCCESS)  # fmt: skip
    act = Activation("8c1f3f0e-5b1e-4d7c-9a55-1f2b3c4d5e6f", "CAATR1234SB000901",
                     "climate_plus", Action.ACTIVATE, RetryPolicy(), now, now,
                     attempts=(attempt,), rtts_ms=(1.6,))  # fmt: skip
    record = act.to_record()
    stdlib = per_call_us(lambda: json.loads(store.dumps(record)), 5000)  # the old writer
    fast = per_call_us(lambda: orjson.loads(orjson.dumps(record)), 5000)
    return {"json_us": round(stdlib, 2), "orjson_us": round(fast, 2),
            "speedup": round(stdlib / fast, 2)}  # fmt: skip


class _CreatedAtOnce:
    """An engine that stores nothing: the request's own cost, without Redis."""

    async def create(self, **kw: Any) -> tuple[Activation, bool]:
        now = 1.7e9
        act = Activation(kw["activation_id"], kw["vin"], kw["feature"], kw["action"],
                         kw["policy"], now, now, due_at=now)  # fmt: skip
        return act, True


def post_activation_cost() -> dict[str, float]:
    """CPU per ``POST /v1/activations`` in the gateway's app (engine stubbed): the plain
    route for a well-formed request (``gateway/fast_path.py``) against the FastAPI route
    alone (the same app without the plain route), the same request through ASGI."""
    token = "micro-token"
    gateway = SimpleNamespace(cfg=SimpleNamespace(token=token, policy=RetryPolicy()),
                              engine=_CreatedAtOnce())  # fmt: skip
    with_fast = create_app(cast(Any, gateway), manage_lifespan=False)
    framework_only = create_app(cast(Any, gateway), manage_lifespan=False)
    framework_only.router.routes.pop(0)  # the plain route is the first
    body = json.dumps({"activation_id": "a1", "vin": "CAATR1234SB000901",
                       "feature": "climate_plus", "action": "activate"}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/json"),
               (b"authorization", f"Bearer {token}".encode()),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    framework = asyncio.run(_asgi_cpu_us(framework_only, body, headers, 2000))
    fast = asyncio.run(_asgi_cpu_us(with_fast, body, headers, 2000))
    return {"fastapi_route_us": round(framework, 1), "plain_route_us": round(fast, 1),
            "speedup": round(framework / fast, 2)}  # fmt: skip


async def _asgi_cpu_us(app: Any, body: bytes, headers: list[Any], number: int) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/activations",
             "raw_path": b"/v1/activations", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def once() -> None:
        await app({**scope, "state": {}}, receive, send)

    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(number):
            await once()
        best = min(best, time.process_time() - started)
    if set(statuses) != {202}:
        raise RuntimeError(f"POST /v1/activations answered {set(statuses)}, not 202")
    return best / number * 1e6


def main() -> int:
    print(json.dumps(run(), indent=2))
    return 0
