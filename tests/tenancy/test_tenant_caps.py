"""Count limits that hold without money caps: live workspaces per organization
(BEACON_MAX_WORKSPACES_PER_ORGANIZATION) and organizations per user
(BEACON_MAX_ORGANIZATIONS_PER_USER), however many creates race.

A server on the shared database with small caps: 3 workspaces per organization, 2
organizations per user (rate limits scaled up, on counters of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.server import start_server
from tests.support import RpcFailure, expect_error, failure, unique
from tests.support.app import NewUser, all_stubs

WORKSPACES = 3
ORGANIZATIONS = 2
RACERS = 6


@pytest.fixture(scope="module")
async def capped(app: App) -> AsyncIterator[SimpleNamespace]:
    settings = app.settings.model_copy(
        update={
            "max_workspaces_per_organization": WORKSPACES,
            "max_organizations_per_user": ORGANIZATIONS,
            "rate_limit_scale": 1000.0,
            "rate_limit_key_prefix": unique("beacon-test-caps-"),
        }
    )
    server = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield all_stubs(channel)
    finally:
        await server.stop(grace=1.0)


async def race(calls: list[Awaitable[Any]]) -> tuple[list[Any], list[RpcFailure]]:
    """The answers and the failures of calls made all at once."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failures = [failure(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    answers = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(answers) + len(failures) == len(calls), outcomes
    return answers, failures


def assert_limit(got: RpcFailure, reason: str, subject: str, limit: int, variable: str) -> None:
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION, got.message
    info = got.details["ErrorInfo"]
    assert (info.reason, info.domain, info.metadata["limit"]) == (reason, "beacon", str(limit))
    [violation] = got.details["PreconditionFailure"].violations
    assert (violation.type, violation.subject) == (reason, subject)
    assert variable in got.message


async def test_an_organization_holds_at_most_its_workspaces_however_many_race(
    capped: SimpleNamespace, new_user: NewUser
) -> None:
    owner = await new_user()
    org = await capped.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name="Capped Org"), metadata=owner.metadata
    )

    def create(name: str) -> Any:
        return capped.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name=name, organization_id=org.id),
            metadata=owner.metadata,
        )

    created, refused = await race([create(f"Workspace {i}") for i in range(RACERS)])
    assert len(created) == WORKSPACES and len(refused) == RACERS - WORKSPACES
    for got in refused:
        assert_limit(
            got,
            "WORKSPACE_LIMIT_REACHED",
            org.id,
            WORKSPACES,
            "BEACON_MAX_WORKSPACES_PER_ORGANIZATION",
        )
    listed = await capped.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(organization_id=org.id), metadata=owner.metadata
    )
    assert len(listed.workspaces) == WORKSPACES

    # A deleted workspace frees its place; restoring it while the place is taken is refused.
    deleted = created[0].workspace
    await capped.workspaces.DeleteWorkspace(
        ws_pb.DeleteWorkspaceRequest(workspace_id=deleted.id), metadata=owner.metadata
    )
    await create("Replacement")
    got = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        capped.workspaces.UndeleteWorkspace(
            ws_pb.UndeleteWorkspaceRequest(workspace_id=deleted.id), metadata=owner.metadata
        ),
    )
    assert_limit(
        got, "WORKSPACE_LIMIT_REACHED", org.id, WORKSPACES, "BEACON_MAX_WORKSPACES_PER_ORGANIZATION"
    )


async def test_a_user_owns_at_most_their_organizations_however_many_race(
    capped: SimpleNamespace, new_user: NewUser
) -> None:
    user, other = await new_user(), await new_user()

    def create(name: str) -> Any:
        return capped.organizations.CreateOrganization(
            org_pb.CreateOrganizationRequest(name=name), metadata=user.metadata
        )

    created, refused = await race([create(f"Org {i}") for i in range(RACERS)])
    assert len(created) == ORGANIZATIONS and len(refused) == RACERS - ORGANIZATIONS
    for got in refused:
        assert_limit(
            got,
            "ORGANIZATION_LIMIT_REACHED",
            user.user_id,
            ORGANIZATIONS,
            "BEACON_MAX_ORGANIZATIONS_PER_USER",
        )
    # Every way of making one more organization is held to the cap: a named new one, and the
    # personal organization a first workspace would create.
    for request in (
        ws_pb.CreateWorkspaceRequest(name="Acme", organization_name="Third Org"),
        ws_pb.CreateWorkspaceRequest(name="Acme"),
    ):
        got = await expect_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            capped.workspaces.CreateWorkspace(request, metadata=user.metadata),
        )
        assert got.details["ErrorInfo"].reason == "ORGANIZATION_LIMIT_REACHED"
    # Workspaces in an organization they own are still theirs to create, and the cap is theirs.
    await capped.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(name="Acme", organization_id=created[0].id),
        metadata=user.metadata,
    )
    await capped.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name="Someone Else's"), metadata=other.metadata
    )
