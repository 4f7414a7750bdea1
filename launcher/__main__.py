"""``python -m launcher``: local infrastructure, fleet credentials, services started
with the local stack's variables, and the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from launcher.broker import Broker, BrokerSettings
from launcher.credentials import write_password_file
from launcher.demo import DemoOptions, run_demo
from launcher.devenv import SERVICES, env_script, exec_service
from launcher.errors import LauncherError
from launcher.plugin import build_plugin
from launcher.stack import (
    DEV_RUN_DIR,
    FLEET_USER,
    GATEWAY_USER,
    LocalStack,
    Secrets,
    StackOptions,
    export_lines,
)
from protocol.credentials import vehicle_password
from protocol.signing import write_keypair
from protocol.startup import DefaultsHelpFormatter
from vehicle_sim.fleet import build_fleet, parse_mix

CONTAINER_PLUGIN_PATH = Path("/usr/lib/mosquitto/caas_auth.so")  # mosquitto/Dockerfile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Start the project's mosquitto and redis-server, run a service with "
        "their variables, make fleet credentials, run the demo.",
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
        "--vehicles-from", type=Path, help="manifest JSON: give each of its VINs a broker identity"
    )

    add_dev_env_commands(sub)

    pw = sub.add_parser(
        "passwd",
        help="write the vehicle listener's password file for a fleet's VINs",
        formatter_class=DefaultsHelpFormatter,
    )
    pw.add_argument("--out", type=Path, required=True)
    pw.add_argument("--fleet-secret", required=True)
    pw.add_argument("--manifest", type=Path, help="take the VINs from this manifest")
    pw.add_argument("--vehicles", type=int, help="or derive them: fleet size")
    pw.add_argument("--seed", type=int, default=1, help="or derive them: fleet seed")
    pw.add_argument("--mix", default="online=1")

    render = sub.add_parser(
        "render",
        help="write broker config, ACL, passwords, keys and a services env file for containers",
        formatter_class=DefaultsHelpFormatter,
    )
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--vehicle-port", type=int, default=1883)
    render.add_argument("--service-port", type=int, default=1884)
    render.add_argument("--bind", default="0.0.0.0", help="vehicle listener address")
    render.add_argument("--service-bind", default="0.0.0.0", help="service listener address")
    render.add_argument("--run-user", default="mosquitto", help="user mosquitto runs as")
    render.add_argument("--persistence-dir", type=Path, default=Path("/mosquitto/data"))
    render.add_argument("--mqtt-host", default="mosquitto", help="broker host the services use")
    render.add_argument("--redis-host", default="redis")
    render.add_argument("--acl-root", default="caas/v1")
    render.add_argument(
        "--plugin-path",
        type=Path,
        default=CONTAINER_PLUGIN_PATH,
        help="the caas_auth plugin inside the broker image (mosquitto/Dockerfile)",
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
    demo.add_argument("--seed", type=int, default=7)
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


def render_config(args: argparse.Namespace) -> int:
    """Config for docker-compose: the same templates and secrets as the local stack."""
    out: Path = args.out.resolve()
    secrets = Secrets(out)
    keys = (out / "gateway_signing_key.pem", out / "gateway_public_key.pem")
    if not keys[0].exists():
        write_keypair(*keys)
    settings = BrokerSettings(
        run_dir=out,
        vehicle_port=args.vehicle_port,
        service_port=args.service_port,
        gateway_user=GATEWAY_USER,
        gateway_password=secrets["gateway_password"],
        fleet_user=FLEET_USER,
        fleet_password=secrets["fleet_password"],
        acl_root=args.acl_root,
        bind_address=args.bind,
        service_bind=args.service_bind,
        run_user=args.run_user,
        persistence_dir=args.persistence_dir,
        log_to_stdout=True,
        plugin_path=args.plugin_path,
    )
    broker = Broker(settings)
    broker.write_files()
    mqtt = f"{args.mqtt_host}:{args.service_port}"
    env = {
        "CAAS_MQTT_URL": f"mqtt://{GATEWAY_USER}:{secrets['gateway_password']}@{mqtt}",
        "CAAS_FLEET_MQTT_URL": f"mqtt://{FLEET_USER}:{secrets['fleet_password']}@{mqtt}",
        "CAAS_REDIS_URL": f"redis://:{secrets['redis_password']}@{args.redis_host}:6379/0",
        "REDIS_PASSWORD": secrets["redis_password"],
        "CAAS_GATEWAY_TOKEN": secrets["gateway_token"],
        "CAAS_GATEWAY_SHARE_GROUP": secrets["gateway_share_group"],
        "CAAS_PAYMENT_PROVIDER_KEY": secrets["payment_provider_key"],
        "CAAS_PAYMENT_WEBHOOK_SECRET": secrets["payment_webhook_secret"],
        "CAAS_FLEET_SECRET": secrets["fleet_secret"],
        "CAAS_SIGNING_KEY": str(keys[0]),
        "CAAS_PUBLIC_KEY": str(keys[1]),
    }
    (out / "services.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    # the broker container runs as its own user: it reads these (hashes, not secrets)
    readable = [broker.conf_path, broker.vehicle_acl_path, broker.service_acl_path]
    readable += [broker.vehicle_passwd_path, broker.service_passwd_path, keys[1]]
    for path in readable:
        path.chmod(0o644)
    for private in (keys[0], out / "services.env", out / "secrets.json"):
        private.chmod(0o600)
    print(f"wrote broker config, ACL, passwords, keys and services.env to {out}")
    return 0


def up(args: argparse.Namespace) -> int:
    options = StackOptions(
        run_dir=args.run_dir,
        mqtt_vehicle_port=args.mqtt_port,
        mqtt_service_port=args.mqtt_service_port,
        redis_port=args.redis_port,
    )
    with LocalStack(options) as stack:
        if args.vehicles_from:
            vins = [v["vin"] for v in json.loads(args.vehicles_from.read_text())["fleet"]]
            stack.allow_vehicles(vins)
        print(export_lines(stack.env()), end="")
        print(f"# also in {stack.env_path}; Ctrl-C stops", flush=True)
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
            secret = args.fleet_secret
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
