"""The money boundary under SIGKILL, at test size: the backend and the payment provider
killed together with purchases in flight, on SQLite and on PostgreSQL, counted from
outside as ``python -m bench money-faults`` counts (docs/performance.md has the full
size run). Nothing may be lost, held, given away, charged twice or mailed twice."""

from __future__ import annotations

import pytest

from bench.money_faults import run_scenario

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_backend_and_provider_killed_mid_flight(database: str) -> None:
    report = await run_scenario(
        "both-kill", database, vehicles=160, in_flight=50, concurrency=40, log=False
    )
    assert report.in_flight_at_kill >= 50
    assert report.settled, report
    assert report.violations == []
    assert report.holds_left_open == report.active_never_charged == 0
    assert report.double_captures == report.charged_notice_without_capture == 0
    assert report.emails_twice == 0
    assert report.answers.get("202", 0) == sum(report.purchases_by_state.values())
    assert report.ok
