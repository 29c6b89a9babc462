"""Shared fixtures: a migrated database and a running server per backend.

Every test that uses `app`, `grpc_target`, `channel`, `stubs` or `new_user` runs on SQLite
and, when PostgreSQL and Redis are reachable (BEACON_TEST_DATABASE_URL /
BEACON_TEST_REDIS_URL, defaulting to the local servers), on PostgreSQL + Redis too. Each
session creates uniquely named databases and drops them at the end.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from hypothesis import settings as hypothesis_settings

from service.app import App
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.config import Settings
from service.server import BeaconServer, start_server
from tests.support import (
    postgres_available,
    postgres_missing,
)
from tests.support.app import (
    NewUser,
    TestUser,
    all_stubs,
    delete_redis_keys,
    make_settings,
    temporary_database,
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


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:10]


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
