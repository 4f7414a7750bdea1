"""What the API asks for, one module per use case: purchases, cancellation and
withdrawal, support actions, billing runs, the catalog, tokens, demo data."""
