"""Micro-benchmarks behind choices on the message path, each against its alternative
in the same run (ratios, since absolute times drift on a shared machine).

    python -m bench micro
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes

from gateway import intake
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


def main() -> int:
    print(json.dumps(run(), indent=2))
    return 0
