"""``check-invariants``: the money and lifecycle rules, checked from the database alone."""
