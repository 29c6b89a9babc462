"""The workspace and organization domain functions against a real database (no server)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.app import App
from service.clock import utcnow
from service.domain.actor import Access, Actor
from service.domain.errors import Aborted, AlreadyExists, InvalidArgument
from service.domain.tenancy import organizations, workspace_lifecycle, workspace_views
from service.domain.tenancy.workspace_lifecycle import NewWorkspace, WorkspacePatch
from tests.support import unique

RANDOM_SUFFIX = re.compile(r"-[a-z0-9]{6}")


def call_as(
    user_id: str, method: str = "beacon.v1.WorkspaceService/CreateWorkspace", **values: Any
) -> Actor:
    return Actor(
        actor_id=user_id,
        user_id=user_id,
        service_key_id=None,
        request_id=unique("req-"),
        action=method,
        **values,
    )


async def test_slug_collisions_in_one_organization(app: App, new_user: Any) -> None:
    user = await new_user()
    call = call_as(user.user_id)
    async with app.db.transaction() as session:
        org = await organizations.create_organization(session, call, unique("Org "), now=utcnow())
    slugs = []
    for _ in range(3):
        async with app.db.transaction() as session:
            created = await workspace_lifecycle.create_workspace(
                session,
                call,
                NewWorkspace(name="Acme Europe", organization_id=org.id),
                now=utcnow(),
            )
            slugs.append(created.workspace.slug)
    assert slugs[0] == "acme-europe" and len(set(slugs)) == 3
    assert all(RANDOM_SUFFIX.fullmatch(slug.removeprefix("acme-europe")) for slug in slugs[1:])
    with pytest.raises(AlreadyExists):
        async with app.db.transaction() as session:
            await workspace_lifecycle.create_workspace(
                session,
                call,
                NewWorkspace(name="Other", slug=slugs[1], organization_id=org.id),
                now=utcnow(),
            )


async def test_organization_slugs_are_global_and_suffixed(app: App, new_user: Any) -> None:
    name = unique("Shared Name ")
    slugs = []
    for _ in range(3):
        user = await new_user()
        async with app.db.transaction() as session:
            org = await organizations.create_organization(
                session, call_as(user.user_id), name, now=utcnow()
            )
            slugs.append(org.slug)
    base = name.lower().replace(" ", "-")
    # Another tenant's choice shows as a random suffix, never as a count (-2, -3).
    assert slugs[0] == base and len(set(slugs)) == 3
    assert all(RANDOM_SUFFIX.fullmatch(slug.removeprefix(base)) for slug in slugs[1:])


async def test_update_checks_etag_and_bumps_version_only_on_change(app: App, new_user: Any) -> None:
    user = await new_user()
    call = call_as(user.user_id, "beacon.v1.WorkspaceService/UpdateWorkspace")
    async with app.db.transaction() as session:
        created = await workspace_lifecycle.create_workspace(
            session, call, NewWorkspace(name="Etag Ws"), now=utcnow()
        )
    workspace_id = created.workspace.id
    async with app.db.transaction() as session:
        await workspace_lifecycle.update_workspace(
            session,
            call,
            workspace_id,
            WorkspacePatch(name="Etag Ws"),
            ["name"],
            etag="1",
            now=utcnow(),
        )
        assert (await workspace_views.load_view(session, workspace_id)).etag == "1"  # no change
        await workspace_lifecycle.update_workspace(
            session,
            call,
            workspace_id,
            WorkspacePatch(domain="Etag.example"),
            ["domain"],
            "1",
            now=utcnow(),
        )
        view = await workspace_views.load_view(session, workspace_id)
    assert (view.etag, view.domain) == ("2", "etag.example")
    with pytest.raises(Aborted):
        async with app.db.transaction() as session:
            await workspace_lifecycle.update_workspace(
                session,
                call,
                workspace_id,
                WorkspacePatch(name="Late"),
                ["name"],
                etag="1",
                now=utcnow(),
            )
    with pytest.raises(InvalidArgument) as error:
        async with app.db.transaction() as session:
            await workspace_lifecycle.update_workspace(
                session, call, workspace_id, WorkspacePatch(slug="x"), ["slug"], now=utcnow()
            )
    assert error.value.violations[0].field == "workspace.slug"
    async with app.db.transaction(write=False) as session:
        assert (await workspace_views.load_view(session, workspace_id)).name == "Etag Ws"


async def test_navigation_prefers_the_stored_workspace(app: App, new_user: Any) -> None:
    user = await new_user()
    call = call_as(user.user_id)
    async with app.db.transaction() as session:
        first = await workspace_lifecycle.create_workspace(
            session, call, NewWorkspace(name="First"), now=utcnow()
        )
        second = await workspace_lifecycle.create_workspace(
            session, call, NewWorkspace(name="Second", organization_name="Second Org"), now=utcnow()
        )
    async with app.db.transaction(write=False) as session:
        state = await organizations.navigation_state(session, user.user_id)
    assert state.current_workspace_id == first.workspace.id
    set_call = call_as(
        user.user_id,
        "beacon.v1.OrganizationService/SetCurrentWorkspace",
        access=Access(organization_id=second.organization.id, workspace_id=second.workspace.id),
    )
    async with app.db.transaction() as session:
        state = await organizations.set_current_workspace(
            session, set_call, second.workspace.id, now=utcnow()
        )
    assert state.current_workspace_id == second.workspace.id
    assert state.current_organization_id == second.organization.id
