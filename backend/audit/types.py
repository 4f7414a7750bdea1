"""The violation record shared by the invariant checkers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str
    detail: str
