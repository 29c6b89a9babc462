"""Failed lookups as an attacker makes them: they are rate limited like any other call, and
another tenant's resource costs exactly the queries of one that does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import new_id
from service.server import BeaconServer, start_server
from tests.support import expect_error, unique
from tests.support.app import NewUser, all_stubs, make_settings
from tests.support.app import TestUser as Caller
from tests.support.builders import seed_organization, seed_run, seed_workspace


@pytest.fixture
async def strict(app: App, backend: str, tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    """Stubs of a server whose limits are small: GetWorkspace 6 a minute per user, and a
    ceiling of 20 calls a minute per peer; its counters are its own."""
    settings = make_settings(
        backend,
        app.settings.database_url,
        tmp_path,
        unique("beacon-test-lookups-"),
        rate_limit_scale=0.005,
        peer_rate_limit_per_minute=4000,  # 20 once scaled
    )
    server: BeaconServer = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield all_stubs(channel)
    await server.stop(grace=1.0)


def get_workspace(stubs: SimpleNamespace, user: Caller, workspace_id: str) -> Any:
    return stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace_id), metadata=user.metadata
    )


async def test_a_caller_who_only_gets_not_found_is_rate_limited(
    app: App, strict: SimpleNamespace, new_user: NewUser
) -> None:
    prober, victim = await new_user(), await new_user()
    theirs = await seed_workspace(app, victim.user_id)
    targets = [new_id("ws"), theirs] * 3
    for target in targets:
        await expect_error(grpc.StatusCode.NOT_FOUND, get_workspace(strict, prober, target))
    limited = await expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, get_workspace(strict, prober, theirs)
    )
    [violation] = limited.details["QuotaFailure"].violations
    assert (violation.subject, violation.description) == (
        f"user:{prober.user_id}",
        "6 per 60s per user",
    )
    # The victim's own budget is untouched by the prober's attempts.
    assert (await get_workspace(strict, victim, theirs)).id == theirs


async def test_every_peer_has_a_ceiling_counted_before_its_credentials(
    strict: SimpleNamespace,
) -> None:
    forged = (("authorization", "Bearer not-a-token"),)
    request = org_pb.ListMyOrganizationsRequest()
    for _ in range(20):
        await expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            strict.organizations.ListMyOrganizations(request, metadata=forged),
        )
    limited = await expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        strict.organizations.ListMyOrganizations(request, metadata=forged),
    )
    [violation] = limited.details["QuotaFailure"].violations
    assert violation.subject == "peer:ipv4:127.0.0.1"
    assert violation.description == "20 per 60s per peer"


@contextmanager
def recorded_statements(app: App) -> Iterator[list[str]]:
    """The SQL the server runs on the shared database meanwhile (health pings left out)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.strip().upper() not in ("SELECT 1", "BEGIN", "COMMIT", "ROLLBACK"):
            statements.append(statement)

    engine = app.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


Lookup = Callable[[str], Awaitable[Any]]


async def test_a_foreign_resource_costs_the_same_queries_as_a_missing_one(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    prober, victim = await new_user(), await new_user()
    md = prober.metadata
    their_run = await seed_run(app, victim.user_id)
    their_workspace = await seed_workspace(app, victim.user_id)
    their_organization = await seed_organization(app, victim.user_id)
    cases: list[tuple[Lookup, str, str]] = [
        (
            lambda i: stubs.runs.GetRun(run_pb.GetRunRequest(run_id=i), metadata=md),
            their_run,
            new_id("run"),
        ),
        (
            lambda i: stubs.organizations.GetOrganization(
                org_pb.GetOrganizationRequest(organization_id=i), metadata=md
            ),
            their_organization,
            new_id("org"),
        ),
        (
            lambda i: stubs.organizations.UpdateOrganization(
                org_pb.UpdateOrganizationRequest(workspace_id=i), metadata=md
            ),
            their_workspace,
            new_id("ws"),
        ),
        (lambda i: get_workspace(stubs, prober, i), their_workspace, new_id("ws")),
    ]
    await stubs.organizations.ListMyOrganizations(org_pb.ListMyOrganizationsRequest(), metadata=md)
    for lookup, foreign, missing in cases:
        shapes = []
        for target in (foreign, missing):
            with recorded_statements(app) as statements:
                failure = await expect_error(grpc.StatusCode.NOT_FOUND, lookup(target))
            assert target in failure.message
            shapes.append(statements)
        assert shapes[0] == shapes[1]
        assert len(shapes[0]) == 1, shapes[0]
