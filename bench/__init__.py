"""Benchmarks and load drivers. ``python -m bench --help``."""
