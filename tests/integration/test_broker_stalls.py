"""`python -m bench broker-stalls`: the project's broker never saves while it runs (a
save stalls every message), and the baseline broker beside it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_bench import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_the_projects_broker_saves_only_at_exit(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "broker-stalls", "--retained", "3000", "--seconds", "3",
                       "--baseline-autosave", "1")  # fmt: skip
    before, project = report["before"], report["project"]
    assert before["autosave_interval_s"] == 1
    assert before["saves"] >= 1, "the baseline's periodic save is what is measured against"
    assert project["autosave_interval_s"] == 0
    assert project["saves"] == 0, "the project's broker saved while it ran"
    for phase in (before, project):
        assert phase["round_trips"] > 100
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
        assert phase["db_bytes"] > 3000 * 100, "retained messages saved at the clean stop"
