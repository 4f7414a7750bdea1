"""Starts the project's own infrastructure (mosquitto, redis-server) as child processes
with the project's configs, on chosen or free ports. Used by the README commands,
the demo and the test fixtures. ``python -m launcher --help``.
"""
