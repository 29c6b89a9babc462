"""OrganizationService through a real server: creation, renaming, roles, navigation state,
WorkOS links (users and service keys) and the audit log."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from tests.support import expect_error, unique
from tests.support.builders import grant_organization_role, new_organization, new_workspace

Stubs = SimpleNamespace
WORKSPACE_SERVICE = "beacon.v1.WorkspaceService"


async def navigation(stubs: Stubs, user: Any) -> org_pb.NavigationState:
    state: org_pb.NavigationState = await stubs.organizations.GetNavigationState(
        org_pb.GetNavigationStateRequest(), metadata=user.metadata
    )
    return state


async def test_create_organization_validates_and_replays_request_ids(
    stubs: Stubs, new_user: Any
) -> None:
    user = await new_user()
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.organizations.CreateOrganization(
            org_pb.CreateOrganizationRequest(name="\x07bell"), metadata=user.metadata
        ),
    )
    assert error.details["BadRequest"].field_violations[0].field == "name"
    request = org_pb.CreateOrganizationRequest(name="  Trimmed Org  ", request_id=unique("r"))
    first = await stubs.organizations.CreateOrganization(request, metadata=user.metadata)
    again = await stubs.organizations.CreateOrganization(request, metadata=user.metadata)
    assert first == again
    assert first.name == "Trimmed Org"
    mine = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(), metadata=user.metadata
    )
    assert [o.id for o in mine.organizations] == [first.id]


async def test_roles_decide_access_and_renaming(stubs: Stubs, new_user: Any, app: App) -> None:
    owner, admin, member, billing, stranger = [await new_user() for _ in range(5)]
    org = await new_organization(stubs, owner)
    for user, role in ((admin, "admin"), (member, "member"), (billing, "billing_admin")):
        await grant_organization_role(app, org.id, user.user_id, role)
    expected = {
        id(owner): (org_pb.ORGANIZATION_ROLE_OWNER, True, True),
        id(admin): (org_pb.ORGANIZATION_ROLE_ADMIN, True, False),
        id(member): (org_pb.ORGANIZATION_ROLE_MEMBER, False, False),
        id(billing): (org_pb.ORGANIZATION_ROLE_BILLING_ADMIN, False, True),
    }
    for user in (owner, admin, member, billing):
        access = await stubs.organizations.GetOrganizationAccess(
            org_pb.GetOrganizationAccessRequest(organization_id=org.id), metadata=user.metadata
        )
        assert (access.role, access.is_admin, access.can_manage_billing) == expected[id(user)]
    rename = org_pb.UpdateOrganizationRequest(
        organization=org_pb.Organization(id=org.id, name="Renamed"),
        update_mask=FieldMask(paths=["name"]),
    )
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.organizations.UpdateOrganization(rename, metadata=member.metadata),
    )
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.organizations.UpdateOrganization(rename, metadata=stranger.metadata),
    )
    renamed = await stubs.organizations.UpdateOrganization(rename, metadata=admin.metadata)
    assert renamed.name == "Renamed" and renamed.slug == org.slug
    bad_mask = org_pb.UpdateOrganizationRequest(
        organization=org_pb.Organization(id=org.id, name="X Y", slug="new-slug"),
        update_mask=FieldMask(paths=["slug"]),
    )
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.organizations.UpdateOrganization(bad_mask, metadata=owner.metadata),
    )
    assert error.details["BadRequest"].field_violations[0].field == "update_mask"
    got = await stubs.organizations.GetOrganization(
        org_pb.GetOrganizationRequest(organization_id=org.id), metadata=billing.metadata
    )
    assert got.name == "Renamed"
    # A billing admin sees no workspaces through the organization.
    await new_workspace(stubs, owner, organization_id=org.id)
    listed = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(organization_id=org.id), metadata=billing.metadata
    )
    assert list(listed.workspaces) == []


async def test_current_workspace_is_stored_server_side(stubs: Stubs, new_user: Any) -> None:
    user = await new_user()
    first = await new_workspace(stubs, user)
    other_org = await new_organization(stubs, user)
    second = await new_workspace(stubs, user, organization_id=other_org.id)
    assert (await navigation(stubs, user)).current_workspace_id == first.workspace.id
    state = await stubs.organizations.SetCurrentWorkspace(
        org_pb.SetCurrentWorkspaceRequest(workspace_id=second.workspace.id),
        metadata=user.metadata,
    )
    assert state.current_workspace_id == second.workspace.id
    assert state.current_organization_id == other_org.id
    assert {o.id for o in state.organizations} == {first.organization.id, other_org.id}
    assert (await navigation(stubs, user)).current_workspace_id == second.workspace.id
    # Once the chosen workspace is gone, the first accessible one is current again.
    await stubs.workspaces.DeleteWorkspace(
        ws_pb.DeleteWorkspaceRequest(workspace_id=second.workspace.id), metadata=user.metadata
    )
    after = await navigation(stubs, user)
    assert after.current_workspace_id == first.workspace.id
    assert after.current_organization_id == first.organization.id
    # Someone else's workspace cannot be made current.
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.organizations.SetCurrentWorkspace(
            org_pb.SetCurrentWorkspaceRequest(workspace_id=first.workspace.id),
            metadata=(await new_user()).metadata,
        ),
    )


async def test_workos_links_by_admins_and_service_keys(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member = await new_user(), await new_user()
    org = await new_organization(stubs, owner)
    other = await new_organization(stubs, owner)
    await grant_organization_role(app, org.id, member.user_id, "member")
    workos_id = f"org_{unique('W')}"
    link = org_pb.LinkWorkosOrganizationRequest(
        organization_id=org.id, workos_organization_id=workos_id
    )
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.organizations.LinkWorkosOrganization(link, metadata=member.metadata),
    )
    bad = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.organizations.LinkWorkosOrganization(
            org_pb.LinkWorkosOrganizationRequest(
                organization_id=org.id, workos_organization_id="not-workos"
            ),
            metadata=owner.metadata,
        ),
    )
    assert bad.details["BadRequest"].field_violations[0].field == "workos_organization_id"
    secret, key = await app.services.service_keys.create(
        unique("workos-sync"), ["workos"], all_organizations=True
    )
    service = (("authorization", f"Bearer {secret}"),)
    linked = await stubs.organizations.LinkWorkosOrganization(link, metadata=service)
    assert linked.workos_organization_id == workos_id
    await expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        stubs.organizations.LinkWorkosOrganization(
            org_pb.LinkWorkosOrganizationRequest(
                organization_id=other.id, workos_organization_id=workos_id
            ),
            metadata=owner.metadata,
        ),
    )
    resolved = await stubs.organizations.ResolveWorkosOrganizationId(
        org_pb.ResolveWorkosOrganizationIdRequest(organization_id=org.id), metadata=service
    )
    assert resolved.workos_organization_id == workos_id
    unlinked = await stubs.organizations.UnlinkWorkosOrganization(
        org_pb.UnlinkWorkosOrganizationRequest(organization_id=org.id), metadata=owner.metadata
    )
    assert unlinked.workos_organization_id == ""
    # Free again: the other organization may take it.
    taken = await stubs.organizations.LinkWorkosOrganization(
        org_pb.LinkWorkosOrganizationRequest(
            organization_id=other.id, workos_organization_id=workos_id
        ),
        metadata=owner.metadata,
    )
    assert taken.workos_organization_id == workos_id
    events = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org.id, actor_id=key.id),
        metadata=owner.metadata,
    )
    assert [e.action for e in events.audit_events] == [
        "beacon.v1.OrganizationService/LinkWorkosOrganization"
    ]


async def test_audit_log_newest_first_with_filters_and_pages(
    stubs: Stubs, new_user: Any, app: App
) -> None:
    owner, member = await new_user(), await new_user()
    created = await new_workspace(stubs, owner, organization_name="Audited")
    org_id, workspace_id = created.organization.id, created.workspace.id
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(
            workspace_id=workspace_id, providers=[ws_pb.PROVIDER_OPENAI]
        ),
        metadata=owner.metadata,
    )
    await stubs.organizations.UpdateOrganization(
        org_pb.UpdateOrganizationRequest(
            organization=org_pb.Organization(id=org_id, name="Audited Again"),
            update_mask=FieldMask(paths=["name"]),
        ),
        metadata=owner.metadata,
    )
    expected = [
        "beacon.v1.OrganizationService/UpdateOrganization",
        f"{WORKSPACE_SERVICE}/SetEnabledProviders",
        f"{WORKSPACE_SERVICE}/CreateWorkspace",
    ]
    everything = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org_id), metadata=owner.metadata
    )
    assert [e.action for e in everything.audit_events] == expected
    assert {e.actor_id for e in everything.audit_events} == {owner.user_id}
    assert all(e.request_id for e in everything.audit_events)
    assert list(everything.audit_events[-1].target_ids) == [workspace_id, org_id]
    first_page = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org_id, page_size=2),
        metadata=owner.metadata,
    )
    second_page = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(
            organization_id=org_id, page_size=2, page_token=first_page.next_page_token
        ),
        metadata=owner.metadata,
    )
    paged = [*first_page.audit_events, *second_page.audit_events]
    assert [e.id for e in paged] == [e.id for e in everything.audit_events]
    in_workspace = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org_id, workspace_id=workspace_id),
        metadata=owner.metadata,
    )
    assert [e.action for e in in_workspace.audit_events] == expected[1:]
    await grant_organization_role(app, org_id, member.user_id, "member")
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.organizations.ListAuditEvents(
            org_pb.ListAuditEventsRequest(organization_id=org_id), metadata=member.metadata
        ),
    )


async def test_update_organization_checks_etags_and_masks_like_update_workspace(
    stubs: Stubs, new_user: Any
) -> None:
    owner = await new_user()
    org = await new_organization(stubs, owner)
    assert org.etag, "an organization carries an etag"

    async def update(name: str, etag: str, *paths: str) -> org_pb.Organization:
        renamed: org_pb.Organization = await stubs.organizations.UpdateOrganization(
            org_pb.UpdateOrganizationRequest(
                organization=org_pb.Organization(id=org.id, name=name, etag=etag),
                update_mask=FieldMask(paths=list(paths)),
            ),
            metadata=owner.metadata,
        )
        return renamed

    first = await update("First Name", org.etag, "name")
    assert first.etag != org.etag, "a change moves the etag"
    got = await stubs.organizations.GetOrganization(
        org_pb.GetOrganizationRequest(organization_id=org.id), metadata=owner.metadata
    )
    assert got.etag == first.etag
    stale = await expect_error(grpc.StatusCode.ABORTED, update("Second Name", org.etag, "name"))
    assert "organization.etag" in stale.message
    assert stale.details["ErrorInfo"].reason == "ETAG_MISMATCH"
    unchanged = await stubs.organizations.GetOrganization(
        org_pb.GetOrganizationRequest(organization_id=org.id), metadata=owner.metadata
    )
    assert (unchanged.name, unchanged.etag) == ("First Name", first.etag)
    # `*` means every updatable field, as in UpdateWorkspace; no etag means no check.
    assert (await update("Star Name", "", "*")).name == "Star Name"
    # An empty mask is refused, as in UpdateWorkspace (it no longer means "name").
    for bad in ([], ["slug"], ["name", "workos_organization_id"], ["nme"]):
        error = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, update("Bad Mask", "", *bad))
        assert error.details["BadRequest"].field_violations[0].field == "update_mask"
