"""Micro-benchmarks behind choices on the message path, each against its alternative
in the same run (ratios, since absolute times drift on a shared machine).

    python -m bench micro
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes

from protocol import paho_fast
from protocol.codec import canonical_bytes


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
    return results


def main() -> int:
    print(json.dumps(run(), indent=2))
    return 0
