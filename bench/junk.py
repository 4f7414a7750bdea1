"""Junk derived from valid vehicle messages: what a broken or hostile car might send.

``mutate`` turns one valid payload into one junk payload (flipped bytes, cuts, deep
nesting, non-finite numbers, out-of-range times and sequence numbers, bogus feature
names, other JSON types), deterministic for a seeded RNG. Used by the gateway's intake
tests and by ``python -m bench faults junk``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from protocol.models import MAX_SEQ

ODD_VALUES: list[Any] = [
    None, -1, 10**30, 1.5, "", "x" * 5000, [], {}, [[[[]]]], True, "\n\r\t",
    "2096-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00Z",
]  # fmt: skip
SPLICES = [b"[" * 3000, b"{" * 40, b"NaN", b"1e999", b"\x00", b'"']
BAD_NAMES = ["a", "../x", "é", "A", "a" * 65, "../../etc/passwd", "x\ny"]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One junk payload derived from ``seed`` (a valid JSON object)."""
    kind = rng.randrange(8)
    if kind == 0:
        data = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 1:
        return seed[: rng.randrange(len(seed))]
    if kind == 2:
        cut = rng.randrange(len(seed))
        return seed[:cut] + rng.choice(SPLICES) + seed[cut:]
    if kind == 3:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 4:
        return json.dumps(rng.choice([[], "", 0, None, {"v": 1}])).encode()
    body = json.loads(seed)
    target = body["state"] if isinstance(body.get("state"), dict) else body
    if kind == 5:
        target[rng.choice(sorted(target))] = rng.choice(ODD_VALUES)
    elif kind == 6:
        target["seq"] = rng.choice([0, MAX_SEQ, MAX_SEQ + 1, 10**30])
        target["at"] = rng.choice(["2096-01-01T00:00:00Z", "bad", "1970-01-01T00:00:00Z"])
    else:
        names = [rng.choice(BAD_NAMES) for _ in range(rng.randint(0, 200))]
        target["installed_features"] = target["active_features"] = names
    return json.dumps(body).encode()
