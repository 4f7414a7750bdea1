"""How a service starts or refuses to: the exit codes of every command line, the
bounded wait for a dependency at start-up, and the one line a refusal prints.

A misconfiguration is answered in ONE line on stderr naming the variable (or the host)
and what to do, with an exit code saying which kind of problem it is, never with a
traceback. Only start-up waits here: once a service has started, a lost connection is
a transient outage its loops ride out (gateway/retry.py, the MQTT reconnect).

Exit codes (docs/operations.md, "Configuration errors"):

====  =======================================================================
0     done
1     the command ran and found a problem (a money-rule violation, a conflict)
2     usage or configuration error: an option or a ``CAAS_*`` variable
3     a dependency (broker, Redis, database) did not answer within the wait
4     a dependency refused our credentials (never retried)
====  =======================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TypeVar

from protocol.errors import ProtocolError
from protocol.settings import problem_line

T = TypeVar("T")
DEFAULT_STARTUP_WAIT_S = 15.0  # CAAS_STARTUP_WAIT_S: a broker or Redis (re)starting in time


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    CONFIG = 2
    UNREACHABLE = 3
    AUTH_REFUSED = 4


EXIT_CODES_EPILOG = (
    "exit codes: 0 done; 1 the command found a problem; 2 usage or configuration "
    "error (an option or a CAAS_* variable); 3 a dependency (broker, Redis, database) "
    "did not answer within CAAS_STARTUP_WAIT_S; 4 a dependency refused the credentials. "
    "Each error is one line on stderr naming the variable or host (docs/operations.md)."
)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command line's ``--help``: each option's default shown, except where there
    is none to show (None, a flag's False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = action.default is None or action.default is False  # not 0: a default
        if nothing or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class DependencyProblem(ProtocolError):
    """A dependency (``what`` at ``address``: host:port, never a password) that the
    setting ``setting`` names could not be used; the message says what to do."""

    def __init__(self, message: str, what: str, address: str, setting: str) -> None:
        super().__init__(message)
        self.what = what
        self.address = address
        self.setting = setting


class DependencyUnreachable(DependencyProblem):
    """It did not answer in time."""

    def __init__(self, what: str, address: str, setting: str, waited_s: float, cause: str):
        super().__init__(
            f"{setting}: {what} at {address} not reachable within {waited_s:g}s ({cause}); "
            f"start it or fix {setting} (CAAS_STARTUP_WAIT_S waits longer)",
            what, address, setting,
        )  # fmt: skip


class DependencyFailed(DependencyProblem):
    """It answered, with an error that waiting will not cure (the original exception is
    the ``__cause__``): a configuration error, exit 2."""

    def __init__(self, what: str, address: str, setting: str, cause: str) -> None:
        super().__init__(
            f"{setting}: {what} at {address} answered with an error ({cause}); "
            f"check that {setting} points at the {what}",
            what, address, setting,
        )  # fmt: skip


class CredentialsRefused(DependencyProblem):
    """It refused the credentials ``setting`` holds (never retried)."""

    def __init__(self, what: str, address: str, setting: str, cause: str) -> None:
        super().__init__(
            f"{setting}: {what} at {address} refused the credentials ({cause}); "
            f"fix the user or password in {setting}",
            what, address, setting,
        )  # fmt: skip


def exit_code(exc: BaseException) -> ExitCode:
    if isinstance(exc, CredentialsRefused):
        return ExitCode.AUTH_REFUSED
    if isinstance(exc, DependencyUnreachable):
        return ExitCode.UNREACHABLE
    return ExitCode.CONFIG


def refuse(prog: str, exc: BaseException) -> int:
    """Print the one line for ``exc`` (``prog: ...``) and return its exit code."""
    print(f"{prog}: {problem_line(exc)}", file=sys.stderr)
    return int(exit_code(exc))


class Dependency:
    """A dependency probed at start-up: what it is, where (no password), which setting
    names it, and which of its exceptions mean "try again" (``transient`` types, or
    ``also_transient`` true) and "credentials refused"."""

    def __init__(
        self,
        what: str,
        address: str,
        setting: str,
        transient: tuple[type[BaseException], ...],
        refused: Callable[[BaseException], bool],
        also_transient: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self.what = what
        self.address = address
        self.setting = setting
        self.transient = transient
        self.refused = refused
        self.also_transient = also_transient

    async def wait(self, probe: Callable[[], Awaitable[T]], wait_s: float) -> T:
        """``probe()``'s result, retried while it fails transiently for up to ``wait_s``;
        CredentialsRefused at once when the dependency refuses the credentials,
        DependencyFailed at once on any other error, DependencyUnreachable when the
        wait runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.1
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    return await probe()
            except Exception as exc:
                if self.refused(exc):
                    raise CredentialsRefused(
                        self.what, self.address, self.setting, first_line(exc)
                    ) from None
                last = exc
                if not self._transient(exc):
                    cause = first_line(exc)
                    raise DependencyFailed(self.what, self.address, self.setting, cause) from exc
            if loop.time() + delay >= deadline:
                raise DependencyUnreachable(
                    self.what, self.address, self.setting, wait_s, first_line(last)
                ) from None
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    def _transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (*self.transient, TimeoutError)) or self.also_transient(exc)


def first_line(exc: BaseException, max_chars: int = 120) -> str:
    """The exception's first line, or its driver's (SQLAlchemy's ``orig``): short."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= max_chars else line[: max_chars - 1] + "…"
