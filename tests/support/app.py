"""The app under test: its settings, databases, users and stubs (the fixtures are in conftest)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import redis.asyncio as redis_async
from sqlalchemy.ext.asyncio import create_async_engine

from beacon.v1 import (
    membership_service_pb2_grpc,
    organization_service_pb2_grpc,
    prompt_service_pb2_grpc,
    run_service_pb2_grpc,
    schedule_service_pb2_grpc,
    webhook_service_pb2_grpc,
    workspace_service_pb2_grpc,
)
from service.config import Settings
from service.db.migrate import upgrade_async
from tests.support import (
    PG_ADMIN_URL,
    REDIS_URL,
    with_database,
)

TEST_SECRET = "beacon-test-secret-0123456789abcdef"


TEST_SIGNING_SECRET = "beacon-test-signing-secret-0123456789abcdef"
TEST_WEBHOOK_SECRET_KEY = "beacon-test-webhook-secret-key-0123456789abcdef"


async def _admin_execute(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def temporary_database(backend: str, tmp: Path, name: str) -> AsyncIterator[str]:
    """A migrated, uniquely named database URL, dropped afterwards."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / (name + '.db')}"
        await upgrade_async(url)
        yield url
        return
    await _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(PG_ADMIN_URL, name)
        await upgrade_async(url)
        yield url
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(
    backend: str, database_url: str, data_dir: Path, prefix: str, **over: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": REDIS_URL if backend == "postgres" else "",
        "grpc_addr": "127.0.0.1:0",
        "http_addr": "127.0.0.1:0",
        "data_dir": data_dir,
        "auth_secret": TEST_SECRET,
        "signing_secret": TEST_SIGNING_SECRET,
        "webhook_secret_key": TEST_WEBHOOK_SECRET_KEY,
        "metrics_addr": "",
        "rate_limit_key_prefix": prefix,
        "service_key_cache_seconds": 0,
        "shutdown_grace_seconds": 5.0,
        "uvloop": False,
    }
    values.update(over)
    return Settings(**values)


async def delete_redis_keys(prefix: str) -> None:
    client = redis_async.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def all_stubs(channel: grpc.aio.Channel) -> SimpleNamespace:
    """A stub of every Beacon service on `channel`."""
    return SimpleNamespace(
        organizations=organization_service_pb2_grpc.OrganizationServiceStub(channel),
        workspaces=workspace_service_pb2_grpc.WorkspaceServiceStub(channel),
        memberships=membership_service_pb2_grpc.MembershipServiceStub(channel),
        schedules=schedule_service_pb2_grpc.ScheduleServiceStub(channel),
        prompts=prompt_service_pb2_grpc.PromptServiceStub(channel),
        runs=run_service_pb2_grpc.RunServiceStub(channel),
        webhooks=webhook_service_pb2_grpc.WebhookServiceStub(channel),
    )


@dataclass
class TestUser:
    email: str
    name: str
    token: str
    user_id: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


NewUser = Callable[..., Awaitable[TestUser]]
