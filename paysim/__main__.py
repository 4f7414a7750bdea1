"""``python -m paysim [--host H] [--port P] [--db PATH]``: the payment provider
simulator as a service (uvicorn inside). See docs/paysim.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from paysim.app import build
from paysim.config import DEFAULT_DB_PATH, PaysimSettings
from protocol.http_edge import serve
from protocol.logsetup import configure_logging
from protocol.settings import ConfigError
from protocol.startup import EXIT_CODES_EPILOG, DefaultsHelpFormatter, refuse

ENV_HELP = (
    "Configured by CAAS_PAYMENT_PROVIDER_KEY (the bearer key clients send, required, "
    "16+ characters), CAAS_PAYMENT_WEBHOOK_SECRET (signs the webhooks, required, 16+ "
    "characters), CAAS_PAYSIM_WEBHOOK_URL (where webhooks go) and the initial failure "
    "modes CAAS_PAYSIM_DECLINE_RATE, _TIMEOUT_RATE, _SETTLE_DELAY_S, _SETTLE_FAIL_RATE, "
    "_DUPLICATE_RATE, _REORDER, _SEED."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paysim",
        description="Payment provider simulator: authorizations, captures, cancels, charges, "
        "refunds, signed settlement webhooks, failure modes; all state in SQLite. " + ENV_HELP,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8082, help="listen port")
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get("CAAS_PAYSIM_DB") or DEFAULT_DB_PATH),
        help="SQLite file with all the provider's state (default: $CAAS_PAYSIM_DB, else "
        f"{DEFAULT_DB_PATH})",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="log level"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.log_level != "debug":  # one line per webhook POST otherwise
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = PaysimSettings().require(db=args.db, db_option="--db (CAAS_PAYSIM_DB)")
        app = build(settings)
    except (ConfigError, ValueError) as exc:  # one line, never a traceback
        return refuse("paysim", exc)
    logging.getLogger("paysim").info(
        "paysim.started host=%s port=%d db=%s", args.host, args.port, args.db
    )  # at info and above, its log says it ran (a quiet provider logs nothing else)
    serve(app, args.host, args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
