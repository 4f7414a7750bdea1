"""One log line format for every service: ``<time> level=… logger=… event=<message>``
(the services log ``dotted.event key=value …`` messages), so one grep reads them all."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
