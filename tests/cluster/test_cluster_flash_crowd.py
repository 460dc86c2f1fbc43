"""A flash crowd through the app on PostgreSQL and a real Redis Cluster, with the audit of the
distributed flash-crowd test: every accepted order final, no seat segment twice, each segment sold
exactly to capacity, the allocator equal to the system of record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from railbook.config import Settings
from tests.integration.test_flash_crowd import MEMBERS, ROWS, _flash_crowd
from tests.support import app_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def cluster_client(cluster_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(cluster_settings, request_timeout=60) as client:
        yield client


async def test_flash_crowd_on_a_cluster_sells_exactly_the_capacity(cluster_client: httpx.AsyncClient) -> None:
    await _flash_crowd(cluster_client, rows=ROWS, members=MEMBERS)
