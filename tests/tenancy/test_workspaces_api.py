"""WorkspaceService through a real server: creation rules, pagination, concurrency, updates
with field masks and etags, soft deletion and purge, providers."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import func, select

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from service.db.models import Organization, Schedule, Workspace
from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
from tests.support import expect_error, failure, unique
from tests.support.builders import (
    all_workspaces,
    grant_organization_role,
    new_organization,
    new_workspace,
)

Stubs = SimpleNamespace


def update(workspace: ws_pb.Workspace, *paths: str) -> ws_pb.UpdateWorkspaceRequest:
    return ws_pb.UpdateWorkspaceRequest(workspace=workspace, update_mask=FieldMask(paths=paths))


RANDOM_SUFFIXED = re.compile(r"-[a-z0-9]{6}")  # what a taken derived slug gets


async def my_organization_count(stubs: Stubs, user: Any) -> int:
    reply = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(), metadata=user.metadata
    )
    return len(reply.organizations)


# Create -----------------------------------------------------------------------------------


async def test_personal_organization_is_created_once_and_named_after_the_user(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user(name="Ada Lovelace")
    first = await new_workspace(stubs, user)
    second = await new_workspace(stubs, user)
    assert first.organization.name == "Ada Lovelace's Organization"
    assert second.organization.id == first.organization.id
    assert first.is_first_workspace and not second.is_first_workspace
    assert await my_organization_count(stubs, user) == 1


async def test_bad_input_writes_nothing_and_names_the_field(stubs: Stubs, new_user: Any) -> None:
    user = await new_user()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": " x "}, "name"),
        ({"name": "Fine", "domain": "http://10.0.0.1"}, "domain"),
        ({"name": "Fine", "domain": "co.uk"}, "domain"),
        (
            {"name": "Fine", "competitors": [ws_pb.Competitor(name="Pages", domain="github.io")]},
            "competitors[0].domain",
        ),
        ({"name": "Fine", "slug": "Bad Slug"}, "slug"),
        ({"name": "Fine", "organization_name": "A"}, "organization_name"),
        (
            {"name": "Fine", "organization_name": "Org", "organization_id": "org_abc"},
            "organization_name",
        ),
        ({"name": "Fine", "brand_aliases": ["ok", ""]}, "brand_aliases[1]"),
        (
            {"name": "Fine", "competitors": [ws_pb.Competitor(name="Globex", domain="bad host")]},
            "competitors[0].domain",
        ),
        ({"name": "Fine", "request_id": "r" * 101}, "request_id"),
    ]
    for fields, field in cases:
        error = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, new_workspace(stubs, user, **fields)
        )
        assert error.details["BadRequest"].field_violations[0].field == field, fields
        assert field in error.message
    assert await all_workspaces(stubs, user) == []
    assert await my_organization_count(stubs, user) == 0


async def test_create_in_organization_needs_an_admin(stubs: Stubs, new_user: Any, app: App) -> None:
    owner, member, admin, stranger = [await new_user() for _ in range(4)]
    org = await new_organization(stubs, owner)
    await grant_organization_role(app, org.id, member.user_id, "member")
    await grant_organization_role(app, org.id, admin.user_id, "admin")
    denied = await expect_error(
        grpc.StatusCode.PERMISSION_DENIED, new_workspace(stubs, member, organization_id=org.id)
    )
    assert "admin" in denied.message
    await expect_error(
        grpc.StatusCode.NOT_FOUND, new_workspace(stubs, stranger, organization_id=org.id)
    )
    await expect_error(
        grpc.StatusCode.NOT_FOUND, new_workspace(stubs, owner, organization_id="org_nosuchorg")
    )
    made = await new_workspace(stubs, admin, organization_id=org.id)
    assert made.workspace.organization_id == org.id
    # The admin created it, and org members see it through their organization role.
    assert made.workspace.id in [w.id for w in await all_workspaces(stubs, member)]


async def test_request_id_makes_a_retried_create_return_the_first_result(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    request_id = unique("req-")
    first = await new_workspace(stubs, user, name="Retried", request_id=request_id)
    again = await new_workspace(stubs, user, name="Retried", request_id=request_id)
    assert again == first
    assert [w.id for w in await all_workspaces(stubs, user)] == [first.workspace.id]
    other = await new_workspace(stubs, user, name="Retried", request_id=unique("req-"))
    assert other.workspace.id != first.workspace.id
    assert RANDOM_SUFFIXED.fullmatch(other.workspace.slug.removeprefix("retried"))


async def test_explicit_slug_taken_is_already_exists_derived_is_suffixed(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    org = await new_organization(stubs, user)
    await new_workspace(stubs, user, name="Brand", slug="brand", organization_id=org.id)
    taken = await expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        new_workspace(stubs, user, name="Other", slug="brand", organization_id=org.id),
    )
    assert "brand" in taken.message
    derived = await new_workspace(stubs, user, name="Brand", organization_id=org.id)
    assert RANDOM_SUFFIXED.fullmatch(derived.workspace.slug.removeprefix("brand"))
    # Slugs are unique per organization only.
    elsewhere = await new_workspace(stubs, user, name="Brand", slug="brand")
    assert elsewhere.workspace.slug == "brand"


# Concurrency ------------------------------------------------------------------------------


async def test_simultaneous_creates_with_one_slug_give_one_workspace(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    org = await new_organization(stubs, user)
    for round_number in range(4):
        slug = f"race-{round_number}"
        results = await asyncio.gather(
            *(
                new_workspace(stubs, user, name="Race", slug=slug, organization_id=org.id)
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        successes = [r for r in results if isinstance(r, ws_pb.CreateWorkspaceResponse)]
        failures = [failure(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(successes) == 1, [f.message for f in failures]
        assert {f.code for f in failures} == {grpc.StatusCode.ALREADY_EXISTS}
    listed = await all_workspaces(stubs, user, org.id)
    assert sorted(w.slug for w in listed) == [f"race-{n}" for n in range(4)]


async def test_simultaneous_creates_with_a_derived_slug_get_distinct_suffixes(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    org = await new_organization(stubs, user)
    results = await asyncio.gather(
        *(new_workspace(stubs, user, name="Same Name", organization_id=org.id) for _ in range(5))
    )
    slugs = [r.workspace.slug for r in results]
    assert "same-name" in slugs and len(set(slugs)) == 5
    suffixes = [s.removeprefix("same-name") for s in slugs if s != "same-name"]
    assert all(RANDOM_SUFFIXED.fullmatch(suffix) for suffix in suffixes), slugs


async def test_simultaneous_organizations_with_one_name_get_distinct_slugs(
    stubs: Stubs, new_user: Any
) -> None:
    users = [await new_user() for _ in range(4)]
    name = unique("Twin Org ")
    orgs = await asyncio.gather(*(new_organization(stubs, u, name) for u in users))
    base = name.lower().replace(" ", "-")
    slugs = [o.slug for o in orgs]
    assert len(set(slugs)) == 4 and base in slugs
    # The others' slugs say the name was taken, not how many tenants chose it (-2, -3...).
    assert all(RANDOM_SUFFIXED.fullmatch(s.removeprefix(base)) for s in slugs if s != base)


# Pagination -------------------------------------------------------------------------------


async def test_pages_skip_and_repeat_nothing_while_workspaces_are_added(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    org = await new_organization(stubs, user)
    created = [
        (await new_workspace(stubs, user, organization_id=org.id)).workspace.id for _ in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        reply = await stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(page_size=2, page_token=token), metadata=user.metadata
        )
        seen.extend(w.id for w in reply.workspaces)
        token = reply.next_page_token
        if not token:
            break
        created.append((await new_workspace(stubs, user, organization_id=org.id)).workspace.id)
        if len(created) > 12:
            break
    while token:
        reply = await stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(page_size=2, page_token=token), metadata=user.metadata
        )
        seen.extend(w.id for w in reply.workspaces)
        token = reply.next_page_token
    assert seen == created
    assert len(set(seen)) == len(seen)


async def test_organization_pages_are_stable_and_tokens_are_bound_to_the_list(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    created = [(await new_organization(stubs, user)).id for _ in range(3)]
    first = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(page_size=2), metadata=user.metadata
    )
    created.append((await new_organization(stubs, user)).id)
    second = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(page_size=2, page_token=first.next_page_token),
        metadata=user.metadata,
    )
    assert [o.id for o in [*first.organizations, *second.organizations]] == created
    assert second.next_page_token == ""
    # Another user's list refuses the token.
    other = await new_user()
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(page_token=first.next_page_token),
            metadata=other.metadata,
        ),
    )
    assert error.details["BadRequest"].field_violations[0].field == "page_token"


async def test_listing_an_organization_the_caller_cannot_see_is_not_found(
    stubs: Stubs, new_user: Any
) -> None:
    owner, stranger = await new_user(), await new_user()
    org = await new_organization(stubs, owner)
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(organization_id=org.id), metadata=stranger.metadata
        ),
    )


# Update -----------------------------------------------------------------------------------


async def test_update_with_mask_and_etag(stubs: Stubs, new_user: Any) -> None:
    user = await new_user()
    workspace = (await new_workspace(stubs, user, name="Before", domain="before.com")).workspace
    changed = await stubs.workspaces.UpdateWorkspace(
        update(
            ws_pb.Workspace(
                id=workspace.id,
                etag=workspace.etag,
                name="After",
                domain="ignored.com",
                brand_aliases=["After Inc", " after inc "],
                competitors=[ws_pb.Competitor(name="Globex", domain="GLOBEX.com")],
            ),
            "name",
            "brand_aliases",
            "competitors",
        ),
        metadata=user.metadata,
    )
    assert changed.name == "After"
    assert changed.domain == "before.com"  # not in the mask
    assert list(changed.brand_aliases) == ["After Inc"]
    assert [(c.name, c.domain) for c in changed.competitors] == [("Globex", "globex.com")]
    assert int(changed.etag) == int(workspace.etag) + 1
    # The old etag is stale now.
    stale = await expect_error(
        grpc.StatusCode.ABORTED,
        stubs.workspaces.UpdateWorkspace(
            update(ws_pb.Workspace(id=workspace.id, etag=workspace.etag, name="Lost"), "name"),
            metadata=user.metadata,
        ),
    )
    assert "etag" in stale.message
    # Bad input changes nothing, not even the etag.
    for request, field in [
        (update(ws_pb.Workspace(id=workspace.id, name="x"), "name"), "workspace.name"),
        (update(ws_pb.Workspace(id=workspace.id, name="Fine")), "update_mask"),
        (update(ws_pb.Workspace(id=workspace.id), "organization_id"), "update_mask"),
        (
            update(ws_pb.Workspace(id=workspace.id, name="Ok", slug="NO"), "name", "slug"),
            "workspace.slug",
        ),
        (update(ws_pb.Workspace(id=workspace.id, domain="CO.UK"), "domain"), "workspace.domain"),
        (
            update(
                ws_pb.Workspace(
                    id=workspace.id, competitors=[ws_pb.Competitor(name="G", domain="github.io")]
                ),
                "competitors",
            ),
            "workspace.competitors[0].domain",
        ),
    ]:
        error = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            stubs.workspaces.UpdateWorkspace(request, metadata=user.metadata),
        )
        assert error.details["BadRequest"].field_violations[0].field == field
    current = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=user.metadata
    )
    assert current == changed


async def test_update_slug_conflict_and_member_permission(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member = await new_user(), await new_user()
    org = await new_organization(stubs, owner)
    await new_workspace(stubs, owner, name="Taken", slug="taken", organization_id=org.id)
    workspace = (await new_workspace(stubs, owner, organization_id=org.id)).workspace
    await expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        stubs.workspaces.UpdateWorkspace(
            update(ws_pb.Workspace(id=workspace.id, slug="taken"), "slug"),
            metadata=owner.metadata,
        ),
    )
    moved = await stubs.workspaces.UpdateWorkspace(
        update(ws_pb.Workspace(id=workspace.id, slug="free-slug"), "slug"), metadata=owner.metadata
    )
    assert moved.slug == "free-slug"
    await grant_organization_role(app, org.id, member.user_id, "member")
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.workspaces.UpdateWorkspace(
            update(ws_pb.Workspace(id=workspace.id, name="Mine now"), "name"),
            metadata=member.metadata,
        ),
    )
    # Members may still read it and choose its providers.
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(
            workspace_id=workspace.id, providers=[ws_pb.PROVIDER_GOOGLE, ws_pb.PROVIDER_GOOGLE]
        ),
        metadata=member.metadata,
    )
    read = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=member.metadata
    )
    assert list(read.enabled_providers) == [ws_pb.PROVIDER_GOOGLE]


async def test_unknown_provider_is_refused(stubs: Stubs, new_user: Any) -> None:
    user = await new_user()
    workspace = (await new_workspace(stubs, user)).workspace
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.workspaces.SetEnabledProviders(
            ws_pb.SetEnabledProvidersRequest(
                workspace_id=workspace.id,
                providers=[ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_UNSPECIFIED],
            ),
            metadata=user.metadata,
        ),
    )
    assert error.details["BadRequest"].field_violations[0].field == "providers[1]"


# Delete and purge -------------------------------------------------------------------------


async def test_soft_delete_hides_the_workspace_frees_its_slug_and_stops_its_schedule(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    user = await new_user()
    org = await new_organization(stubs, user)
    workspace = (
        await new_workspace(stubs, user, name="Doomed", slug="doomed", organization_id=org.id)
    ).workspace
    now = utcnow()
    async with app.db.transaction() as session:
        session.add(
            Schedule(
                workspace_id=workspace.id,
                cron="0 * * * *",
                next_run_time=now,
                create_time=now,
                update_time=now,
            )
        )
    shown = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=user.metadata
    )
    assert shown.schedule.cron == "0 * * * *"
    await expect_error(
        grpc.StatusCode.ABORTED,
        stubs.workspaces.DeleteWorkspace(
            ws_pb.DeleteWorkspaceRequest(workspace_id=workspace.id, etag="999"),
            metadata=user.metadata,
        ),
    )
    await stubs.workspaces.DeleteWorkspace(
        ws_pb.DeleteWorkspaceRequest(workspace_id=workspace.id, etag=shown.etag),
        metadata=user.metadata,
    )
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.GetWorkspace(
            ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=user.metadata
        ),
    )
    assert await all_workspaces(stubs, user, org.id) == []
    async with app.db.transaction(write=False) as session:
        assert await session.get(Schedule, workspace.id) is None
    again = await new_workspace(stubs, user, name="Doomed", slug="doomed", organization_id=org.id)
    assert again.workspace.slug == "doomed"


async def test_purge_removes_workspaces_deleted_before_the_retention_period(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    user = await new_user()
    old = (await new_workspace(stubs, user)).workspace
    recent = (await new_workspace(stubs, user)).workspace
    for workspace in (old, recent):
        await stubs.workspaces.DeleteWorkspace(
            ws_pb.DeleteWorkspaceRequest(workspace_id=workspace.id), metadata=user.metadata
        )
    async with app.db.transaction() as session:
        row = await session.get(Workspace, old.id)
        assert row is not None
        row.delete_time = utcnow() - timedelta(days=31)
    purged = await purge_deleted_workspaces(
        app.db, utcnow(), retention_days=app.settings.workspace_retention_days
    )
    assert purged >= 1
    async with app.db.transaction(write=False) as session:
        assert await session.get(Workspace, old.id) is None
        assert await session.get(Workspace, recent.id) is not None
        # The organization stays.
        count = await session.scalar(
            select(func.count())
            .select_from(Organization)
            .where(Organization.id == old.organization_id)
        )
    assert count == 1
