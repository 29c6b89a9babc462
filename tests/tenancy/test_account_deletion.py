"""DeleteAccount: what goes (the user, their solo organizations with all data, memberships,
uploads) and what stays (anything another member still uses, invitations other
organizations sent to the user's email, an owner for every workspace)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
from sqlalchemy import func, select

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import new_id, utcnow
from service.db.models import (
    File,
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    Prompt,
    User,
    Workspace,
    WorkspaceMember,
)
from tests.support import expect_error
from tests.support.builders import (
    all_workspaces,
    grant_organization_role,
    grant_workspace_role,
    new_organization,
    new_workspace,
    upload_icon,
)

Stubs = SimpleNamespace


async def delete_account(stubs: Stubs, user: Any) -> ws_pb.DeleteAccountResponse:
    reply: ws_pb.DeleteAccountResponse = await stubs.workspaces.DeleteAccount(
        ws_pb.DeleteAccountRequest(), metadata=user.metadata
    )
    return reply


async def count(app: App, model: Any, *conditions: Any) -> int:
    async with app.db.transaction(write=False) as session:
        return int(
            await session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
        )


async def test_solo_organizations_go_with_all_their_data(
    stubs: Stubs, new_user: Any, app: App, http: httpx.AsyncClient
) -> None:
    user = await new_user()
    icon = await upload_icon(stubs, http, user)
    created = await new_workspace(stubs, user, organization_name="Solo Org", icon_file_id=icon)
    workspace = created.workspace
    spare_icon = await upload_icon(stubs, http, user)
    async with app.db.transaction() as session:
        session.add(
            Prompt(
                id=new_id("prm"),
                workspace_id=workspace.id,
                text="best crm?",
                text_hash=new_id("h"),
                create_time=utcnow(),
            )
        )
        session.add(
            OrganizationInvitation(
                id=new_id("inv"),
                organization_id=(await new_org_row(session)),
                email=user.email,
                role="member",
                create_time=utcnow(),
                expire_time=utcnow() + timedelta(days=7),
            )
        )
    assert (await http.get(workspace.icon_url)).status_code == 200

    reply = await delete_account(stubs, user)

    assert reply.user_id == user.user_id
    assert list(reply.deleted_organization_ids) == [created.organization.id]
    assert await count(app, Organization, Organization.id == created.organization.id) == 0
    assert await count(app, Workspace, Workspace.id == workspace.id) == 0
    assert await count(app, Prompt, Prompt.workspace_id == workspace.id) == 0
    assert await count(app, File, File.id.in_([icon, spare_icon])) == 0
    # Another organization's invitation to the email belongs to that organization: it stays.
    assert await count(app, OrganizationInvitation, OrganizationInvitation.email == user.email) == 1
    assert await count(app, User, User.id == user.user_id) == 0
    # The icon's bytes are gone too.
    assert (await http.get(workspace.icon_url)).status_code == 404


async def new_org_row(session: Any) -> str:
    """An unrelated organization to hold an invitation (straight in SQL)."""
    org = Organization(id=new_id("org"), name="Inviter", slug=new_id("inviter").replace("_", "-"))
    session.add(org)
    await session.flush()
    return org.id


async def test_sole_owner_of_a_shared_organization_deletes_nothing(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member = await new_user(), await new_user()
    shared = await new_workspace(stubs, owner, organization_name="Shared Org")
    solo = await new_workspace(stubs, owner, organization_name="Solo Org")
    await grant_organization_role(app, shared.organization.id, member.user_id, "member")

    error = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, delete_account(stubs, owner))

    violations = error.details["PreconditionFailure"].violations
    assert [(v.type, v.subject) for v in violations] == [("SOLE_OWNER", shared.organization.id)]
    assert shared.organization.id in error.message
    # Nothing was deleted, not even the solo organization.
    mine = {w.id for w in await all_workspaces(stubs, owner)}
    assert mine == {shared.workspace.id, solo.workspace.id}
    assert await count(app, User, User.id == owner.user_id) == 1
    # Once the member is an owner too, the account can go; the shared organization stays.
    async with app.db.transaction() as session:
        row = await session.get(OrganizationMember, (shared.organization.id, member.user_id))
        assert row is not None
        row.role = "owner"
    reply = await delete_account(stubs, owner)
    assert list(reply.deleted_organization_ids) == [solo.organization.id]
    remaining = await all_workspaces(stubs, member)
    assert [w.id for w in remaining] == [shared.workspace.id]


async def test_a_workspace_guest_counts_as_another_member(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, guest = await new_user(), await new_user()
    created = await new_workspace(stubs, owner, organization_name="Has Guest")
    await grant_workspace_role(app, created.workspace.id, guest.user_id, "member")
    error = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, delete_account(stubs, owner))
    assert error.details["PreconditionFailure"].violations[0].subject == created.organization.id
    assert [w.id for w in await all_workspaces(stubs, guest)] == [created.workspace.id]


async def test_leaving_members_keep_other_peoples_data_intact(
    stubs: Stubs, new_user: Any, app: App, http: httpx.AsyncClient
) -> None:
    owner, leaver = await new_user(), await new_user()
    org = await new_organization(stubs, owner)
    await grant_organization_role(app, org.id, leaver.user_id, "admin")
    # The leaver made a workspace in the owner's organization, with the leaver's icon.
    icon = await upload_icon(stubs, http, leaver)
    made = (await new_workspace(stubs, leaver, organization_id=org.id, icon_file_id=icon)).workspace
    owners_own = (await new_workspace(stubs, owner, organization_id=org.id)).workspace
    reply = await delete_account(stubs, leaver)

    assert list(reply.deleted_organization_ids) == []
    assert {w.id for w in await all_workspaces(stubs, owner, org.id)} == {made.id, owners_own.id}
    assert await count(app, OrganizationMember, OrganizationMember.user_id == leaver.user_id) == 0
    assert await count(app, WorkspaceMember, WorkspaceMember.user_id == leaver.user_id) == 0
    # The icon other members still see survives, now held by an owner of the organization.
    still = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=made.id), metadata=owner.metadata
    )
    assert still.icon_file_id == icon
    assert (await http.get(still.icon_url)).status_code == 200
    # The organization's audit log records the departure.
    events = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(
            organization_id=org.id, action="beacon.v1.WorkspaceService/DeleteAccount"
        ),
        metadata=owner.metadata,
    )
    assert [list(e.target_ids) for e in events.audit_events] == [[leaver.user_id]]


async def test_the_last_owner_among_a_workspaces_members_cannot_leave_it_ownerless(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    """A workspace guest-owned by the caller, with other explicit members, in an
    organization that survives: refused by name until another member owns it."""
    founder, caller, colleague = await new_user(), await new_user(), await new_user()
    org = await new_organization(stubs, founder)
    workspace = (await new_workspace(stubs, founder, organization_id=org.id)).workspace
    async with app.db.transaction() as session:
        founder_row = await session.get(WorkspaceMember, (workspace.id, founder.user_id))
        assert founder_row is not None
        await session.delete(founder_row)  # the founder's access is the organization role
    await grant_workspace_role(app, workspace.id, caller.user_id, "owner")
    await grant_workspace_role(app, workspace.id, colleague.user_id, "member")

    error = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, delete_account(stubs, caller))

    violations = error.details["PreconditionFailure"].violations
    assert [(v.type, v.subject) for v in violations] == [("LAST_OWNER", workspace.id)]
    assert await count(app, WorkspaceMember, WorkspaceMember.user_id == caller.user_id) == 1
    async with app.db.transaction() as session:
        row = await session.get(WorkspaceMember, (workspace.id, colleague.user_id))
        assert row is not None
        row.role = "owner"
    reply = await delete_account(stubs, caller)
    assert reply.user_id == caller.user_id
    assert await count(app, WorkspaceMember, WorkspaceMember.workspace_id == workspace.id) == 1


async def test_a_service_key_acting_as_the_user_cannot_delete_the_account(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    user = await new_user()
    await new_workspace(stubs, user, organization_name="Kept Org")
    secret, info = await app.services.service_keys.create(
        "front end", ["act_as"], all_organizations=True
    )
    try:
        acting = (("authorization", f"Bearer {secret}"), ("x-beacon-act-as", user.user_id))
        error = await expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            stubs.workspaces.DeleteAccount(ws_pb.DeleteAccountRequest(), metadata=acting),
        )
    finally:
        await app.services.service_keys.revoke(info.id)
    assert error.details["ErrorInfo"].reason == "ACT_AS_NOT_ALLOWED"
    assert await count(app, User, User.id == user.user_id) == 1
