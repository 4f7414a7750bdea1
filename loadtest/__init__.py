"""Locust load tests (issue 6)."""
