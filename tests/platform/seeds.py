"""Rows written straight through the models, so platform tests do not depend on the
product's domain code: an organization, a workspace in it, a run in that workspace."""

from __future__ import annotations

from collections.abc import Mapping

from service.app import App
from service.clock import new_id, utcnow
from service.db.models import Organization, OrganizationMember, Run, Workspace, WorkspaceMember

NO_ONE: Mapping[str, str] = {}


async def seed_organization(
    app: App, user_id: str, *members: str, roles: Mapping[str, str] = NO_ONE
) -> str:
    """A new organization owned by `user_id`, with `members` as plain members and `roles`
    (user id → owner | admin | member | billing_admin) as given; its id."""
    org_id = new_id("org")
    everyone = {user_id: "owner", **dict.fromkeys(members, "member"), **roles}
    async with app.db.transaction() as session:
        session.add(Organization(id=org_id, name="Seeded Org", slug=org_id.replace("_", "-")))
        await session.flush()
        session.add_all(
            OrganizationMember(organization_id=org_id, user_id=u, role=r, create_time=utcnow())
            for u, r in everyone.items()
        )
    return org_id


async def seed_workspace(
    app: App,
    user_id: str,
    *members: str,
    roles: Mapping[str, str] = NO_ONE,
    guests: Mapping[str, str] = NO_ONE,
    deleted: bool = False,
) -> str:
    """A workspace in a new organization (see `seed_organization`), with `guests` (user id →
    owner | member) as explicit workspace members outside the organization; its id."""
    org_id = await seed_organization(app, user_id, *members, roles=roles)
    workspace_id = new_id("ws")
    async with app.db.transaction() as session:
        session.add(
            Workspace(
                id=workspace_id,
                organization_id=org_id,
                name="Seeded",
                slug="seeded",
                delete_time=utcnow() if deleted else None,
            )
        )
        await session.flush()
        session.add_all(
            WorkspaceMember(workspace_id=workspace_id, user_id=u, role=r, create_time=utcnow())
            for u, r in guests.items()
        )
    return workspace_id


async def seed_run(app: App, user_id: str) -> str:
    """A queued run in a new workspace that `user_id` owns; its id."""
    workspace_id = await seed_workspace(app, user_id)
    run_id = new_id("run")
    async with app.db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status="queued",
                create_time=utcnow(),
            )
        )
    return run_id
