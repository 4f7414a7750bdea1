"""Bounded Prometheus label values, shared by the services' metrics."""

from __future__ import annotations


class BoundedLabel:
    """A label whose values are not ours to choose (feature names from API callers,
    vehicle models and services from data): the first ``limit`` distinct values keep
    their name, every later one is counted as ``other``, so a flood of names cannot
    create a flood of series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(value)
        return value
