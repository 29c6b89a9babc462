"""Soft-deleted workspaces (AIP-164): ListWorkspaces' show_deleted shows them to their owners
with delete_time and purge_time, and UndeleteWorkspace restores them before the purge."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import grpc

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import new_id, utcnow
from service.db.models import Workspace
from tests.support import expect_error
from tests.support.builders import (
    all_workspaces,
    grant_organization_role,
    grant_workspace_role,
    new_organization,
    new_workspace,
)

Stubs = SimpleNamespace


async def listed(
    stubs: Stubs, user: Any, *, show_deleted: bool, page_size: int = 0
) -> list[ws_pb.Workspace]:
    return await all_workspaces(stubs, user, page_size=page_size, show_deleted=show_deleted)


async def delete(stubs: Stubs, user: Any, workspace_id: str) -> None:
    await stubs.workspaces.DeleteWorkspace(
        ws_pb.DeleteWorkspaceRequest(workspace_id=workspace_id), metadata=user.metadata
    )


def undelete(stubs: Stubs, user: Any, workspace_id: str, etag: str = "") -> Any:
    return stubs.workspaces.UndeleteWorkspace(
        ws_pb.UndeleteWorkspaceRequest(workspace_id=workspace_id, etag=etag),
        metadata=user.metadata,
    )


async def age_deletion(app: App, workspace_id: str, days: int) -> None:
    """Moves the workspace's deletion `days` into the past."""
    async with app.db.transaction() as session:
        row = await session.get(Workspace, workspace_id)
        assert row is not None and row.delete_time is not None
        row.delete_time = row.delete_time - timedelta(days=days)


async def test_show_deleted_lists_the_deleted_workspaces_a_caller_owns(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member, admin, stranger = [await new_user() for _ in range(4)]
    org = await new_organization(stubs, owner)
    gone, kept, expired = [
        (await new_workspace(stubs, owner, organization_id=org.id)).workspace for _ in range(3)
    ]
    await grant_workspace_role(app, gone.id, member.user_id, "member")
    await grant_organization_role(app, org.id, admin.user_id, "admin")
    theirs = (await new_workspace(stubs, stranger)).workspace
    before = utcnow()
    for workspace_id in (gone.id, expired.id):
        await delete(stubs, owner, workspace_id)
    await delete(stubs, stranger, theirs.id)
    await age_deletion(app, expired.id, app.settings.workspace_retention_days + 1)

    assert [w.id for w in await listed(stubs, owner, show_deleted=False)] == [kept.id]
    for viewer in (owner, admin):
        shown = await listed(stubs, viewer, show_deleted=True, page_size=1)
        # Oldest first among the live ones; not the one due for purge, nor another tenant's.
        assert [w.id for w in shown] == [gone.id, kept.id]
        deleted, live = shown
        assert deleted.HasField("delete_time") and deleted.HasField("purge_time")
        delete_time = deleted.delete_time.ToDatetime().replace(tzinfo=before.tzinfo)
        assert before <= delete_time <= utcnow()
        retention = timedelta(days=app.settings.workspace_retention_days)
        assert deleted.purge_time.ToDatetime() - deleted.delete_time.ToDatetime() == retention
        assert not live.HasField("delete_time") and not live.HasField("purge_time")
    # A plain member of the deleted workspace does not own it: they see it no more.
    assert await listed(stubs, member, show_deleted=True) == []
    assert [w.id for w in await listed(stubs, stranger, show_deleted=True)] == [theirs.id]


async def test_a_page_token_of_one_listing_is_refused_by_the_other(
    stubs: Stubs, new_user: Any
) -> None:
    owner = await new_user()
    for _ in range(2):
        await new_workspace(stubs, owner)
    first = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(page_size=1), metadata=owner.metadata
    )
    assert first.next_page_token
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(
                page_size=1, page_token=first.next_page_token, show_deleted=True
            ),
            metadata=owner.metadata,
        ),
    )
    assert error.details["BadRequest"].field_violations[0].field == "page_token"


async def test_undelete_restores_the_workspace_for_its_owners_only(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member, stranger = [await new_user() for _ in range(3)]
    created = await new_workspace(stubs, owner, slug="restored")
    workspace = created.workspace
    await grant_workspace_role(app, workspace.id, member.user_id, "member")
    await delete(stubs, owner, workspace.id)
    [deleted] = await listed(stubs, owner, show_deleted=True)

    # Anyone but an owner gets the answer of a workspace that does not exist.
    ghost = new_id("ws")
    absent = await expect_error(grpc.StatusCode.NOT_FOUND, undelete(stubs, stranger, ghost))
    for caller in (member, stranger):
        refused = await expect_error(
            grpc.StatusCode.NOT_FOUND, undelete(stubs, caller, workspace.id)
        )
        assert refused.message.replace(workspace.id, ghost) == absent.message
        assert refused.details["ErrorInfo"].reason == absent.details["ErrorInfo"].reason
    await expect_error(grpc.StatusCode.ABORTED, undelete(stubs, owner, workspace.id, "999"))

    restored: ws_pb.Workspace = await undelete(stubs, owner, workspace.id, deleted.etag)

    assert restored.id == workspace.id and restored.slug == "restored"
    assert not restored.HasField("delete_time") and not restored.HasField("purge_time")
    assert int(restored.etag) > int(deleted.etag)
    got = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=member.metadata
    )
    assert got.name == workspace.name  # the member is back in with the workspace
    # A new join code (deletion freed the old one); a live workspace is not undeleted twice.
    info = await stubs.memberships.GetJoinInfo(
        member_pb.GetJoinInfoRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert info.code and info.expire_time.ToDatetime() > utcnow().replace(tzinfo=None)
    twice = await expect_error(grpc.StatusCode.ALREADY_EXISTS, undelete(stubs, owner, workspace.id))
    assert twice.details["ErrorInfo"].reason == "WORKSPACE_NOT_DELETED"
    # To a member who sees the live workspace, it is still NOT_FOUND: only owners restore.
    await expect_error(grpc.StatusCode.NOT_FOUND, undelete(stubs, member, workspace.id))


async def test_undelete_suffixes_a_slug_taken_meanwhile(stubs: Stubs, new_user: Any) -> None:
    owner = await new_user()
    org = await new_organization(stubs, owner)
    first = (await new_workspace(stubs, owner, slug="taken-slug", organization_id=org.id)).workspace
    await delete(stubs, owner, first.id)
    second = (
        await new_workspace(stubs, owner, slug="taken-slug", organization_id=org.id)
    ).workspace

    restored: ws_pb.Workspace = await undelete(stubs, owner, first.id)

    assert second.slug == "taken-slug"
    assert restored.slug.startswith("taken-slug-") and len(restored.slug) == len("taken-slug-") + 6


async def test_undelete_after_the_retention_period_is_not_found(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner = await new_user()
    workspace = (await new_workspace(stubs, owner)).workspace
    await delete(stubs, owner, workspace.id)
    await age_deletion(app, workspace.id, app.settings.workspace_retention_days + 1)

    await expect_error(grpc.StatusCode.NOT_FOUND, undelete(stubs, owner, workspace.id))

    async with app.db.transaction(write=False) as session:
        row = await session.get(Workspace, workspace.id)
        assert row is not None and row.delete_time is not None  # still deleted, awaiting purge
