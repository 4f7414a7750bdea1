"""JSON on the wire.

``canonical_bytes`` is the exact byte form docs/spec.md §2.1 signs: sorted keys, no spaces,
non-ASCII kept as UTF-8. It is used for signing and verifying only; payloads may be
sent in the same form (they are, by this project) but a receiver must never assume it.

``loads_object`` is how every MQTT payload is read, whoever sent it. A payload is
somebody else's bytes, so before ``json.loads`` sees them they are checked for size and
nesting depth (deep nesting is how a few kilobytes make the parser raise
RecursionError), and numbers that JSON cannot carry (NaN, Infinity, ``1e999``) are
refused rather than turned into floats that later fail to serialise. Every refusal is
a ``PayloadRejected`` with a reason from a fixed set, so callers can count them with
bounded metric labels.
"""

from __future__ import annotations

import json
import re
from typing import Any

from protocol.errors import PayloadRejected

MAX_PAYLOAD_BYTES = 64 * 1024  # a state, a response or a command is well under 4 KiB
MAX_JSON_DEPTH = 8  # a Response nests 4 deep (response → diagnostics → modem → value)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signable_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical bytes of ``obj`` without its ``sig`` field."""
    return canonical_bytes({k: v for k, v in obj.items() if k != "sig"})


def json_depth(payload: bytes) -> int:
    """Deepest nesting of arrays/objects in ``payload``, without parsing it (brackets
    inside strings do not count). Linear in the payload's size."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_object(
    payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """Parse a JSON object from the wire; ``PayloadRejected`` (a ValueError) for anything
    else: too large, nested too deep, not UTF-8 JSON, a non-finite number, not an object."""
    if len(payload) > max_bytes:
        raise PayloadRejected("too_large", f"{len(payload)} bytes (limit {max_bytes})")
    # a payload with no more brackets than the limit cannot nest deeper: skip the scan
    brackets = payload.count(b"[") + payload.count(b"{")
    if brackets > max_depth and json_depth(payload) > max_depth:
        raise PayloadRejected("too_deep", f"nested deeper than {max_depth}")
    try:
        value = _DECODER.decode(payload.decode())
    except PayloadRejected:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadRejected("not_json", type(exc).__name__) from None
    if not isinstance(value, dict):
        raise PayloadRejected("not_object", f"JSON {type(value).__name__}, not an object")
    return value


def _refuse_constant(name: str) -> float:
    raise PayloadRejected("non_finite", f"{name} is not a JSON number")


# NaN and Infinity are refused here; a number too large for a float (1e999) parses as
# infinity and is then refused by the schema, where every float has bounds (a float
# hook here would cost every message a Python call per number: +40 % parse time).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
