"""Shared fixtures: a migrated database and a running server per backend.

Every test that uses `app`, `grpc_target`, `channel`, `stubs` or `new_user` runs on SQLite
and, when PostgreSQL and Redis are reachable (BEACON_TEST_DATABASE_URL /
BEACON_TEST_REDIS_URL, defaulting to the local servers), on PostgreSQL + Redis too. Each
session creates uniquely named databases and drops them at the end.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import redis.asyncio as redis_async
from hypothesis import settings as hypothesis_settings
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
from service.app import App
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.config import Settings
from service.db.migrate import upgrade_async
from service.server import BeaconServer, start_server
from tests.support import (
    PG_ADMIN_URL,
    REDIS_URL,
    postgres_available,
    postgres_missing,
    with_database,
)

BACKENDS = ["sqlite", "postgres"] if postgres_available() else ["sqlite"]
# CI sets this: a run without the PostgreSQL + Redis backend fails instead of passing on
# SQLite alone (a changed URL or a stopped Redis would otherwise drop half the suite silently).
REQUIRE_POSTGRES = os.environ.get("BEACON_TEST_REQUIRE_POSTGRES", "") not in ("", "0")

# Property tests draw the same examples on every run, so a red CI run is reproducible and
# never a coin toss; BEACON_FUZZ_RANDOM=1 explores new examples (failures are saved in
# .hypothesis/ and replayed first).
hypothesis_settings.register_profile("repeatable", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(
    "explore" if os.environ.get("BEACON_FUZZ_RANDOM") else "repeatable"
)
TEST_SECRET = "beacon-test-secret-0123456789abcdef"
TEST_SIGNING_SECRET = "beacon-test-signing-secret-0123456789abcdef"
TEST_WEBHOOK_SECRET_KEY = "beacon-test-webhook-secret-key-0123456789abcdef"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:10]


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


@pytest.fixture(scope="session")
async def settings(
    backend: str, session_id: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    tmp = tmp_path_factory.mktemp(f"beacon-{backend}")
    name = f"beacon_test_{session_id}"
    prefix = f"beacon-test-{session_id}"
    async with temporary_database(backend, tmp, name) as url:
        yield make_settings(backend, url, tmp, prefix)
    if backend == "postgres":
        await delete_redis_keys(prefix)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[App]:
    application = App.from_settings(settings)
    yield application
    await application.close()


@pytest.fixture(scope="session")
async def beacon_server(app: App) -> AsyncIterator[BeaconServer]:
    server = await start_server(app, "127.0.0.1:0")
    yield server
    await server.stop(grace=1.0)


@pytest.fixture(scope="session")
def grpc_target(beacon_server: BeaconServer) -> str:
    return f"127.0.0.1:{beacon_server.port}"


@pytest.fixture(scope="session")
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
def stubs(channel: grpc.aio.Channel) -> SimpleNamespace:
    return all_stubs(channel)


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


@pytest.fixture
def new_user(app: App, settings: Settings) -> NewUser:
    """Factory of users with valid tokens; the user row exists when it returns."""

    async def make(email: str | None = None, name: str | None = None) -> TestUser:
        email = email or f"u{uuid.uuid4().hex[:12]}@example.com"
        name = name if name is not None else email.split("@")[0].title()
        token = mint_dev_token(settings, email=email, name=name)
        claims = Claims(
            issuer=settings.auth_dev_issuer,
            subject=f"dev|{email.lower()}",
            email=email.lower(),
            email_verified=True,
            name=name,
        )
        user_id = await ensure_user(app.db, claims)
        return TestUser(email=email.lower(), name=name, token=token, user_id=user_id)

    return make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres_only: runs only on the PostgreSQL + Redis backend (not collected on SQLite)",
    )
    if REQUIRE_POSTGRES and "postgres" not in BACKENDS:
        raise pytest.UsageError(
            "BEACON_TEST_REQUIRE_POSTGRES is set but the PostgreSQL + Redis backend is missing: "
            + "; ".join(postgres_missing())
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked postgres_only are not run (nor reported as skipped) on SQLite, nor the
    RabbitMQ variants of tests with a `broker` parameter (SQLite runs the in-process broker)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        on_sqlite = item_backend(item) == "sqlite"
        postgres_only = bool(item.get_closest_marker("postgres_only"))
        postgres_only |= params.get("broker", "redis") != "redis"
        (drop if on_sqlite and postgres_only else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    config.stash[BACKEND_OF] = {item.nodeid: item_backend(item) for item in items}


def item_backend(item: pytest.Item) -> str | None:
    """The backend a collected test runs on (None: it uses no backend)."""
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("backend")


BACKEND_OF = pytest.StashKey[dict[str, str | None]]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each report names its backend: under xdist the controller collects nothing, so it
    counts from the reports its workers send (user properties travel with them)."""
    item.user_properties.append(("backend", item_backend(item) or "none"))


OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def backend_counts(config: pytest.Config, stats: dict[str, list[Any]]) -> dict[str, Counter[str]]:
    """Per backend ("none" for tests without one): how many tests ended in each outcome."""
    backend_of = config.stash.get(BACKEND_OF, {})
    counts: dict[str, Counter[str]] = {name: Counter() for name in (*BACKENDS, "none")}
    seen: set[tuple[str, str]] = set()
    for outcome in OUTCOMES:
        for report in stats.get(outcome, ()):
            nodeid = getattr(report, "nodeid", None)
            if nodeid is None or (nodeid, outcome) in seen:
                continue
            seen.add((nodeid, outcome))
            backend = dict(getattr(report, "user_properties", ())).get("backend")
            backend = backend or backend_of.get(nodeid) or "none"
            counts.setdefault(backend, Counter())[outcome] += 1
    return counts


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """How many tests ran on each backend: a backend that silently dropped out shows as 0."""
    counts = backend_counts(config, terminalreporter.stats)
    terminalreporter.write_sep("-", "tests per backend")
    for backend, outcomes in counts.items():
        ran = outcomes["passed"] + outcomes["failed"] + outcomes["xfailed"] + outcomes["xpassed"]
        details = ", ".join(f"{outcomes[o]} {o}" for o in OUTCOMES if outcomes[o])
        terminalreporter.write_line(f"{backend}: {ran} ran" + (f" ({details})" if details else ""))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With BEACON_TEST_REQUIRE_POSTGRES, a session in which SQLite tests ran but no
    PostgreSQL test did fails (e.g. the backend vanished mid-collection)."""
    if not REQUIRE_POSTGRES or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    counts = backend_counts(session.config, reporter.stats)
    if counts["sqlite"]["passed"] and not counts.get("postgres", Counter())["passed"]:
        reporter.write_line("BEACON_TEST_REQUIRE_POSTGRES: no test ran on PostgreSQL + Redis")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
