"""Stable random streams: every vehicle and every command draws from its own RNG,
seeded with a blake2b digest of (seed, vin[, command_id]), so outcomes never depend
on the order in which messages happen to be interleaved (docs/spec.md §2.4)."""

from __future__ import annotations

import hashlib
import random


def stable_seed(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def stable_rng(*parts: object) -> random.Random:
    return random.Random(stable_seed(*parts))
