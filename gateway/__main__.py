"""``python -m gateway [--host H] [--port P]``: one gateway worker (uvicorn inside).

Configured by the environment (SPEC §6); run as many workers as you like against the
same broker and Redis. ``python -m gateway --reindex`` puts every stored activation in
exactly the list route's indexes it belongs in (those stored before the route existed,
or changed by an older worker), and exits (safe while workers run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import redis.asyncio as aioredis
import redis.exceptions
import uvicorn

from gateway.api import create_app
from gateway.config import GatewaySettings
from gateway.errors import ConfigError
from gateway.keys import Keys
from gateway.service import Gateway
from gateway.store import Store
from protocol.errors import KeyFileError
from protocol.logsetup import configure_logging
from protocol.settings import problem_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="CaaS OTA gateway worker: HTTP API (SPEC §3) + MQTT activation engine. "
        "Configured by CAAS_MQTT_URL, CAAS_REDIS_URL, CAAS_GATEWAY_TOKEN, CAAS_SIGNING_KEY, "
        "CAAS_GATEWAY_SHARE_GROUP, CAAS_TOPIC_ROOT, CAAS_EVENTS_STREAM and CAAS_RETRY_<FIELD>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="rebuild the indexes of GET /v1/activations for every stored activation "
        "(after an upgrade from a gateway without them), then exit; needs only "
        "CAAS_REDIS_URL; safe while workers run",
    )
    return parser


async def reindex(settings: GatewaySettings) -> int:
    if not settings.redis_url:
        raise ConfigError("CAAS_REDIS_URL", "not set")
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = Keys(settings.gateway_key_prefix, settings.events_stream)
        return await Store(client, keys).reindex()
    finally:
        await client.aclose()


def reindex_main() -> int:
    try:
        indexed = asyncio.run(reindex(GatewaySettings()))
    except (ConfigError, ValueError, redis.exceptions.ConnectionError) as exc:
        print(f"gateway: {problem_line(exc)}", file=sys.stderr)
        return 2
    print(f"gateway: {indexed} activations indexed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.reindex:
        return reindex_main()
    try:
        settings = GatewaySettings().require()
        app = create_app(Gateway(settings))
    except (ConfigError, KeyFileError, ValueError) as exc:  # one line, never a traceback
        print(f"gateway: {problem_line(exc)}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
