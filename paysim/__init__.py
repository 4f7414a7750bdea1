"""The payment provider simulator: a service of its own, with durable state (SQLite),
reached by the backend over HTTP only. See docs/paysim.md."""
