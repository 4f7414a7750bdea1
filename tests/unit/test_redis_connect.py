"""The URL helpers of protocol/redis_connect.py: which db a URL names, and the same URL
without it (what the cluster probe connects to: a cluster node refuses SELECT)."""

from __future__ import annotations

import pytest

from protocol.redis_connect import node_url, url_db


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://:pw@h:6379/0", 0),
        ("redis://:pw@h:6379/5", 5),
        ("redis://:pw@h:6379", 0),
        ("redis://:pw@h:6379/", 0),
        ("redis://:pw@h:6379?db=7", 7),
        ("rediss://:pw@h:6379/2?ssl_cert_reqs=required", 2),
        ("unix:///run/redis.sock", 0),
        ("unix://:pw@/run/redis.sock?db=3", 3),
    ],
)
def test_url_db(url: str, db: int) -> None:
    assert url_db(url) == db


def test_node_url_drops_the_db_and_keeps_the_rest() -> None:
    assert node_url("redis://:pw@h:6379/5") == "redis://:pw@h:6379"
    assert (
        node_url("rediss://u:pw@h:6379/2?db=2&ssl_cert_reqs=required")
        == "rediss://u:pw@h:6379?ssl_cert_reqs=required"
    )
    assert url_db(node_url("redis://:pw@h:6379?db=7")) == 0
    assert node_url("unix:///run/redis.sock?db=3") == "unix:///run/redis.sock"
