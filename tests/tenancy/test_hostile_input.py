"""Hostile values in every string field of the organization and workspace RPCs: the answer
is INVALID_ARGUMENT or NOT_FOUND with a message (INVALID_ARGUMENT for a NUL), never INTERNAL
or UNKNOWN; a refused call writes nothing (row counts of every table), and whatever succeeds
leaves the target organization and workspace exactly as they were."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from tests.support import failure
from tests.support.builders import new_workspace
from tests.support.security.snapshots import row_counts

Stubs = SimpleNamespace
HOSTILE = [
    "\x00",
    "a\x00b",
    "x" * 100_000,
    "' OR 1=1 --",
    "%_%",
    "\ud7ff\ufffd",
    "ws_\x00",
    "org_" + "a" * 300,
    "../../etc/passwd",
    "😀" * 50,
    " ",
]
# ABORTED: a hostile etag is simply a stale one.
ACCEPTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED}


async def outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        got = failure(error)
        assert got.message, error
        return got.code, got.message
    return grpc.StatusCode.OK, ""


async def test_hostile_strings_never_break_the_server(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    user = await new_user()
    workspace = (await new_workspace(stubs, user, name="Target")).workspace
    org_id = workspace.organization_id
    md = user.metadata
    organization = await stubs.organizations.GetOrganization(
        org_pb.GetOrganizationRequest(organization_id=org_id), metadata=md
    )
    calls: list[Callable[[str, Any], Awaitable[Any]]] = [
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", slug=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", domain=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", organization_id=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", icon_file_id=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", request_id=v), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(name="Ok name", brand_aliases=[v]), metadata=fresh
        ),
        lambda v, fresh: stubs.workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(
                name="Ok name", competitors=[ws_pb.Competitor(name="C", domain=v)]
            ),
            metadata=fresh,
        ),
        lambda v, fresh: stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(organization_id=v), metadata=md
        ),
        lambda v, fresh: stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(page_token=v), metadata=md
        ),
        lambda v, fresh: stubs.workspaces.GetWorkspace(
            ws_pb.GetWorkspaceRequest(workspace_id=v), metadata=md
        ),
        lambda v, fresh: stubs.workspaces.UpdateWorkspace(
            ws_pb.UpdateWorkspaceRequest(
                workspace=ws_pb.Workspace(id=workspace.id, icon_file_id=v),
                update_mask=FieldMask(paths=["icon_file_id"]),
            ),
            metadata=md,
        ),
        lambda v, fresh: stubs.workspaces.UpdateWorkspace(
            ws_pb.UpdateWorkspaceRequest(
                workspace=ws_pb.Workspace(id=workspace.id, etag=v, name="Still ok"),
                update_mask=FieldMask(paths=["name", v]),
            ),
            metadata=md,
        ),
        lambda v, fresh: stubs.workspaces.DeleteWorkspace(
            ws_pb.DeleteWorkspaceRequest(workspace_id=workspace.id, etag=v), metadata=md
        ),
        lambda v, fresh: stubs.organizations.CreateOrganization(
            org_pb.CreateOrganizationRequest(name=v), metadata=fresh
        ),
        lambda v, fresh: stubs.organizations.UpdateOrganization(
            org_pb.UpdateOrganizationRequest(
                organization=org_pb.Organization(id=org_id, name=v),
                update_mask=FieldMask(paths=["name"]),
            ),
            metadata=md,
        ),
        lambda v, fresh: stubs.organizations.LinkWorkosOrganization(
            org_pb.LinkWorkosOrganizationRequest(organization_id=org_id, workos_organization_id=v),
            metadata=md,
        ),
        lambda v, fresh: stubs.organizations.ListAuditEvents(
            org_pb.ListAuditEventsRequest(organization_id=org_id, workspace_id=v), metadata=md
        ),
        lambda v, fresh: stubs.organizations.ListAuditEvents(
            org_pb.ListAuditEventsRequest(organization_id=org_id, actor_id=v, action=v),
            metadata=md,
        ),
        lambda v, fresh: stubs.organizations.SetCurrentWorkspace(
            org_pb.SetCurrentWorkspaceRequest(workspace_id=v), metadata=md
        ),
    ]
    for value in HOSTILE:
        fresh = (await new_user()).metadata  # creates are rate limited per user
        for index, make in enumerate(calls):
            before = await row_counts(app)
            code, message = await outcome(make(value, fresh))
            case = (index, value[:20], code, message)
            assert code in ACCEPTED | {grpc.StatusCode.OK}, case
            if "\x00" in value:
                assert code == grpc.StatusCode.INVALID_ARGUMENT, case
            if code != grpc.StatusCode.OK:
                assert await row_counts(app) == before, ("a refused call wrote", *case)
    # Nothing hostile reached the target workspace; its organization holds at most a name
    # the owner renamed it to (UpdateOrganization accepts some of the values as names),
    # stored as sent but for trimming.
    after = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=md
    )
    renamed = await stubs.organizations.GetOrganization(
        org_pb.GetOrganizationRequest(organization_id=org_id), metadata=md
    )
    assert renamed.name in {organization.name} | {value.strip() for value in HOSTILE}
    assert after.organization_name == renamed.name
    after.ClearField("organization_name")
    workspace.ClearField("organization_name")
    for message in (renamed, organization):
        message.ClearField("name")
        message.ClearField("update_time")
        message.ClearField("etag")  # moves with a (hostile, accepted) rename
    assert after == workspace
    assert renamed == organization
