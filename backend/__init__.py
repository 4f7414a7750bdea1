"""Business backend (issue 4): catalog, purchases, payments, billing."""
