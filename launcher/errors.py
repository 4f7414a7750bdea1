"""Exceptions of the launcher.

LauncherError
├── BinaryMissing     mosquitto / redis-server is not installed
├── PluginBuildFailed the broker's auth plugin cannot be compiled (no gcc or headers)
├── ServiceFailed     a child process exited or never became ready
├── StackEnvMissing   no stack.env in the run folder (`launcher up` not run there)
└── UnknownService    `launcher run` was given a name that is not one of the services
"""

from __future__ import annotations

from pathlib import Path


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


class StackEnvMissing(LauncherError):
    def __init__(self, path: Path) -> None:
        run_dir = path.parent
        super().__init__(
            f"{path} not found: start the local stack first with "
            f"`python -m launcher up --run-dir {run_dir}` (or pass --run-dir)"
        )
        self.path = path


class UnknownService(LauncherError):
    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown service {name!r}: one of {', '.join(known)}")
        self.name = name
