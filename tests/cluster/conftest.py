"""Fixtures of the cluster tests: a real Redis Cluster of three primaries for the session (started
from ``redis-server``; the tests fail, not skip, when it is missing), emptied for each test module,
and the settings of an app on it and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from railbook.bench.redis_cluster import redis_cluster
from railbook.config import Settings
from tests.support import app_settings


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """The ports of the session's cluster nodes (each a primary)."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


@pytest.fixture(scope="module")
def cluster_url(cluster_ports: list[int]) -> str:
    """The URL of one node of the cluster (the client finds the others), every primary emptied first:
    a Redis Cluster has no logical databases, so each module starts from an empty cluster."""
    for port in cluster_ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        node.flushall()
        node.script_flush()
        node.close()
    return f"redis://127.0.0.1:{cluster_ports[0]}"


@pytest.fixture(scope="module")
def cluster_settings(cluster_url: str, pg_url: str) -> Settings:
    """An app's settings on PostgreSQL and the cluster."""
    return app_settings(pg_url, cluster_url).model_copy(update={"redis_cluster": True})


def cluster_client(url: str) -> RedisCluster:
    """A synchronous cluster client (for checks from a test)."""
    return RedisCluster.from_url(url)
