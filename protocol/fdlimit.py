"""The process's file-descriptor limit: one descriptor per MQTT connection or socket."""

from __future__ import annotations

import resource


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of MQTT connections
    need thousands of file descriptors; the usual soft default is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
