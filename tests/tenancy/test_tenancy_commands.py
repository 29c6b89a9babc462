"""The tenancy commands as the domain convention has them: `(session, actor, args, now)`,
each recording its own audit event at `now` and keeping request ids, so that a retry with the
same id returns the first result and changes nothing (against the real database, no server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.app import App
from service.db.models import (
    AuditEvent,
    Organization,
    OrganizationInvitation,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain.actor import Access, Actor
from service.domain.tenancy import (
    accounts,
    files,
    join_codes,
    organization_members,
    organizations,
    workspace_lifecycle,
    workspace_members,
)
from service.domain.tenancy.members import Member
from service.domain.tenancy.workspace_lifecycle import NewWorkspace
from tests.support import actor_of, unique
from tests.support.app import NewUser
from tests.support.builders import (
    Tenant,
    grant_organization_role,
    grant_workspace_role,
    make_workspace,
)

NOW = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
# A command called with a request id; `attempt` changes its arguments, so that a retry which
# ran again would show in its result and in the database.
Command = Callable[[AsyncSession, Actor, Tenant, str, int], Awaitable[object]]


async def create_workspace(
    session: AsyncSession, actor: Actor, tenant: Tenant, request_id: str, attempt: int
) -> object:
    return await workspace_lifecycle.create_workspace(
        session,
        actor,
        NewWorkspace(name=f"Retried {attempt}", organization_id=tenant.organization_id),
        request_id=request_id,
        now=NOW,
    )


async def create_organization(
    session: AsyncSession, actor: Actor, tenant: Tenant, request_id: str, attempt: int
) -> object:
    return await organizations.create_organization(
        session, actor, f"Retried {attempt}", request_id=request_id, now=NOW
    )


def inviting(invite: Callable[..., Awaitable[Member]], scope: Callable[[Tenant], str]) -> Command:
    """AddMember or InviteOrganizationMember of a new email into the tenant's `scope`."""

    async def command(
        session: AsyncSession, actor: Actor, tenant: Tenant, request_id: str, attempt: int
    ) -> object:
        return await invite(
            session,
            actor,
            scope(tenant),
            email=f"invitee-{attempt}@example.com",
            role="",
            invitation_ttl=timedelta(days=7),
            request_id=request_id,
            now=NOW,
        )

    return command


async def rotate_join_code(
    session: AsyncSession, actor: Actor, tenant: Tenant, request_id: str, attempt: int
) -> object:
    return await join_codes.rotate_join_code(
        session,
        actor,
        tenant.workspace_id,
        ttl_seconds=3600.0 * (attempt + 1),
        default_ttl=timedelta(days=7),
        request_id=request_id,
        now=NOW,
    )


COMMANDS: dict[str, Command] = {
    "beacon.v1.WorkspaceService/CreateWorkspace": create_workspace,
    "beacon.v1.OrganizationService/CreateOrganization": create_organization,
    "beacon.v1.MembershipService/AddMember": inviting(
        workspace_members.add_member, lambda tenant: tenant.workspace_id
    ),
    "beacon.v1.MembershipService/InviteOrganizationMember": inviting(
        organization_members.invite_organization_member, lambda tenant: tenant.organization_id
    ),
    "beacon.v1.MembershipService/RotateJoinCode": rotate_join_code,
}
# The commands whose request ids also belong to the workspace or organization they name.
SCOPED = [action for action in COMMANDS if not action.endswith("/CreateOrganization")]


def owner_of(user_id: str, tenant: Tenant, action: str) -> Actor:
    """The owner of the tenant's organization and workspace calling `action`."""
    actor = actor_of(user_id, action)
    access = Access(
        organization_id=tenant.organization_id,
        workspace_id=tenant.workspace_id,
        organization_role="owner",
        workspace_role="owner",
    )
    return Actor(
        actor_id=actor.actor_id,
        user_id=actor.user_id,
        service_key_id=None,
        request_id=actor.request_id,
        action=action,
        access=access,
    )


async def owned_workspace(app: App, user_id: str) -> Tenant:
    """A workspace in an organization of its own, both owned by `user_id`."""
    tenant = await make_workspace(app, user_id)
    async with app.db.transaction() as session:
        session.add(
            WorkspaceMember(
                workspace_id=tenant.workspace_id, user_id=user_id, role="owner", create_time=NOW
            )
        )
    return tenant


async def tenancy_state(app: App, tenant: Tenant) -> tuple[object, ...]:
    """What the commands change: how many organizations, workspaces and invitations exist,
    and the tenant's join code."""
    async with app.db.transaction(write=False) as session:
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (Organization, Workspace, WorkspaceInvitation, OrganizationInvitation)
        ]
        code = await session.scalar(
            select(Workspace.join_code).where(Workspace.id == tenant.workspace_id)
        )
    return (*counts, code)


async def event_times(app: App, actor: Actor) -> list[datetime]:
    """The times of the audit events recorded for calls made as `actor`."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(
            select(AuditEvent.create_time).where(AuditEvent.request_id == actor.request_id)
        )
        return list(rows)


@pytest.mark.parametrize("action", list(COMMANDS), ids=[a.rsplit("/")[-1] for a in COMMANDS])
async def test_a_retried_request_id_returns_the_first_result_and_changes_nothing(
    app: App, new_user: NewUser, action: str
) -> None:
    user = await new_user()
    tenant = await owned_workspace(app, user.user_id)
    actor = owner_of(user.user_id, tenant, action)
    request_id = unique("req-")
    before = await tenancy_state(app, tenant)
    async with app.db.transaction() as session:
        first = await COMMANDS[action](session, actor, tenant, request_id, 0)
    after = await tenancy_state(app, tenant)
    assert after != before, "the first call changes something"
    async with app.db.transaction() as session:
        again = await COMMANDS[action](session, actor, tenant, request_id, 1)
    assert again == first, "a retry returns the first result (stored as plain data)"
    assert await tenancy_state(app, tenant) == after, "a retry changes nothing"
    assert await event_times(app, actor) == [NOW], "the change was audited once, at now"


@pytest.mark.parametrize("action", SCOPED, ids=[a.rsplit("/")[-1] for a in SCOPED])
async def test_a_request_id_belongs_to_its_actor_and_resource(
    app: App, new_user: NewUser, action: str
) -> None:
    owner, other = await new_user(), await new_user()
    tenant = await owned_workspace(app, owner.user_id)
    second = await owned_workspace(app, owner.user_id)
    await grant_organization_role(app, tenant.organization_id, other.user_id, "owner")
    await grant_workspace_role(app, tenant.workspace_id, other.user_id, "owner")
    request_id = unique("req-")
    results = []
    for attempt, (user_id, where) in enumerate(
        [(owner.user_id, tenant), (owner.user_id, second), (other.user_id, tenant)]
    ):
        async with app.db.transaction() as session:
            actor = owner_of(user_id, where, action)
            results.append(await COMMANDS[action](session, actor, where, request_id, attempt))
    # The same id for another resource, or from another owner of the same one, is a request
    # of its own.
    assert results[1] != results[0] and results[2] != results[0] and results[2] != results[1]


async def test_creating_an_organization_replays_only_for_its_own_user(
    app: App, new_user: NewUser
) -> None:
    action = "beacon.v1.OrganizationService/CreateOrganization"
    request_id = unique("req-")
    created = []
    for _ in range(2):
        user = await new_user()
        async with app.db.transaction() as session:
            created.append(
                await organizations.create_organization(
                    session, actor_of(user.user_id, action), "Same", request_id=request_id, now=NOW
                )
            )
    assert created[0].id != created[1].id


async def test_commands_without_request_ids_run_at_the_time_given(
    app: App, new_user: NewUser
) -> None:
    owner, joiner = await new_user(), await new_user()
    tenant = await owned_workspace(app, owner.user_id)
    async with app.db.transaction() as session:
        ticket = await files.create_upload(session, app.settings, owner.user_id, now=NOW)
        info = await join_codes.rotate_join_code(
            session,
            owner_of(owner.user_id, tenant, "beacon.v1.MembershipService/RotateJoinCode"),
            tenant.workspace_id,
            ttl_seconds=None,
            default_ttl=timedelta(days=7),
            now=NOW,
        )
    assert ticket.expire_time == NOW + timedelta(seconds=app.settings.upload_url_ttl_seconds)
    joining = actor_of(joiner.user_id, "beacon.v1.MembershipService/JoinWorkspaceByCode")
    async with app.db.transaction() as session:
        member = await join_codes.join_by_code(session, joining, info.code, now=NOW)
    assert member.create_time == NOW
    assert await event_times(app, joining) == [NOW]
    leaving = actor_of(joiner.user_id, "beacon.v1.WorkspaceService/DeleteAccount")
    async with app.db.transaction() as session:
        deleted = await accounts.delete_account(session, leaving, now=NOW)
    assert deleted.user_id == joiner.user_id
    assert await event_times(app, leaving) == [NOW], "the account's organization saw it leave"
