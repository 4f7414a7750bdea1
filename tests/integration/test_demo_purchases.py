"""The Locust purchase user runs against the demo's platform: the demo writes its
customers and their tokens to the run folder (0600), the purchase user reads them; the
services log at info into the run folder."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from launcher.demo import CUSTOMERS_FILE, DemoOptions, seed_customers, start_platform, stop_platform
from launcher.errors import ServiceFailed
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.conftest import project_root
from tests.gateway.conftest import next_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_locust_purchase_user_buys_as_the_demos_customers(
    stack: LocalStack, topics: Topics, tmp_path: Path
) -> None:
    """customers.json is 0600 and holds every seeded customer's token; PurchaseUser with
    it buys and sees the charge (exit 0, thresholds met); every service's log has info
    lines; seeding the demo's database again is refused and customers.json kept."""
    scenario = tmp_path / "fleet.yaml"
    scenario.write_text(yaml.safe_dump({"name": "online", "mix": {"online": 1}}))
    assert stack.redis is not None
    redis_url = stack.redis.url(next_db())
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    opts = DemoOptions(
        run_dir=tmp_path / "demo",
        vehicles=10,
        live=False,
        scenario=scenario,
        extra_env={"CAAS_TOPIC_ROOT": topics.root, "CAAS_REDIS_URL": redis_url},
    )
    opts.run_dir.mkdir()
    platform = start_platform(stack, opts)
    try:
        customers, _ = seed_customers(platform)
        kept = platform.run_dir / CUSTOMERS_FILE
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        saved = json.loads(kept.read_text())
        assert [c["token"] for c in saved["customers"]] == [c.token for c in customers]
        run = subprocess.run(
            [
                sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless",
                "-u", "3", "-r", "3", "-t", "5s", "--csv", str(tmp_path / "buy"),
                "--only-summary", "PurchaseUser",
            ],
            cwd=project_root(),
            env={
                **os.environ,
                "CAAS_LOAD_SEED_FILE": str(kept),
                "CAAS_LOAD_BACKEND_URL": platform.backend_url,
                "CAAS_LOAD_MAX_FAIL_RATIO": "0",
                "CAAS_LOAD_MAX_P95_MS": "60000",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        with Path(f"{tmp_path / 'buy'}_stats.csv").open() as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}
        assert int(rows["purchase/charged"]["Request Count"]) > 0
        assert int(rows["Aggregated"]["Failure Count"]) == 0
        with pytest.raises(ServiceFailed, match="seeded before"):
            seed_customers(platform)  # the same database again: a clear refusal
        assert json.loads(kept.read_text()) == saved  # the first tokens kept
        for log in ("gateway.log", "backend.log", "paysim.log", "vehicle_sim.log"):
            assert " level=INFO " in (platform.run_dir / log).read_text(), log
    finally:
        stop_platform(platform)
