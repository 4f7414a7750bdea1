"""The benchmark harnesses run and report what they promise (correctness, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.activations import HOPS, hops
from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), pytest.mark.serial]


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run `python -m bench ARGS --json FILE`; its report (failing on a non-zero exit)."""
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json", str(out)],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_activation_benchmark_smoke(tmp_path: Path) -> None:
    """`python -m bench activations` writes the JSON fields issue 6 names, all activations done."""
    report = run_bench(
        tmp_path,
        "activations",
        "--vehicles",
        "1500",
        "--duration",
        "1",
        "--workers",
        "1",
        "--window",
        "10,20",
    )
    for key in ("raw_echo_per_s", "activations_per_s", "ratio", "p50_ms", "p99_ms", "cpus"):
        assert key in report
    assert report["raw_echo_per_s"] > 0
    assert report["activations_per_s"] > 0
    assert report["phases"][0]["window"] in (10, 20), "the sustained window is a probed one"
    for phase in report["phases"]:
        assert phase["failed"] == 0
        assert phase["http_errors"] == 0
        assert phase["accepted"] == phase["succeeded"]
        assert len(phase["slowest"]) >= min(5, phase["succeeded"]) > 0
        sent = [slow["sent_at_s"] for slow in phase["slowest"]]
        assert sent == sorted(sent) and sent[0] >= 0 and sent[-1] <= phase["seconds"] + 1
        for slow in phase["slowest"]:  # cut at the stream's entries: ms, one clock
            assert -1 <= slow["to_accepted_ms"] <= slow["to_terminal_ms"] <= slow["to_seen_ms"]
            assert abs(slow["to_seen_ms"] - slow["ms"]) < 0.2
        assert min(slow["ms"] for slow in phase["slowest"]) >= phase["p50_ms"]
        hops = phase["hops_p50_ms"]  # read back from the gateway's stored records
        assert set(hops) == {*HOPS}, hops
        # the vehicle's timestamp has whole ms: its hop is known to ±0.5 ms
        assert -0.5 < hops["vehicle_to_read"] < hops["command_round_trip"] < phase["p50_ms"]
        assert hops["to_first_step"] > 0 and hops["answer_to_terminal"] > 0
    assert set(report["cpu_ms_per_activation"]) >= {"gateway-0", "vehicle_sim", "redis-server"}


def test_hops_of_a_stored_record() -> None:
    """The hops are the differences between the record's marks; an activation with a
    second attempt or round trip has none, one without the answer's state no
    vehicle_to_read."""
    record = {
        "created_at": 100.000,
        "updated_at": 100.010,
        "attempts": [{"at": 100.002}],
        "rtts_ms": [5.0],
        "snapshots": [{"at": "1970-01-01T00:01:39.000Z"}, {"at": "1970-01-01T00:01:40.004Z"}],
    }
    got = hops(record)
    assert got is not None
    assert got == pytest.approx(
        {"to_first_step": 2.0, "command_round_trip": 5.0, "vehicle_to_read": 2.5,
         "answer_to_terminal": 3.0}, abs=1e-6)  # fmt: skip
    assert set(got) == set(HOPS)
    assert hops({**record, "rtts_ms": [5.0, 1.0]}) is None
    assert hops({**record, "attempts": [{"at": 100.002}, {"at": 160.0}]}) is None
    assert "vehicle_to_read" not in (hops({**record, "snapshots": record["snapshots"][:1]}) or {})


def test_micro_benchmark_reports_ratios() -> None:
    """`python -m bench micro` compares each choice with its alternative on the same bytes."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "micro"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(run.stdout)
    rows = {"ed25519_sign", "ed25519_verify", "mqtt5_publish_properties_pack_unpack",
            "vehicle_answer_intake", "post_activation", "activation_record_json"}  # fmt: skip
    assert rows <= set(report)
    assert all(row["speedup"] > 0 for row in report.values())


def counts(csv_prefix: Path) -> dict[str, tuple[int, int]]:
    """(requests, failures) by request name from a Locust run's ``_stats.csv``."""
    import csv

    with Path(f"{csv_prefix}_stats.csv").open() as f:
        return {
            r["Name"]: (int(r["Request Count"]), int(r["Failure Count"])) for r in csv.DictReader(f)
        }


def test_locust_headless_exit_code_is_the_verdict_and_counts_activations_in_flight(
    tmp_path: Path,
) -> None:
    """Locust against a real gateway + fleet: accepted/ack/final in the CSV, as many finals
    as accepted; exit 0 when the thresholds hold, 1 past a limit; activations still in
    flight at the stop (vehicles that never answer, no drain time) are failures."""
    import os
    import tempfile

    from bench.activations import start_fleet, start_gateways
    from launcher.stack import LocalStack, StackOptions
    from vehicle_sim.fleet import build_fleet, parse_mix
    from vehicle_sim.manifest import manifest, write_manifest

    with (
        tempfile.TemporaryDirectory() as run_dir,
        LocalStack(StackOptions(run_dir=Path(run_dir), acl_root="caas/+")) as stack,
    ):
        write_manifest(
            tmp_path / "fleet.json",
            manifest(3, build_fleet(3, 200, parse_mix("online=1")), "multiplexed"),
        )
        # another seed's VINs: vehicles the running simulator does not have, never online
        write_manifest(
            tmp_path / "absent.json",
            manifest(4, build_fleet(4, 50, parse_mix("online=1")), "multiplexed"),
        )
        sim = start_fleet(stack, 200)
        gateways, urls = start_gateways(stack, 1)
        env = {
            **os.environ,
            **stack.env(),
            "CAAS_LOAD_MANIFEST": str(tmp_path / "fleet.json"),
            "CAAS_LOAD_MAX_FAIL_RATIO": "0",
            "CAAS_LOAD_MAX_P95_MS": "20000",
        }

        def locust(csv_prefix: Path, extra: dict[str, str]) -> int:
            run = subprocess.run(
                [
                    sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py",
                    "--headless", "-u", "4", "-r", "4", "-t", "4s", "--host", urls[0],
                    "--csv", str(csv_prefix), "--only-summary", "ActivationUser",
                ],
                cwd=project_root(),
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
            print(run.stderr[-3000:])  # shown when an assertion fails
            return run.returncode

        try:
            assert locust(tmp_path / "ok", {}) == 0
            ok = counts(tmp_path / "ok")
            assert ok["activation/accepted"][0] > 0
            for name in ("activation/accepted", "activation/ack", "activation/final"):
                assert ok[name] == (ok["activation/accepted"][0], 0), (name, ok)
            assert locust(tmp_path / "strict", {"CAAS_LOAD_MAX_P95_MS": "0.001"}) == 1
            cut = {"CAAS_LOAD_MANIFEST": str(tmp_path / "absent.json"), "CAAS_LOAD_DRAIN_S": "0"}
            assert locust(tmp_path / "cut", cut) == 1
            stopped = counts(tmp_path / "cut")
            accepted = stopped["activation/accepted"][0]
            assert accepted > 0 and stopped["activation/final"] == (accepted, accepted)
            failures = Path(f"{tmp_path / 'cut'}_failures.csv").read_text()
            assert "in flight at stop" in failures
        finally:
            for service in (*gateways, sim):
                service.stop()


def test_purchase_benchmark_smoke(tmp_path: Path) -> None:
    """`python -m bench purchases` settles every purchase of an all-online fleet as CHARGED,
    with the money invariants holding and one capture per purchase at the provider."""
    report = run_bench(tmp_path, "purchases", "--vehicles", "20", "--database", "sqlite")
    assert report["accepted"] == report["charged"] == 20
    assert report["failed_no_charge"] == 0
    assert report["invariant_violations"] == 0
    assert report["provider"]["captures"] == 20  # counted by the provider, over HTTP
    assert report["provider"]["captured_more_than_once"] == 0
    assert report["charged_per_s"] > 0


def test_purchase_benchmark_two_backends_smoke(tmp_path: Path) -> None:
    """`--backends 2` on PostgreSQL: every purchase CHARGED once through two backend
    processes, and the figures counted from outside (CPU, statements, the baseline)."""
    report = run_bench(
        tmp_path, "purchases", "--vehicles", "20", "--database", "postgres", "--backends", "2"
    )
    assert report["accepted"] == report["charged"] == 20
    assert report["invariant_violations"] == 0
    assert report["provider"]["captured_more_than_once"] == 0
    assert {"backend", "backend-2"} <= set(report["cpu_ms_per_purchase"])
    assert report["backend_cpu_ms_per_purchase"] > 0
    assert report["statements_per_purchase"] > 0 < report["transactions_per_purchase"]
    assert report["baseline"]["purchases"] == 20
    assert report["baseline_purchases_per_s"] > 0 < report["ratio"]


def test_fault_benchmark_smoke(tmp_path: Path) -> None:
    """`python -m bench faults bogus-features share-group` runs on real processes and
    reports the counts the vehicle-boundary issue asks for, each scenario ok."""
    report = run_bench(tmp_path, "faults", "bogus-features", "share-group", "--activations", "60")
    bogus = report["bogus-features"]
    assert bogus["deactivations_opened"] == 0
    assert bogus["metric_series_after"] - bogus["metric_series_before"] <= 5
    share = report["share-group"]
    assert share["subscriptions_refused"] == share["car_connections"] == 5
    assert share["answers_lost"] == 0
    assert share["answers_received_by_gateway"] >= 60
    assert share["outcomes"] == {"succeeded": 60}
    assert all(scenario["ok"] for scenario in report.values())


def test_capacity_benchmark_smoke(tmp_path: Path) -> None:
    """`python -m bench capacity` at tiny size: memory per twin and per activation, the
    flood counted by the bare subscriber and by the worker, the storm followed to the end."""
    report = run_bench(
        tmp_path, "capacity", "--vehicles", "300", "--activations", "100",
        "--rates", "300", "--step-s", "1",
    )  # fmt: skip
    twins = report["twins"]
    assert twins["twin_keys"] == 300
    assert twins["twin_hash_bytes"] > 100 and twins["used_memory_per_twin"] > 0
    act = report["activation_memory"]
    assert report["activation_phase"]["succeeded"] == 100
    assert act["by_kind"]["act"]["keys"] == 1.0, "one activation hash per activation"
    assert act["retained_bytes_per_activation"] > 0 and act["events_entries_per_activation"] > 0
    for side in ("baseline", "gateway"):
        step = report[side][0]
        assert step["sent"] > 0 and step["received"] == step["sent"], (side, step)
    assert report["gateway"][0]["cpu_ms_per_message"]["gateway-0"] > 0
    assert report["ratio"]["gateway_to_baseline"] > 0
    storm = report["storm"]
    assert storm["still_stale"] == storm["still_offline"] == 0
    assert 0 < storm["all_fresh_s"] <= storm["all_online_s"] + 1
    assert storm["worker_reconnects"] >= 1, "the worker reconnected after the broker kill"
    assert storm["messages_handled"] >= 2 * 300, "every vehicle announced itself again"
