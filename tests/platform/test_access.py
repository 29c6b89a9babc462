"""Authorization levels enforced by the auth interceptor from each RPC's `(beacon.v1.auth)`
option, for every kind of caller: a caller who cannot see the resource gets NOT_FOUND, one who
sees it without the role PERMISSION_DENIED. The probe servicers leave these RPCs unimplemented,
so UNIMPLEMENTED means the interceptors let the call through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
from sqlalchemy import select

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.db.models import Workspace
from tests.support.app import NewUser
from tests.support.builders import seed_workspace

PASSED, HIDDEN, DENIED = "passed", "NOT_FOUND", "PERMISSION_DENIED"
CALLERS = (
    "stranger",
    "org owner",
    "org admin",
    "org member",
    "billing admin",
    "guest member",
    "guest owner",
)
# Level (and the RPC that declares it) → what each caller gets, in CALLERS order.
EXPECTED: dict[str, tuple[str, ...]] = {
    "workspace member (GetJoinInfo)": (*(HIDDEN, PASSED, PASSED, PASSED, HIDDEN, PASSED, PASSED),),
    "workspace owner (RotateJoinCode)": (
        *(HIDDEN, PASSED, PASSED, DENIED, HIDDEN, DENIED, PASSED),
    ),
    "organization member (GetOrganization)": (
        *(HIDDEN, PASSED, PASSED, PASSED, PASSED, HIDDEN, HIDDEN),
    ),
    "organization admin (ListOrganizationMembers)": (
        *(HIDDEN, PASSED, PASSED, DENIED, DENIED, HIDDEN, HIDDEN),
    ),
    # Guests see the workspace they name, so hiding it would only mislead them: denied.
    "organization admin by workspace id (UpdateOrganization)": (
        *(HIDDEN, PASSED, PASSED, DENIED, DENIED, DENIED, DENIED),
    ),
}
Rpc = Callable[[Any], Awaitable[Any]]


async def outcome(call: Awaitable[Any]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return PASSED
        return str(error.code().name)
    raise AssertionError("the probe servicers do not implement this RPC")


def level_calls(probes: SimpleNamespace, org_id: str, workspace_id: str) -> dict[str, Rpc]:
    """For each level: a function of call metadata making one call at that level."""
    return {
        "workspace member (GetJoinInfo)": lambda md: probes.memberships.GetJoinInfo(
            member_pb.GetJoinInfoRequest(workspace_id=workspace_id), metadata=md
        ),
        "workspace owner (RotateJoinCode)": lambda md: probes.memberships.RotateJoinCode(
            member_pb.RotateJoinCodeRequest(workspace_id=workspace_id), metadata=md
        ),
        "organization member (GetOrganization)": lambda md: probes.organizations.GetOrganization(
            org_pb.GetOrganizationRequest(organization_id=org_id), metadata=md
        ),
        "organization admin (ListOrganizationMembers)": (
            lambda md: probes.memberships.ListOrganizationMembers(
                member_pb.ListOrganizationMembersRequest(organization_id=org_id), metadata=md
            )
        ),
        "organization admin by workspace id (UpdateOrganization)": (
            lambda md: probes.organizations.UpdateOrganization(
                org_pb.UpdateOrganizationRequest(workspace_id=workspace_id), metadata=md
            )
        ),
    }


async def test_every_level_for_every_kind_of_caller(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    users = {name: await new_user() for name in CALLERS}
    ids = {name: user.user_id for name, user in users.items()}
    workspace_id = await seed_workspace(
        app,
        ids["org owner"],
        roles={
            ids["org admin"]: "admin",
            ids["org member"]: "member",
            ids["billing admin"]: "billing_admin",
        },
        guests={ids["guest member"]: "member", ids["guest owner"]: "owner"},
    )
    async with app.db.transaction(write=False) as session:
        org_id = await session.scalar(
            select(Workspace.organization_id).where(Workspace.id == workspace_id)
        )
    assert org_id is not None
    actual = {
        level: tuple([await outcome(rpc(users[name].metadata)) for name in CALLERS])
        for level, rpc in level_calls(probes, org_id, workspace_id).items()
    }
    assert actual == EXPECTED


async def test_deleted_workspace_is_hidden_even_from_its_owner(
    probes: SimpleNamespace, new_user: NewUser, app: App
) -> None:
    owner = await new_user()
    workspace_id = await seed_workspace(app, owner.user_id, deleted=True)
    calls = level_calls(probes, "org_unused", workspace_id)
    for level in ("workspace member (GetJoinInfo)", "workspace owner (RotateJoinCode)"):
        assert await outcome(calls[level](owner.metadata)) == HIDDEN


async def test_unknown_and_malformed_resource_ids(
    probes: SimpleNamespace, new_user: NewUser
) -> None:
    user = await new_user()
    calls = level_calls(probes, "org_doesnotexist", "ws_doesnotexist")
    assert {
        level: await outcome(rpc(user.metadata)) for level, rpc in calls.items()
    } == dict.fromkeys(EXPECTED, HIDDEN)
    bad = level_calls(probes, "Robert'); DROP TABLE", "")
    assert await outcome(bad["organization member (GetOrganization)"](user.metadata)) == (
        "INVALID_ARGUMENT"
    )
    assert await outcome(bad["workspace member (GetJoinInfo)"](user.metadata)) == (
        "INVALID_ARGUMENT"
    )
