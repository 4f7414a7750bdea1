"""Load stages (ramp, soak, spike) from ``CAAS_LOAD_STAGES``; no Locust import here, so
it is importable without gevent's monkey-patching."""

from __future__ import annotations


def parse_stages(text: str) -> list[tuple[str, float, int]]:
    """``ramp:30:50,soak:60:50`` → [(name, seconds, users), ...]."""
    stages = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, seconds, users = part.split(":")
        stages.append((name, float(seconds), int(users)))
    return stages


def users_at(stages: list[tuple[str, float, int]], elapsed_s: float) -> int | None:
    """Users wanted ``elapsed_s`` into the run; None once every stage is over."""
    for _, seconds, users in stages:
        if elapsed_s < seconds:
            return users
        elapsed_s -= seconds
    return None
