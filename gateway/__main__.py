"""``python -m gateway [--host H] [--port P]``: one gateway worker (uvicorn inside).

Configured by the environment (docs/spec.md §6); run as many workers as you like against the
same broker and Redis. ``python -m gateway --reindex`` puts every stored activation in
exactly the list route's indexes it belongs in (those stored before the route existed,
or changed by an older worker), and exits (safe while workers run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from redis.asyncio.cluster import RedisCluster

from gateway.api import create_app
from gateway.config import GatewaySettings, ResolvedSettings
from gateway.errors import ConfigError
from gateway.keys import layout
from gateway.service import Gateway
from gateway.store import Store
from protocol.errors import KeyFileError, ProtocolError
from protocol.heap import freeze_start_up
from protocol.http_edge import serve
from protocol.logsetup import configure_logging
from protocol.probes import wait_for_broker, wait_for_redis
from protocol.redis_connect import open_redis
from protocol.settings import redis_url
from protocol.startup import EXIT_CODES_EPILOG, DefaultsHelpFormatter, refuse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="CaaS OTA gateway worker: HTTP API (docs/spec.md §3) + MQTT activation engine. "
        "Configured by CAAS_MQTT_URL, CAAS_REDIS_URL, CAAS_GATEWAY_TOKEN, CAAS_SIGNING_KEY, "
        "CAAS_GATEWAY_SHARE_GROUP, CAAS_TOPIC_ROOT, CAAS_EVENTS_STREAM, CAAS_STARTUP_WAIT_S "
        "and CAAS_RETRY_<FIELD> (docs/gateway.md).",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8081, help="listen port")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="log level"
    )
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="rebuild the indexes of GET /v1/activations for every stored activation "
        "(after an upgrade from a gateway without them), then exit; needs only "
        "CAAS_REDIS_URL; safe while workers run",
    )
    return parser


async def reindex(settings: GatewaySettings) -> int:
    url = redis_url("CAAS_REDIS_URL", settings.redis_url)
    await wait_for_redis(url, "CAAS_REDIS_URL", settings.startup_wait_s)
    client = await open_redis(url, decode_responses=True)
    try:
        cluster = isinstance(client, RedisCluster)
        keys = layout(settings.gateway_key_prefix, settings.events_stream, cluster)
        return await Store(client, keys).reindex()
    finally:
        await client.aclose()


def reindex_main() -> int:
    try:
        indexed = asyncio.run(reindex(GatewaySettings()))
    except (ProtocolError, ValueError) as exc:  # ConfigError, ValidationError, probes
        return refuse("gateway", exc)
    print(f"gateway: {indexed} activations indexed")
    return 0


async def wait_for_dependencies(gateway: Gateway) -> None:
    """Redis and the broker answer and take our credentials, within the start-up wait
    (after the start, their outages are ridden out: gateway/retry.py, the reconnect)."""
    wait_s = gateway.cfg.base.startup_wait_s
    await wait_for_redis(gateway.cfg.redis_url, "CAAS_REDIS_URL", wait_s)
    await wait_for_broker(gateway.broker, "CAAS_MQTT_URL", wait_s)


def load_gateway(settings: ResolvedSettings) -> Gateway:
    try:
        return Gateway(settings)
    except KeyFileError as exc:
        problem = f"{exc.problem}: {exc.path}; point it at the gateway's Ed25519 private key (PEM)"
        raise ConfigError("CAAS_SIGNING_KEY", problem) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.reindex:
        return reindex_main()
    try:  # each problem one line with its exit code (protocol/startup.py), no traceback
        gateway = load_gateway(GatewaySettings().require())
        asyncio.run(wait_for_dependencies(gateway))
    except (ProtocolError, ValueError) as exc:
        return refuse("gateway", exc)
    app = create_app(gateway)
    freeze_start_up()  # modules, settings, app: out of every collection's walk
    serve(app, args.host, args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
