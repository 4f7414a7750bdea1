"""Provider fixtures: a ledger on a SQLite file in the test's folder, a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paysim.ledger import Answer, Call, Ledger
from paysim.modes import FailureModes
from paysim.store import Store
from protocol.timeutil import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_795_000_000.0)


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    store = Store(tmp_path / "paysim.sqlite3")
    yield Ledger(store, FailureModes(settle_delay_s=5.0), clock)
    store.close()


def call(ledger: Ledger, op: str, key: str, target: str = "", **request: Any) -> Answer:
    return ledger.handle(Call(op, key, target, request))


def hold(ledger: Ledger, key: str = "auth-1", amount: int = 1000) -> str:
    """A fresh authorization's id."""
    answer = call(ledger, "authorize", key, reference=f"ref-{key}", amount_cents=amount,
                  currency="EUR")  # fmt: skip
    assert answer.status == 201, answer
    return str(answer.body["id"])
