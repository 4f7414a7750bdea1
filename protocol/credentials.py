"""Per-vehicle MQTT passwords, derived from the fleet secret.

A vehicle connects to the vehicle listener with username = its VIN and a password that
is the HMAC-SHA256 of the VIN under ``CAAS_FLEET_SECRET``. Whoever holds the fleet
secret (the simulator, and whoever writes the broker's password file) computes any
vehicle's password without a lookup table, and a leaked vehicle password says nothing
about another's.
"""

from __future__ import annotations

import hashlib
import hmac

VEHICLE_PASSWORD_CHARS = 32


def vehicle_password(fleet_secret: str, vin: str) -> str:
    """The password of ``vin`` on the vehicle listener (32 hex characters)."""
    digest = hmac.new(fleet_secret.encode(), vin.encode(), hashlib.sha256).hexdigest()
    return digest[:VEHICLE_PASSWORD_CHARS]
