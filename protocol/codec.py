"""JSON on the wire.

``canonical_bytes`` is the exact byte form SPEC §2.1 signs: sorted keys, no spaces,
non-ASCII kept as UTF-8. It is used for signing and verifying only; payloads may be
sent in the same form (they are, by this project) but a receiver must never assume it.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signable_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical bytes of ``obj`` without its ``sig`` field."""
    return canonical_bytes({k: v for k, v in obj.items() if k != "sig"})


def loads_object(payload: bytes) -> dict[str, Any]:
    """Parse a JSON object; ValueError for anything else (bad UTF-8, bad JSON, not an object)."""
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("payload is JSON but not an object")
    return value
