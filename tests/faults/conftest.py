"""Fixtures of the fault tests: the fake providers, a private Redis, a database of the test's
own, a private PostgreSQL cluster. Every test here is PostgreSQL + Redis only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import PG_ADMIN_URL
from tests.support import pipeline as fixtures
from tests.support.fleet import PostgresCluster, fault_database
from tests.support.processes import RedisProcess

fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisProcess]:
    """A private redis-server without persistence: a test may kill it and lose its data."""
    server = await RedisProcess.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def database_url(backend: str) -> AsyncIterator[str]:
    """A migrated database of this test's own on the shared PostgreSQL."""
    async with fault_database(PG_ADMIN_URL) as url:
        yield url


@pytest.fixture(scope="module")
async def pg_cluster() -> AsyncIterator[PostgresCluster]:
    """A private PostgreSQL that the test may stop and start."""
    cluster = await PostgresCluster.create()
    try:
        yield cluster
    finally:
        await cluster.destroy()
