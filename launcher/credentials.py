"""MQTT credentials: mosquitto password files and generated secrets.

Per-vehicle passwords are derived from the fleet secret by
``protocol.credentials.vehicle_password`` (the simulator computes them the same way).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from protocol.private_files import write_private

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes for its $7$ (PBKDF2-SHA512) hashes
SALT_BYTES = 12


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A password hash in mosquitto 2's ``$7$`` format (same as ``mosquitto_passwd``)."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (
        f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def write_password_file(path: Path, entries: Iterable[tuple[str, str]]) -> int:
    """Write ``user:hash`` lines (mode 0600); returns how many were written."""
    lines = [f"{user}:{mosquitto_hash(password)}\n" for user, password in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "".join(lines))
    return len(lines)
