"""Folders and files only their owner can read: secrets, keys, customer data.

Each is created with its final mode (``os.open`` / ``mkdir`` with a mode, under a
umask that removes group and other bits), never written first and ``chmod``-ed after:
between the two, another user could open it and keep the descriptor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077  # what a process writing private files runs with
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Everything created inside (here and by what is called) gets no group or other
    bits, whatever mode the creating code asks for."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created 0700; an existing folder of ours is
    tightened to 0700 (a run folder left 0755 by an older version)."""
    with private_umask():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_uid == os.geteuid():
        path.chmod(PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, content: str | bytes) -> None:
    """Replace ``path`` by a 0600 file holding ``content``: written under a fresh
    temporary name created 0600, then renamed over (an older 0644 file is replaced,
    not rewritten in place, so it never holds the new content)."""
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists: a database file created this
    way keeps its mode when SQLite opens it (its -wal and -shm files copy it)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def open_private_append(path: Path) -> int:
    """A descriptor appending to ``path``, created 0600 if missing (a service's log)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
