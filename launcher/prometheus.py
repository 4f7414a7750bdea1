"""A private Prometheus: Debian's ``prometheus`` binary on a free port, its storage in a
folder of its own, configured by a file the caller writes (the tests render one from
deploy/prometheus/prometheus.yml with the services' real ports). ``promtool`` runs the
checks of deploy/prometheus/."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from launcher import procs
from launcher.errors import ServiceFailed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = PROJECT_ROOT / "deploy" / "prometheus"


@dataclass
class PrometheusSettings:
    run_dir: Path  # prometheus.log and the tsdb/ folder go here
    config: Path
    port: int


class PrometheusServer(procs.ChildService):
    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = settings.run_dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self) -> None:
        s = self.settings
        argv = [
            procs.find_binary("prometheus"),
            f"--config.file={s.config}",
            f"--storage.tsdb.path={s.run_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{s.port}",
            "--log.level=warn",
        ]
        self.proc = procs.spawn(argv, self.log_path)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        """Ready once its storage is open and the configuration (rules among it) loaded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServiceFailed(
                    "prometheus", f"exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise ServiceFailed("prometheus", f"not ready after {timeout_s}s; see {self.log_path}")


def promtool(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` in deploy/prometheus/ (the paths its files name are relative to
    it); BinaryMissing (which says to run scripts/setup.sh) when it is not installed."""
    return subprocess.run(
        [procs.find_binary("promtool"), *args],
        cwd=DEPLOY_DIR,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def local_config(
    base: dict[str, Any], targets: dict[str, list[str]], every_s: int
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml (``base``, parsed) pointed at local processes:
    each job scrapes the ``targets`` given for it, scrapes and rule evaluations happen
    every ``every_s`` seconds, the rule files are found from anywhere, and no
    Alertmanager is called. ValueError when ``targets`` names a job the file lacks or
    leaves one out, so the file's jobs and the caller's services cannot drift apart."""
    jobs = {job["job_name"]: job for job in base["scrape_configs"]}
    if set(jobs) != set(targets):
        raise ValueError(f"jobs in prometheus.yml {sorted(jobs)} != targets {sorted(targets)}")
    interval = f"{every_s}s"
    scrape_configs = [
        {**job, "static_configs": [{"targets": targets[name]}]} for name, job in jobs.items()
    ]
    return {
        **{key: value for key, value in base.items() if key != "alerting"},
        "global": {
            **base["global"],
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(DEPLOY_DIR / path) for path in base["rule_files"]],
        "scrape_configs": scrape_configs,
    }
