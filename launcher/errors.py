"""Exceptions of the launcher.

LauncherError
├── BinaryMissing     mosquitto / redis-server is not installed
├── PluginBuildFailed the broker's auth plugin cannot be compiled (no gcc or headers)
└── ServiceFailed     a child process exited or never became ready
"""

from __future__ import annotations


class LauncherError(Exception):
    """Base class of launcher errors."""


class BinaryMissing(LauncherError):
    def __init__(self, binary: str) -> None:
        super().__init__(
            f"{binary} is not installed: run `bash scripts/setup.sh` "
            f"(it apt-get installs it) or install it yourself"
        )
        self.binary = binary


class PluginBuildFailed(LauncherError):
    """One line saying why, and what to install."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"broker plugin: {detail}")
        self.detail = detail


class ServiceFailed(LauncherError):
    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} failed: {detail}")
        self.service = service
        self.detail = detail
