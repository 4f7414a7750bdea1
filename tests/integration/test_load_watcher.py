"""The Locust activation user's bookkeeping, each in a child process monkey-patched by
gevent as Locust's own processes are.

- The outcome watcher, against a real Redis, follows the events stream from where it
  ended when the watcher started, so an activation that ends before the watcher's first
  read is still seen (it used to read from "$" at that first read, and on a loaded
  machine missed the first activations' outcomes).
- At the stop the CSV files catch up with everything counted: Locust rewrites them on a
  timer and never at exit, so what ended in the last second was missing from them when
  nothing was left in flight (CI: 16 accepted in the summary, 14 in the CSV)."""

from __future__ import annotations

import csv
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from launcher.stack import LocalStack
from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SCENARIO = """
from gevent import monkey

monkey.patch_all()
import json, sys
from loadtest.activation_client import OutcomeWatcher
from protocol.redis_connect import open_redis_sync

url, stream = sys.argv[1], sys.argv[2]
redis = open_redis_sync(url)

def succeeded(activation_id):
    data = json.dumps({"activation_id": activation_id})
    redis.xadd(stream, {"type": "activation.succeeded", "data": data})

succeeded("earlier")  # before the watcher: not this run's
watcher = OutcomeWatcher(url, stream)
watcher.start()
earlier, pending = watcher.register("earlier"), watcher.register("act-1")
succeeded("act-1")  # the watcher's greenlet has not run yet
print(json.dumps({"act-1": pending.final.get(timeout=5)[:2], "earlier": earlier.final.ready()}))
watcher.stop()
redis.delete(stream)
"""


def test_an_outcome_written_before_the_first_read_is_seen(stack: LocalStack) -> None:
    url, stream = stack.env()["CAAS_REDIS_URL"], f"test-watcher-{uuid.uuid4().hex}"
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO, url, stream],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == '{"act-1": [true, ""], "earlier": false}'


CSV_AT_STOP = """
from gevent import monkey

monkey.patch_all()
import sys, types
import gevent
from locust import events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter
import loadtest.locustfile as locustfile

prefix = sys.argv[1]
environment = Environment(events=events)
environment.parsed_options = types.SimpleNamespace(csv_prefix=prefix)
writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, prefix)
gevent.spawn(writer.stats_writer)
gevent.sleep(0.2)  # the writer's first round: nothing counted yet
environment.stats.log_request("OTA", "activation/final", 12, 0)  # ends just before the stop
locustfile.report_in_flight(environment)  # the stop, nothing in flight
writer.close_files()  # what Locust does at exit
"""


def test_the_csv_files_count_what_ended_just_before_the_stop(tmp_path: Path) -> None:
    prefix = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-c", CSV_AT_STOP, str(prefix)],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}
    assert rows.get("activation/final") == 1, rows
