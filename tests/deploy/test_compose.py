"""docker-compose.yml without a Docker engine: the file is valid against the compose
specification's JSON schema (tests/deploy/compose-spec.json), and its wiring holds
against what the config job really renders (`python -m launcher render`): every Python
service gets the variables its settings class needs, every URL names a service that
listens there with the right credentials, every mounted file exists, every secret is
readable only by the services that need it, one image serves every Python service.
The broker's rendered configuration is then run for real: TLS on the vehicle listener,
the healthcheck's login on the service listener."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import certifi
import jsonschema
import paho.mqtt.client as paho
import pytest
import yaml
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from backend.config import BackendSettings
from gateway.config import GatewaySettings
from launcher import procs
from launcher.__main__ import main as launcher_main
from launcher.compose import POSTGRES_DB, POSTGRES_USER
from launcher.credentials import mosquitto_hash
from launcher.plugin import build_plugin
from launcher.prometheus import promtool
from launcher.tls import SERVER_VALIDITY, TlsFiles, ensure_certificates, needs_new_server_cert
from paysim.config import PaysimSettings
from protocol import signing
from protocol.credentials import vehicle_password
from tests.deploy import compose_kit as ck
from tests.deploy import kit
from vehicle_sim.__main__ import build_parser as simulator_parser
from vehicle_sim.fleet import build_fleet, parse_mix

COMPOSE = ck.load_compose()
SERVICES: dict[str, Any] = COMPOSE["services"]
PYTHON_SERVICES = ("config", "gateway-1", "gateway-2", "paysim", "backend", "vehicle_sim")
GATEWAYS = {"gateway-1", "gateway-2"}

# who may read each generated secret (the config job writes them all)
SECRET_READERS = {
    "gateway_password": GATEWAYS,
    "fleet_password": {"vehicle_sim"},
    "fleet_secret": set(),  # per-vehicle passwords: written by the config job only
    "redis_password": {"redis", "backend", *GATEWAYS},
    "gateway_token": {"backend", *GATEWAYS},
    "gateway_share_group": GATEWAYS,
    "payment_provider_key": {"paysim", "backend"},
    "payment_webhook_secret": {"paysim", "backend"},
    "postgres_password": {"postgres", "backend"},
    "grafana_admin_password": {"grafana"},
    "mqtt_health_password": {"mosquitto"},
}
# settings fields without a default that a deployment may leave unset, and why
OPTIONAL = {"backend_smtp_url"}  # unset: e-mails go to the log


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> ck.Rendered:
    out = tmp_path_factory.mktemp("compose")
    assert launcher_main(["render", "--out", str(out)]) == 0
    return ck.Rendered(COMPOSE, out)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CAAS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def secrets_of(rendered: ck.Rendered) -> dict[str, str]:
    values: dict[str, str] = json.loads((rendered.out / "state" / "secrets.json").read_text())
    return values


# ------------------------------------------------------------------ the file itself


def test_the_file_is_valid_against_the_compose_specification() -> None:
    """The compose specification's schema accepts the file (variables at their defaults)."""
    schema = json.loads(ck.COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_the_schema_refuses_a_broken_file() -> None:
    """The validation is not vacuous: a misspelt key and a bad condition are refused."""
    schema = json.loads(ck.COMPOSE_SCHEMA.read_text())
    broken = yaml.safe_load(yaml.safe_dump(COMPOSE))
    broken["services"]["backend"]["healthchek"] = broken["services"]["backend"].pop("healthcheck")
    broken["services"]["paysim"]["depends_on"]["config"]["condition"] = "service_done"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) == 2


def test_every_variable_has_a_default_and_no_secret_is_written_in_the_file() -> None:
    """`docker compose up` needs no variable set; no secret, no secret's default, no
    secret-named variable outside the generated files (the webhook secret included)."""
    text = ck.COMPOSE_YML.read_text()
    assert re.findall(r"\$\{\w+\}", text) == []
    for name, service in SERVICES.items():
        for variable in service.get("environment", {}):
            if re.search(r"SECRET|PASSWORD|TOKEN|_KEY$", variable):
                assert variable.endswith("_FILE"), (name, variable)
    assert "CAAS_PAYMENT_WEBHOOK_SECRET" not in text


def test_one_python_image_built_once() -> None:
    """Every Python service runs the same image; only the config job builds it."""
    images = {name: SERVICES[name].get("image") for name in PYTHON_SERVICES}
    assert set(images.values()) == {ck.PYTHON_IMAGE}
    builders = {name: s["build"] for name, s in SERVICES.items() if "build" in s}
    assert builders == {"config": ".", "mosquitto": "./mosquitto"}
    assert all(SERVICES[name]["image"] != ck.PYTHON_IMAGE for name in builders if name != "config")
    for context in builders.values():
        assert (ck.ROOT / context / "Dockerfile").is_file()


def test_the_simulator_is_an_optional_profile() -> None:
    """Only the simulated fleet waits for `--profile demo`."""
    profiled = {name for name, s in SERVICES.items() if "profiles" in s}
    assert profiled == {"vehicle_sim"} and SERVICES["vehicle_sim"]["profiles"] == ["demo"]


def test_long_running_services_have_a_healthcheck_and_a_restart_policy() -> None:
    """Everything but the one-shot config job restarts unless stopped and says when it is
    healthy; the config job is never restarted."""
    assert SERVICES["config"]["restart"] == "no" and "healthcheck" not in SERVICES["config"]
    for name, service in SERVICES.items():
        if name != "config":
            assert service.get("restart") == "unless-stopped", name
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health_and_for_the_config_job() -> None:
    """Every depends_on has a condition: service_healthy only on services with a
    healthcheck, service_completed_successfully only on the config job; every service
    that reads what the config job writes waits for it to complete."""
    config_volumes = {m.source for m in ck.mounts(SERVICES["config"]) if m.is_volume}
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), name
        for target, spec in depends.items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], (name, target)
            else:
                assert (spec["condition"], target) == ("service_completed_successfully", "config")
        reads_config = any(m.source in config_volumes for m in ck.mounts(service))
        if name != "config" and reads_config:
            assert depends["config"]["condition"] == "service_completed_successfully", name
    backend = SERVICES["backend"]["depends_on"]
    assert {"postgres", "redis", "paysim", *GATEWAYS} <= set(backend)


def test_every_bind_mounted_file_exists() -> None:
    """Each host path a service mounts is in the repository (read-only)."""
    binds = [(name, m) for name, s in SERVICES.items() for m in ck.mounts(s) if not m.is_volume]
    assert binds
    for name, mount in binds:
        assert (ck.ROOT / mount.source).exists(), (name, mount.source)
        assert any(
            entry.startswith(f"{mount.source}:") and entry.endswith(":ro")
            for entry in SERVICES[name]["volumes"]
        ), (name, mount.source)


def test_every_named_volume_is_declared_and_used() -> None:
    used = {m.source for s in SERVICES.values() for m in ck.mounts(s) if m.is_volume}
    assert used == set(COMPOSE["volumes"])


# ------------------------------------------------------------------ variables and wiring


def settings_fields_without_default(cls: type[Any]) -> set[str]:
    return {
        f"CAAS_{name.upper()}"
        for name, info in cls.model_fields.items()
        if info.default is None and info.default_factory is None and name not in OPTIONAL
    }


@pytest.mark.parametrize("service", sorted(GATEWAYS))
def test_each_gateway_worker_gets_every_variable_it_needs(
    rendered: ck.Rendered, clean_env: pytest.MonkeyPatch, service: str
) -> None:
    """Every GatewaySettings field with no default is set and require() accepts them;
    the two workers are named apart."""
    env = rendered.environment(service)
    assert settings_fields_without_default(GatewaySettings) <= set(env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    resolved = GatewaySettings().require()
    assert rendered.host_path(service, str(resolved.signing_key)) is not None
    workers = {rendered.environment(g)["CAAS_GATEWAY_WORKER_ID"] for g in GATEWAYS}
    assert len(workers) == 2


def test_the_backend_gets_every_variable_it_needs(
    rendered: ck.Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    """Every BackendSettings field with no default (but the SMTP relay) is set, on
    PostgreSQL, and the provider and webhook settings pass their checks."""
    env = rendered.environment("backend")
    assert settings_fields_without_default(BackendSettings) <= set(env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = BackendSettings()
    assert settings.resolved_database_url().startswith("postgresql+asyncpg://")
    assert settings.resolved_provider()[0] == "http://paysim:8082"
    assert settings.resolved_webhook_secret() and settings.resolved_gateway_token()


def test_the_payment_provider_gets_every_variable_it_needs(
    rendered: ck.Rendered, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PaysimSettings.require() accepts its variables; its database is in its volume."""
    env = rendered.environment("paysim")
    assert settings_fields_without_default(PaysimSettings) <= set(env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    resolved = PaysimSettings().require(db=tmp_path / "paysim.sqlite3")
    assert resolved.webhook_url == "http://backend:8080/v1/payments/webhooks"
    assert ck.volume_at(SERVICES["paysim"], env["CAAS_PAYSIM_DB"]) == "paysim-data"


def test_the_simulator_gets_its_broker_and_public_key(
    rendered: ck.Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    """`vehicle_sim run` takes its broker URL and the gateway's public key from the
    environment; the key is the one the gateway signs with."""
    env = rendered.environment("vehicle_sim")
    for name, value in env.items():
        clean_env.setenv(name, value)
    args = simulator_parser().parse_args(["run"])
    assert args.broker == env["CAAS_FLEET_MQTT_URL"]
    public = rendered.host_path("vehicle_sim", str(args.public_key))
    private = rendered.host_path("gateway-1", rendered.environment("gateway-1")["CAAS_SIGNING_KEY"])
    assert public is not None and private is not None
    signer_public = signing.load_private_key(private).public_key()
    assert signing.public_pem(signer_public) == signing.public_pem(signing.load_public_key(public))


def listening_ports(rendered: ck.Rendered) -> dict[str, set[int]]:
    """What each service listens on, inside the private network."""
    conf = (rendered.out / "broker" / "mosquitto.conf").read_text()
    ports = {
        "mosquitto": {int(p) for p in re.findall(r"^listener (\d+)", conf, re.M)},
        "redis": {6379},
        "postgres": {5432},
        "prometheus": {9090},
        "grafana": {3000},
    }
    for name in PYTHON_SERVICES:
        port = ck.listening_port(SERVICES[name])
        if port is not None:
            ports[name] = {port}
    return ports


def reachable_names(service: str) -> dict[str, str]:
    """Host names the service can resolve: service names and aliases on its networks."""
    own = set(networks_of(service))
    names = {}
    for name, other in SERVICES.items():
        nets = other.get("networks", [])
        for net in own & set(nets):
            names[name] = name
            aliases = nets[net].get("aliases", []) if isinstance(nets, dict) and nets[net] else []
            names.update({alias: name for alias in aliases})
    return names


def networks_of(service: str) -> list[str]:
    return list(SERVICES[service].get("networks", ["default"]))


@pytest.mark.parametrize("service", ["gateway-1", "gateway-2", "paysim", "backend", "vehicle_sim"])
def test_every_url_names_a_service_that_listens_there(rendered: ck.Rendered, service: str) -> None:
    """Each URL variable's host is a service (or an alias of the gateway workers) on a
    network the caller shares, and its port one that service listens on."""
    ports = listening_ports(rendered)
    names = reachable_names(service)
    urls = {k: v for k, v in rendered.environment(service).items() if "://" in v}
    assert urls
    for variable, url in urls.items():
        host, port = ck.url_host_port(url)
        assert host in names, (service, variable, host)
        assert port in ports[names[host]], (service, variable, port)
    gateway_alias = {alias for alias, target in names.items() if target in GATEWAYS}
    if service == "backend":
        assert gateway_alias == {"gateway", *GATEWAYS}


def test_credentials_in_the_urls_are_the_ones_the_servers_accept(rendered: ck.Rendered) -> None:
    """The Redis password is redis's requirepass, the database URL's user, password and
    database are postgres's, and each MQTT login matches its hash in the service
    listener's password file (the gateway and the fleet on port 1884, not the vehicles')."""
    redis_conf = (rendered.out / "redis" / "redis.conf").read_text()
    password = re.search(r"^requirepass (\S+)$", redis_conf, re.M)
    assert password and "include /etc/caas/redis.conf" in redis_conf
    for service in ("backend", *GATEWAYS):
        url = rendered.environment(service)["CAAS_REDIS_URL"]
        assert url == f"redis://:{password.group(1)}@redis:6379/0"
    postgres_env = SERVICES["postgres"]["environment"]
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"]) == (
        POSTGRES_USER,
        POSTGRES_DB,
    )
    db_password = (rendered.out / "postgres" / "password").read_text()
    database = rendered.environment("backend")["CAAS_DATABASE_URL"]
    assert database == f"postgresql+asyncpg://caas:{db_password}@postgres:5432/caas"
    hashes = dict(
        line.split(":", 1)
        for line in (rendered.out / "broker" / "mosquitto-service.passwd").read_text().split()
    )
    logins = [
        rendered.environment("gateway-1")["CAAS_MQTT_URL"],
        rendered.environment("vehicle_sim")["CAAS_FLEET_MQTT_URL"],
    ]
    for url in logins:
        user, secret = url.split("//")[1].split("@")[0].split(":")
        salt = base64.b64decode(hashes[user].split("$")[3])
        assert mosquitto_hash(secret, salt) == hashes[user]
        assert url.endswith("@mosquitto:1884")


def test_every_file_a_service_is_pointed_at_was_rendered_into_its_volume(
    rendered: ck.Rendered,
) -> None:
    """The broker's config, certificate, key, ACL and password files; redis's config;
    the *_FILE variables of postgres and Grafana; the keys named in the env files."""
    conf_path = SERVICES["mosquitto"]["command"][-1]
    conf = rendered.host_path("mosquitto", conf_path)
    assert conf is not None
    named = re.findall(
        r"^(?:certfile|keyfile|password_file|acl_file) (\S+)$", conf.read_text(), re.M
    )
    assert len(named) == 6
    files = [("mosquitto", rendered.in_container(path)) for path in named]
    files.append(("redis", SERVICES["redis"]["command"][1]))
    files.append(("postgres", SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"]))
    grafana_env = SERVICES["grafana"]["environment"]
    files.append(("grafana", grafana_env["GF_SECURITY_ADMIN_PASSWORD__FILE"]))
    files.append(("gateway-1", rendered.environment("gateway-1")["CAAS_SIGNING_KEY"]))
    files.append(("vehicle_sim", rendered.environment("vehicle_sim")["CAAS_PUBLIC_KEY"]))
    for service, container_path in files:
        path = rendered.host_path(service, container_path)
        assert path is not None and path.is_file(), (service, container_path)


def test_each_secret_is_readable_only_by_the_services_that_need_it(
    rendered: ck.Rendered,
) -> None:
    """Whichever rendered file holds a secret, only the config job and the services of
    SECRET_READERS mount its volume; the private keys likewise; consumers mount read-only."""
    files = [path for path in rendered.out.rglob("*") if path.is_file()]
    for name, value in secrets_of(rendered).items():
        holders = [path for path in files if value in path.read_text()]
        readers = set().union(*(rendered.readers(path) for path in holders))
        assert readers == {"config", *SECRET_READERS[name]}, name
    out = rendered.out
    assert rendered.readers(out / "gateway" / "gateway_signing_key.pem") == {"config", *GATEWAYS}
    assert rendered.readers(out / "state" / "ca-key.pem") == {"config"}
    assert rendered.readers(out / "broker" / "server-key.pem") == {"config", "mosquitto"}
    config_volumes = set(rendered.folder_of)
    for name, service in SERVICES.items():
        for entry in service.get("volumes", []) if name != "config" else []:
            if entry.split(":")[0] in config_volumes:
                assert entry.endswith(":ro"), (name, entry)


def test_rendered_secrets_are_private_and_stable(rendered: ck.Rendered) -> None:
    """Files 0600 in 0700 folders (public/ aside); a second run keeps every secret."""
    for path in rendered.out.rglob("*"):
        public = "public" in path.parts
        mode = path.stat().st_mode & 0o777
        expected = (
            (0o755 if path.is_dir() else 0o644) if public else (0o700 if path.is_dir() else 0o600)
        )
        assert mode == expected, (path, oct(mode))
    before = secrets_of(rendered)
    key = (rendered.out / "gateway" / "gateway_signing_key.pem").read_bytes()
    ca = (rendered.out / "public" / "mqtt-ca.pem").read_bytes()
    assert launcher_main(["render", "--out", str(rendered.out)]) == 0
    assert secrets_of(rendered) == before
    assert (rendered.out / "gateway" / "gateway_signing_key.pem").read_bytes() == key
    assert (rendered.out / "public" / "mqtt-ca.pem").read_bytes() == ca


def test_the_server_certificate_follows_the_host_names_under_the_same_ca(tmp_path: Path) -> None:
    """A new host name issues a new server certificate signed by the same CA (vehicles
    keep trusting it); the same names keep the certificate."""
    files = TlsFiles(
        tmp_path / "ca-key.pem", tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s-key.pem"
    )
    now = datetime.datetime.now(datetime.UTC)
    assert ensure_certificates(files, ["mosquitto", "localhost"], now)
    ca, first = files.ca_cert.read_bytes(), files.server_cert.read_bytes()
    assert not ensure_certificates(files, ["localhost", "mosquitto", "localhost"], now)
    assert files.server_cert.read_bytes() == first
    assert ensure_certificates(files, ["mosquitto", "broker.example"], now)
    assert files.ca_cert.read_bytes() == ca and files.server_cert.read_bytes() != first
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    assert not needs_new_server_cert(server, ["broker.example", "mosquitto"], now)
    assert needs_new_server_cert(server, ["broker.example", "mosquitto"], now + SERVER_VALIDITY)


# ------------------------------------------------------------------ networks and ports


def test_only_the_public_endpoints_are_published() -> None:
    """The private network has no route out; published: the vehicles' TLS listener, the
    backend, Grafana, and Prometheus on the host's loopback; never the broker's service
    listener, Redis, PostgreSQL, the gateway or the payment provider."""
    assert COMPOSE["networks"]["private"] == {"internal": True}
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert published == {
        "mosquitto": ["8883:8883"],
        "backend": ["8080:8080"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["3000:3000"],
    }
    for name in published:
        assert "public" in networks_of(name), name
    for name in SERVICES:
        if name not in published:
            assert networks_of(name) == ["private"], name


# ------------------------------------------------------------------ Prometheus and Grafana

COMPOSE_PROMETHEUS = kit.PROMETHEUS_YML.with_name("prometheus-compose.yml")


def test_prometheus_scrapes_the_compose_services_with_the_same_rules(
    rendered: ck.Rendered,
) -> None:
    """prometheus-compose.yml: prometheus.yml's rule files and jobs (but the simulator,
    whose control port is its container's loopback), each target a service on
    Prometheus's network at its port; promtool accepts it; it is the file mounted."""
    local = kit.load_yaml(kit.PROMETHEUS_YML)
    compose = kit.load_yaml(COMPOSE_PROMETHEUS)
    assert compose["rule_files"] == local["rule_files"]
    assert compose["global"]["evaluation_interval"] == local["global"]["evaluation_interval"]
    jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    assert set(jobs) == set(kit.JOBS) - {"vehicle_sim"}
    ports = listening_ports(rendered)
    names = reachable_names("prometheus")
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in SERVICES and host in names and int(port) in ports[host], target
    gateway_targets = jobs["gateway"]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in gateway_targets} == GATEWAYS
    command = " ".join(SERVICES["prometheus"]["command"])
    assert f"--config.file=/etc/prometheus/{COMPOSE_PROMETHEUS.name}" in command
    assert "./deploy/prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]
    result = promtool("check", "config", COMPOSE_PROMETHEUS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_reads_the_compose_prometheus_and_the_dashboard() -> None:
    """The compose data source keeps the dashboard's uid and points at the prometheus
    service; the dashboard and its provider are the repository's."""
    compose_sources = ck.ROOT / "deploy/grafana/compose/datasources/prometheus.yml"
    local = kit.load_yaml(kit.DATASOURCES_YML)["datasources"][0]
    source = kit.load_yaml(compose_sources)["datasources"][0]
    assert {k: v for k, v in source.items() if k != "url"} == {
        k: v for k, v in local.items() if k != "url"
    }
    assert source["url"] == "http://prometheus:9090"
    provider = kit.load_yaml(kit.DASHBOARD_PROVIDER_YML)["providers"][0]["options"]["path"]
    targets = {m.target: m.source for m in ck.mounts(SERVICES["grafana"])}
    assert targets[provider] == "./deploy/grafana/dashboards"
    assert (
        targets["/etc/grafana/provisioning/datasources"] == "./deploy/grafana/compose/datasources"
    )
    assert (ck.ROOT / targets[provider] / kit.DASHBOARD_JSON.name).is_file()


def test_the_build_context_leaves_out_the_venv_run_folders_caches_and_git() -> None:
    ignored = (ck.ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", "run", ".git", "**/__pycache__", ".mypy_cache", ".pytest_cache"):
        assert entry in ignored, entry


# ------------------------------------------------------------------ the broker, for real


@pytest.fixture
def running_broker(tmp_path: Path) -> Any:
    """mosquitto on the rendered configuration (local plugin, user and ports), with the
    identities of a five-vehicle fleet manifest."""
    vehicle_port, service_port = procs.free_port(), procs.free_port()
    fleet = build_fleet(3, 5, parse_mix("online=1"))
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps({"fleet": [{"vin": spec.vin} for spec in fleet]}))
    out = tmp_path / "config"
    args = ["render", "--out", str(out), "--vehicles-from", str(manifest)]
    args += ["--vehicle-port", str(vehicle_port), "--service-port", str(service_port)]
    args += ["--bind", "127.0.0.1", "--service-bind", "127.0.0.1"]
    args += ["--plugin-path", str(build_plugin()), "--persistence-dir", str(tmp_path)]
    args += ["--run-user", os.environ.get("USER", "root"), "--tls-hostnames", "localhost"]
    assert launcher_main(args) == 0
    log = tmp_path / "mosquitto.log"
    conf = out / "broker" / "mosquitto.conf"
    proc = procs.spawn([procs.find_binary("mosquitto"), "-c", str(conf)], log)
    try:
        for port in (vehicle_port, service_port):
            procs.wait_for_port(proc, port, "mosquitto", log)
        yield out, vehicle_port, service_port, fleet
    finally:
        procs.stop(proc)


def vehicle_connects(port: int, vin: str, password: str, ca: Path | None) -> bool:
    """One MQTT 5 CONNECT to the vehicle listener; True when accepted."""
    result: list[bool] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=vin, protocol=paho.MQTTv5)
    client.username_pw_set(vin, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    try:
        client.connect("localhost", port, keepalive=5)
        for _ in range(100):
            client.loop(0.05)
            if result:
                break
        client.disconnect()
    except (OSError, ssl.SSLError):
        return False
    return bool(result and result[0])


@pytest.mark.timeout(60)
def test_vehicles_connect_over_tls_with_the_rendered_certificates(running_broker: Any) -> None:
    """A vehicle of the manifest connects over TLS, verifying the broker against the CA
    in public/ and its host name; the same login in clear text, or another CA, fails."""
    out, vehicle_port, _, fleet = running_broker
    secret = json.loads((out / "state" / "secrets.json").read_text())["fleet_secret"]
    vin = fleet[0].vin
    ca = out / "public" / "mqtt-ca.pem"
    assert vehicle_connects(vehicle_port, vin, vehicle_password(secret, vin), ca)
    assert not vehicle_connects(vehicle_port, vin, "wrong-password", ca)
    assert not vehicle_connects(vehicle_port, vin, vehicle_password(secret, vin), None)
    public_cas = Path(certifi.where())  # the public CAs: none signed this broker
    assert not vehicle_connects(vehicle_port, vin, vehicle_password(secret, vin), public_cas)


@pytest.mark.timeout(60)
def test_the_broker_healthcheck_logs_in_on_the_service_listener(running_broker: Any) -> None:
    """The mosquitto healthcheck's command succeeds with the rendered login, and fails
    with a wrong password: it proves the broker accepts logins, not just a port."""
    out, _, service_port, _ = running_broker
    binary = shutil.which("mosquitto_pub")
    assert binary, "mosquitto_pub missing: run scripts/setup.sh (mosquitto-clients)"
    command = SERVICES["mosquitto"]["healthcheck"]["test"][1]
    local = command.replace("-p 1884", f"-p {service_port}").replace(
        "/run/caas/broker", str(out / "broker")
    )
    assert subprocess.run(["sh", "-c", local], timeout=20).returncode == 0
    wrong = local.replace('"$(cat', '"x$(cat')
    assert subprocess.run(["sh", "-c", wrong], timeout=20, capture_output=True).returncode != 0
