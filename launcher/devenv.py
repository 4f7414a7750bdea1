"""The local stack's variables for services started by hand.

The services read only their environment (and options). These commands give them the
variables of a stack started with ``python -m launcher up`` (its ``stack.env``):

    python -m launcher run gateway -- --port 8081     # exec `python -m gateway --port 8081`
    eval "$(python -m launcher env)"                  # or put them in this shell

``run`` gives the child the stack's variables under the current environment: a
variable already set wins. ``env`` prints them all as ``export`` lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from launcher.errors import UnknownService
from launcher.stack import export_lines, read_stack_env, stack_env_path
from protocol.private_files import PRIVATE_UMASK

SERVICES = ("gateway", "backend", "paysim", "vehicle_sim")  # `python -m <name>`


def stack_env(run_dir: Path) -> dict[str, str]:
    """The variables of the stack in ``run_dir``; StackEnvMissing without its stack.env."""
    return read_stack_env(stack_env_path(run_dir))


def service_env(run_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` over the stack's variables: what is already set wins."""
    return {**stack_env(run_dir), **environ}


def service_argv(service: str, args: list[str]) -> list[str]:
    """``python -m <service> ARGS``; UnknownService for a name not in SERVICES."""
    if service not in SERVICES:
        raise UnknownService(service, SERVICES)
    if args[:1] == ["--"]:  # `run gateway -- --port 1` on Pythons that keep the "--"
        args = args[1:]
    return [sys.executable, "-m", service, *args]


def exec_service(service: str, args: list[str], run_dir: Path) -> NoReturn:
    """Replace this process by the service, with the stack's variables."""
    argv = service_argv(service, args)
    env = service_env(run_dir, os.environ)
    sys.stdout.flush()
    os.umask(PRIVATE_UMASK)  # its databases and logs in the run folder: private too
    os.execve(argv[0], argv, env)


def env_script(run_dir: Path) -> str:
    """The stack's variables as ``export`` lines for ``eval``."""
    return export_lines(stack_env(run_dir))
