"""``python -m launcher``: local infrastructure, fleet credentials, services started
with the local stack's variables, and the demo."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from launcher.compose import ComposeOptions, render_compose
from launcher.credentials import write_password_file
from launcher.demo import DemoOptions, run_demo
from launcher.devenv import SERVICES, env_script, exec_service
from launcher.errors import LauncherError
from launcher.plugin import build_plugin
from launcher.stack import (
    DEV_RUN_DIR,
    REDACTED,
    LocalStack,
    StackOptions,
    export_lines,
    redacted,
)
from protocol.credentials import vehicle_password
from protocol.startup import DefaultsHelpFormatter
from vehicle_sim.fleet import build_fleet, parse_mix

CONTAINER_PLUGIN_PATH = Path("/usr/lib/mosquitto/caas_auth.so")  # mosquitto/Dockerfile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Start the project's mosquitto and redis-server, run a service with "
        "their variables, make fleet credentials, run the demo.",
        epilog="exit codes: 0 done; 1 the demo found a customer charged for an activation "
        "that failed (or charged twice); 2 usage or set-up error, one line on stderr; "
        "`run` exits with the service's own code (docs/spec.md §7).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start mosquitto + redis-server until Ctrl-C",
        formatter_class=DefaultsHelpFormatter,
    )
    up.add_argument("--run-dir", type=Path, default=DEV_RUN_DIR, help="the stack's run folder")
    up.add_argument("--mqtt-port", type=int, default=0, help="vehicle listener (0: a free port)")
    up.add_argument(
        "--mqtt-service-port",
        type=int,
        default=0,
        help="gateway/fleet listener, loopback (0: a free port)",
    )
    up.add_argument("--redis-port", type=int, default=0, help="0: a free port")
    up.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="MASTERS",
        help="instead of one redis-server, a Redis Cluster of MASTERS masters with a replica "
        "each on free ports; CAAS_REDIS_URL names one node (0: no cluster)",
    )
    up.add_argument(
        "--vehicles-from", type=Path, help="manifest JSON: give each of its VINs a broker identity"
    )
    up.add_argument(
        "--show-secrets",
        action="store_true",
        help="print the variables with their secret values (default: *** in their place; "
        "the values are in RUN_DIR/stack.env, mode 0600)",
    )

    add_dev_env_commands(sub)

    pw = sub.add_parser(
        "passwd",
        help="write the vehicle listener's password file for a fleet's VINs",
        formatter_class=DefaultsHelpFormatter,
    )
    pw.add_argument("--out", type=Path, required=True)
    pw.add_argument(
        "--fleet-secret-file",
        type=Path,
        help="read the fleet secret from this file (default: $CAAS_FLEET_SECRET; never "
        "on the command line, where ps shows it)",
    )
    pw.add_argument("--manifest", type=Path, help="take the VINs from this manifest")
    pw.add_argument("--vehicles", type=int, help="or derive them: fleet size")
    pw.add_argument("--seed", type=int, default=1, help="or derive them: fleet seed")
    pw.add_argument("--mix", default="online=1", help="or derive them: fleet mix")

    render = sub.add_parser(
        "render",
        help="docker-compose's config job: broker config with TLS, ACLs, passwords, keys, "
        "certificates and each service's secrets, one folder per consumer (docs/deploy.md)",
        formatter_class=DefaultsHelpFormatter,
    )
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--vehicle-port", type=int, default=8883, help="TLS vehicle listener")
    render.add_argument("--service-port", type=int, default=1884, help="service listener")
    render.add_argument("--bind", default="0.0.0.0", help="vehicle listener address")
    render.add_argument("--service-bind", default="0.0.0.0", help="service listener address")
    render.add_argument("--run-user", default="mosquitto", help="user mosquitto runs as")
    render.add_argument(
        "--persistence-dir", type=Path, default=Path("/mosquitto/data"),
        help="the broker's persistence folder (in its container)",
    )  # fmt: skip
    render.add_argument("--mqtt-host", default="mosquitto", help="broker host the services use")
    render.add_argument("--redis-host", default="redis", help="Redis host the services use")
    render.add_argument(
        "--postgres-host", default="postgres", help="PostgreSQL host the backend uses"
    )
    render.add_argument("--acl-root", default="caas/v1", help="topic root in the ACLs")
    render.add_argument(
        "--plugin-path",
        type=Path,
        default=CONTAINER_PLUGIN_PATH,
        help="the caas_auth plugin inside the broker image (mosquitto/Dockerfile)",
    )
    render.add_argument(
        "--tls-hostnames",
        default="mosquitto,localhost",
        help="comma-separated DNS names of the broker's TLS certificate (what vehicles dial)",
    )
    render.add_argument(
        "--vehicles-from",
        type=Path,
        help="manifest JSON: its VINs become the vehicle listener's identities (without it, "
        "the identities written before are kept)",
    )

    sub.add_parser(
        "build-plugin",
        help="compile the broker's auth plugin (mosquitto/plugin) if missing or stale",
    )

    demo = sub.add_parser(
        "demo",
        help="the whole platform end to end: fleet, gateway, payment provider, backend, "
        "purchases, summary",
        formatter_class=DefaultsHelpFormatter,
    )
    demo.add_argument(
        "--run-dir",
        type=Path,
        default=Path("run/demo"),
        help="logs, database and broker data (wiped at start)",
    )
    demo.add_argument("--vehicles", type=int, default=1000, help="fleet size = purchases")
    demo.add_argument("--seed", type=int, default=7, help="fleet and purchase seed")
    demo.add_argument("--concurrency", type=int, default=50, help="purchase requests at a time")
    demo.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="stop following activations after this many seconds",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services up afterwards and print their URLs",
    )
    demo.add_argument("--no-live", action="store_true", help="plain progress lines")
    demo.add_argument("--gateway-port", type=int, default=0, help="0: a free port")
    demo.add_argument("--backend-port", type=int, default=0, help="0: a free port")
    demo.add_argument("--paysim-port", type=int, default=0, help="0: a free port")
    demo.add_argument(
        "--simulator-port", type=int, default=0, help="its control API and /metrics; 0: free"
    )
    return parser


def add_dev_env_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a service with the local stack's variables (stack.env under the environment)",
        description="Exec `python -m SERVICE ARGS` with the variables of the stack that "
        "`python -m launcher up --run-dir RUN_DIR` started (RUN_DIR/stack.env); a variable "
        "already set in the environment wins. Example: python -m launcher run gateway -- "
        "--port 8081",
        formatter_class=DefaultsHelpFormatter,
    )
    run.add_argument("--run-dir", type=Path, default=DEV_RUN_DIR, help="the stack's run folder")
    run.add_argument("service", metavar="SERVICE", help=f"one of {', '.join(SERVICES)}")
    run.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="-- ARGS",
        help="the service's own options, after `--` (`-- --help` shows them)",
    )
    env = sub.add_parser(
        "env",
        help='print the local stack\'s variables as export lines: eval "$(python -m launcher env)"',
        description="Print RUN_DIR/stack.env's variables as `export NAME=value` lines, for "
        '`eval "$(python -m launcher env)"` in a shell that then runs the services.',
        formatter_class=DefaultsHelpFormatter,
    )
    env.add_argument("--run-dir", type=Path, default=DEV_RUN_DIR, help="the stack's run folder")


def vins_from(args: argparse.Namespace) -> list[str]:
    if args.manifest:
        return [v["vin"] for v in json.loads(args.manifest.read_text())["fleet"]]
    if args.vehicles:
        return [s.vin for s in build_fleet(args.seed, args.vehicles, parse_mix(args.mix))]
    raise LauncherError("give --manifest or --vehicles")


def fleet_secret(path: Path | None, environ: Mapping[str, str]) -> str:
    """The fleet secret for `launcher passwd`: the file's first line, else
    $CAAS_FLEET_SECRET; LauncherError when neither gives one."""
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise LauncherError(f"--fleet-secret-file: {exc.strerror}: {path}") from None
    if environ.get("CAAS_FLEET_SECRET"):
        return environ["CAAS_FLEET_SECRET"]
    raise LauncherError("give the fleet secret: set CAAS_FLEET_SECRET or --fleet-secret-file")


def render_config(args: argparse.Namespace) -> int:
    """Config for docker-compose (launcher/compose.py)."""
    options = ComposeOptions(
        out=args.out.resolve(),
        vehicle_port=args.vehicle_port,
        service_port=args.service_port,
        bind=args.bind,
        service_bind=args.service_bind,
        run_user=args.run_user,
        persistence_dir=args.persistence_dir,
        mqtt_host=args.mqtt_host,
        redis_host=args.redis_host,
        postgres_host=args.postgres_host,
        acl_root=args.acl_root,
        plugin_path=args.plugin_path,
        tls_hostnames=[name.strip() for name in args.tls_hostnames.split(",") if name.strip()],
        vehicle_vins=(
            [v["vin"] for v in json.loads(args.vehicles_from.read_text())["fleet"]]
            if args.vehicles_from
            else None
        ),
    )
    render_compose(options, datetime.datetime.now(datetime.UTC))
    print(f"wrote the broker config, certificates, keys and secrets to {options.out}")
    return 0


def up_banner(stack: LocalStack, show_secrets: bool) -> str:
    """What `launcher up` prints once the stack is up: the variables (secret values as
    *** unless asked for) and where they are. The last line starts with "# also in"."""
    env = stack.env()
    if show_secrets:
        return export_lines(env) + f"# also in {stack.env_path}; Ctrl-C stops\n"
    shown = redacted(env, stack.secrets.values.values())
    return (
        f"# local stack up; its variables (secrets as {REDACTED}, --show-secrets prints them):\n"
        + "".join(f"#   {name}={value}\n" for name, value in shown.items())
        + f"# use them: python -m launcher run --run-dir {stack.run_dir} SERVICE -- ARGS\n"
        + f"# also in {stack.env_path} (mode 0600, with the secrets); Ctrl-C stops\n"
    )


def up(args: argparse.Namespace) -> int:
    options = StackOptions(
        run_dir=args.run_dir,
        mqtt_vehicle_port=args.mqtt_port,
        mqtt_service_port=args.mqtt_service_port,
        redis_port=args.redis_port,
        redis_cluster_masters=args.redis_cluster,
    )
    with LocalStack(options) as stack:
        if args.vehicles_from:
            vins = [v["vin"] for v in json.loads(args.vehicles_from.read_text())["fleet"]]
            stack.allow_vehicles(vins)
        print(up_banner(stack, args.show_secrets), end="", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            return up(args)
        if args.command == "run":
            exec_service(args.service, args.args, args.run_dir)
        if args.command == "env":
            print(env_script(args.run_dir), end="")
            return 0
        if args.command == "render":
            return render_config(args)
        if args.command == "build-plugin":
            print(build_plugin())
            return 0
        if args.command == "passwd":
            secret = fleet_secret(args.fleet_secret_file, os.environ)
            count = write_password_file(
                args.out, ((v, vehicle_password(secret, v)) for v in vins_from(args))
            )
            print(f"wrote {count} vehicle identities to {args.out}")
            return 0
        opts = DemoOptions(
            run_dir=args.run_dir,
            vehicles=args.vehicles,
            seed=args.seed,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            keep_running=args.keep_running,
            live=not args.no_live,
            gateway_port=args.gateway_port,
            backend_port=args.backend_port,
            paysim_port=args.paysim_port,
            simulator_port=args.simulator_port,
        )
        try:
            return asyncio.run(run_demo(opts))
        except KeyboardInterrupt:
            return 0
    except LauncherError as exc:
        print(f"launcher: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
