"""Fixtures several integration modules share: a Redis database of the module's own, and a container on
each store configuration (PostgreSQL + Redis, SQLite + the in-process allocator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from railbook.bootstrap import Container
from railbook.config import Settings
from tests.conftest import claimed_redis_db
from tests.support import container_for


@pytest.fixture(scope="module")
def module_redis_url() -> Iterator[str]:
    """A Redis database of this module's own: the session's apps run order committers in the
    background, and they must not consume or acknowledge the streams these tests stage by hand."""
    with claimed_redis_db(1) as url:
        yield url


@pytest.fixture(scope="module", params=["pg", "sqlite"])
def store_settings(request: pytest.FixtureRequest) -> Settings:
    """Both configurations (resolved outside the event loop: creating the databases migrates them)."""
    if request.param == "pg":
        return Settings(
            database_url=request.getfixturevalue("pg_url"),
            redis_url=request.getfixturevalue("module_redis_url"),
            jwt_secret="s" * 40,
            sale_days_ahead=2,
        )
    return Settings(
        database_url=request.getfixturevalue("sqlite_url"), jwt_secret="s" * 40, sale_days_ahead=2
    )


@pytest.fixture(scope="module")
async def container(store_settings: Settings) -> AsyncIterator[Container]:
    """The container of ``store_settings``, shared by the module's tests."""
    async with container_for(store_settings) as c:
        yield c
