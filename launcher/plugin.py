"""The broker's auth plugin (mosquitto/plugin/caas_auth.c), built on demand.

mosquitto loads it from a shared object; the launcher compiles it with gcc against the
Debian headers (``mosquitto-dev``, ``libmosquitto-dev``) into a gitignored build folder
whenever the object is missing or older than its source. No linking: the symbols the
plugin uses come from the broker binary that loads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from launcher.errors import PluginBuildFailed

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "mosquitto" / "plugin"
PLUGIN_SOURCE = PLUGIN_DIR / "caas_auth.c"
PLUGIN_BUILD_DIR = PLUGIN_DIR / "build"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared")
INSTALL_HINT = "install gcc, mosquitto-dev and libmosquitto-dev (scripts/setup.sh does)"


def build_plugin(
    source: Path = PLUGIN_SOURCE, build_dir: Path = PLUGIN_BUILD_DIR, compiler: str = "gcc"
) -> Path:
    """The path of the compiled plugin, (re)built first when missing or stale."""
    target = build_dir / f"{source.stem}.so"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    cc = shutil.which(compiler)
    if cc is None:
        raise PluginBuildFailed(f"no C compiler ({compiler}) to build it: {INSTALL_HINT}")
    build_dir.mkdir(parents=True, exist_ok=True)
    # a private name, then an atomic rename: concurrent launchers never load a half file
    partial = build_dir / f".{target.name}.{os.getpid()}.tmp"
    try:
        result = subprocess.run(
            [cc, *CFLAGS, "-o", str(partial), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise PluginBuildFailed(_why(source, result.stderr))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _why(source: Path, stderr: str) -> str:
    """One line out of the compiler's complaint."""
    if "mosquitto" in stderr and "No such file" in stderr:
        return f"the mosquitto plugin headers are missing: {INSTALL_HINT}"
    errors = [line for line in stderr.splitlines() if "error" in line]
    first = (errors or stderr.splitlines() or ["no output"])[0].strip()
    return f"compiling {source.name} failed: {first}"
