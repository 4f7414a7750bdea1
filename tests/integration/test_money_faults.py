"""The money boundary under SIGKILL, at test size: the backend, the payment provider,
or both killed with purchases in flight (SQLite and PostgreSQL between them), counted
from outside as ``python -m bench money-faults`` counts (docs/performance.md has the
full-size runs of all six). Nothing may be lost, held, given away, charged twice or
mailed twice."""

from __future__ import annotations

import pytest

from bench.money_faults import run_scenario

pytestmark = [pytest.mark.timeout(300), pytest.mark.serial]


# the demo's policy, shorter still: the fleet's answers come back within seconds
QUICK = {
    "CAAS_RETRY_MAX_BACKOFF_S": "2",
    "CAAS_RETRY_ACK_TIMEOUT_S": "2",
    "CAAS_RETRY_READY_WAIT_S": "3",
    "CAAS_RETRY_OUTCOME_WAIT_S": "4",
}


@pytest.mark.parametrize(
    ("scenario", "database"),
    [("backend-kill", "sqlite"), ("provider-kill", "postgres"), ("both-kill", "postgres")],
)
async def test_killed_mid_flight(scenario: str, database: str) -> None:
    report = await run_scenario(
        scenario, database, vehicles=80, in_flight=30, concurrency=30, log=False, env=QUICK
    )
    assert report.in_flight_at_kill >= 30
    assert report.settled, report
    assert report.violations == []
    assert report.holds_left_open == report.active_never_charged == 0
    assert report.double_captures == report.charged_notice_without_capture == 0
    assert report.emails_twice == 0
    assert report.answers.get("202", 0) == sum(report.purchases_by_state.values())
    assert report.ok
