"""Rows written straight through the models, so platform tests do not depend on the
product's domain code: an organization, a workspace in it, a run in that workspace."""

from __future__ import annotations

from service.app import App
from service.db.models import Organization, OrganizationMember, Run, Workspace
from service.domain.clock import new_id, utcnow


async def seed_organization(app: App, user_id: str, role: str = "owner") -> str:
    """A new organization with `user_id` as a member of `role`; returns its id."""
    org_id = new_id("org")
    async with app.db.transaction() as session:
        session.add(Organization(id=org_id, name="Seeded Org", slug=org_id.replace("_", "-")))
        await session.flush()
        session.add(
            OrganizationMember(
                organization_id=org_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )
    return org_id


async def seed_run(app: App, user_id: str) -> str:
    """A queued run in a new workspace of a new organization that `user_id` owns."""
    org_id = await seed_organization(app, user_id)
    workspace_id, run_id = new_id("ws"), new_id("run")
    async with app.db.transaction() as session:
        session.add(
            Workspace(id=workspace_id, organization_id=org_id, name="Seeded", slug="seeded")
        )
        await session.flush()
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
