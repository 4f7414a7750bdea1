"""The outside systems, each behind a ``Protocol``: the payment provider (over HTTP),
the gateway, the maintenance system (VSS)."""
