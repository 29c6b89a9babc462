"""The code examples of the seed documents, replayed as gRPC calls.

Seed 000 (Workspaces/Organizations API): every example. Seed 002 (Workspace API): the
workspace and organization examples. Each test names the seed call it replays.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import httpx
from google.protobuf.field_mask_pb2 import FieldMask

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.domain.tenancy.names import derive_slug
from tests.support import expect_error, unique
from tests.support.builders import (
    new_organization,
    new_workspace,
    png_bytes,
    upload_icon,
    upload_ticket,
)

Stubs = SimpleNamespace
User = Any

# Seed 000 ---------------------------------------------------------------------------------


async def test_000_create_workspace_in_existing_organization_with_icon(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    # const workspace = await create({name: 'Production Environment', organizationId: orgId,
    #                                 iconStorageId: uploadedIconId});
    user = await new_user()
    org = await new_organization(stubs, user)
    icon = await upload_icon(stubs, http, user)
    reply = await new_workspace(
        stubs, user, name="Production Environment", organization_id=org.id, icon_file_id=icon
    )
    workspace = reply.workspace
    # console.log(`Created workspace: ${workspace.slug}`);
    assert workspace.slug == "production-environment"
    # console.log(`Access at: /${workspace.organizationSlug}/${workspace.slug}`);
    assert workspace.organization_slug == org.slug
    assert workspace.organization_id == org.id
    assert workspace.organization_name == org.name
    assert workspace.id.startswith("ws_")
    assert workspace.icon_file_id == icon
    assert workspace.icon_url.startswith("http")
    assert workspace.create_time.seconds > 0


async def test_000_list_all_and_by_organization(stubs: Stubs, new_user: Any) -> None:
    # const allWorkspaces = await list({});
    # const orgWorkspaces = await list({ organizationId: orgId });
    user = await new_user()
    org_a = await new_organization(stubs, user)
    org_b = await new_organization(stubs, user)
    a1 = (await new_workspace(stubs, user, organization_id=org_a.id)).workspace
    a2 = (await new_workspace(stubs, user, organization_id=org_a.id)).workspace
    b1 = (await new_workspace(stubs, user, organization_id=org_b.id)).workspace
    every = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(), metadata=user.metadata
    )
    assert [w.id for w in every.workspaces] == [a1.id, a2.id, b1.id]
    in_org = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(organization_id=org_a.id), metadata=user.metadata
    )
    # console.log(`You have access to ${allWorkspaces.length} workspaces`);
    assert [w.id for w in in_org.workspaces] == [a1.id, a2.id]
    # Same structure as the create response.
    assert in_org.workspaces[0] == a1


async def test_000_generate_icon_upload_url_then_create_with_icon(
    stubs: Stubs, new_user: Any, http: httpx.AsyncClient
) -> None:
    # const { uploadUrl, storageId } = await generateWorkspaceIconUploadUrl();
    user = await new_user()
    ticket = await upload_ticket(stubs, user)
    assert ticket.storage_id.startswith("file_")
    assert ticket.max_bytes == 1024 * 1024
    # await fetch(uploadUrl, {method: 'POST', body: iconImageBlob,
    #                         headers: {'Content-Type': 'image/png'}});
    image = png_bytes(16, "blue")
    uploaded = await http.post(
        ticket.upload_url, content=image, headers={"Content-Type": "image/png"}
    )
    assert uploaded.status_code == 201
    # const workspace = await create({ name: 'My Workspace', iconStorageId: storageId });
    reply = await new_workspace(stubs, user, name="My Workspace", icon_file_id=ticket.storage_id)
    assert reply.workspace.name == "My Workspace"
    icon = await http.get(reply.workspace.icon_url)
    assert icon.status_code == 200
    assert icon.content == image
    assert icon.headers["content-type"] == "image/png"


async def test_000_create_organization(stubs: Stubs, new_user: Any) -> None:
    # const org = await organizations.create({ name: 'Acme Corporation' });
    user = await new_user()
    name = f"Acme Corporation {unique('')}"
    org = await new_organization(stubs, user, name)
    # console.log(`Organization created: ${org.slug}`);
    assert org.slug == derive_slug(name, fallback="")
    assert org.name == name
    assert org.id.startswith("org_")
    assert org.create_time.seconds > 0
    access = await stubs.organizations.GetOrganizationAccess(
        org_pb.GetOrganizationAccessRequest(organization_id=org.id), metadata=user.metadata
    )
    assert access.role == org_pb.ORGANIZATION_ROLE_OWNER


async def test_000_list_mine(stubs: Stubs, new_user: Any) -> None:
    # const myOrgs = await organizations.listMine();
    user = await new_user()
    first = await new_organization(stubs, user)
    second = await new_organization(stubs, user)
    await new_organization(stubs, await new_user())  # someone else's
    reply = await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(), metadata=user.metadata
    )
    # for (const org of myOrgs) console.log(`${org.name} (${org.slug})`);
    assert [(o.name, o.slug) for o in reply.organizations] == [
        (first.name, first.slug),
        (second.name, second.slug),
    ]


async def test_000_get_navigation_state(stubs: Stubs, new_user: Any) -> None:
    # const navState = await organizations.getNavigationState();
    user = await new_user()
    empty = await stubs.organizations.GetNavigationState(
        org_pb.GetNavigationStateRequest(), metadata=user.metadata
    )
    # else: 'User needs to select a workspace'
    assert empty.current_workspace_id == ""
    assert list(empty.workspaces) == []
    created = await new_workspace(stubs, user)
    state = await stubs.organizations.GetNavigationState(
        org_pb.GetNavigationStateRequest(), metadata=user.metadata
    )
    # if (navState.currentWorkspaceId) 'User has a default workspace set'
    assert state.current_workspace_id == created.workspace.id
    assert state.current_organization_id == created.organization.id
    assert [o.id for o in state.organizations] == [created.organization.id]
    assert [w.id for w in state.workspaces] == [created.workspace.id]


async def test_000_get_organization_access(stubs: Stubs, new_user: Any) -> None:
    # const access = await organizations.getOrganizationAccess({ organizationId: orgId });
    user = await new_user()
    org = await new_organization(stubs, user)
    access = await stubs.organizations.GetOrganizationAccess(
        org_pb.GetOrganizationAccessRequest(organization_id=org.id), metadata=user.metadata
    )
    # if (access.isAdmin) { 'User has admin access' }
    assert access.is_admin
    assert access.can_manage_billing
    assert access.role == org_pb.ORGANIZATION_ROLE_OWNER
    stranger = await new_user()
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.organizations.GetOrganizationAccess(
            org_pb.GetOrganizationAccessRequest(organization_id=org.id),
            metadata=stranger.metadata,
        ),
    )


async def test_000_resolve_workos_organization_id(stubs: Stubs, new_user: Any) -> None:
    # const result = await organizations.resolveWorkosOrganizationId({organizationId: orgId});
    user = await new_user()
    org = await new_organization(stubs, user)
    request = org_pb.ResolveWorkosOrganizationIdRequest(organization_id=org.id)
    unlinked = await stubs.organizations.ResolveWorkosOrganizationId(
        request, metadata=user.metadata
    )
    assert unlinked.workos_organization_id == ""
    workos_id = f"org_{unique('W')}"
    await stubs.organizations.LinkWorkosOrganization(
        org_pb.LinkWorkosOrganizationRequest(
            organization_id=org.id, workos_organization_id=workos_id
        ),
        metadata=user.metadata,
    )
    # if (result.workosOrganizationId) console.log(`WorkOS Org: ...`)
    linked = await stubs.organizations.ResolveWorkosOrganizationId(request, metadata=user.metadata)
    assert linked.workos_organization_id == workos_id
    assert linked.organization_id == org.id


async def test_000_setup_workspace(stubs: Stubs, new_user: Any) -> None:
    # async function setupWorkspace(name, orgId) { const workspace = await create({name,
    #   organizationId: orgId}); ... }   (tool sources and policies are not part of Beacon)
    user = await new_user()
    org = await new_organization(stubs, user)
    reply = await new_workspace(stubs, user, name="Staging", organization_id=org.id)
    assert reply.workspace.organization_id == org.id
    assert reply.workspace.slug == "staging"
    assert reply.organization.id == org.id


async def test_000_setup_organization(stubs: Stubs, new_user: Any) -> None:
    # const org = await organizations.create({ name });
    # const dev = await create({name: 'Development', organizationId: org.id});
    # const prod = await create({name: 'Production', organizationId: org.id});
    user = await new_user()
    org = await new_organization(stubs, user)
    dev = (await new_workspace(stubs, user, name="Development", organization_id=org.id)).workspace
    prod = (await new_workspace(stubs, user, name="Production", organization_id=org.id)).workspace
    assert (dev.slug, prod.slug) == ("development", "production")
    listed = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(organization_id=org.id), metadata=user.metadata
    )
    assert [w.name for w in listed.workspaces] == ["Development", "Production"]


# Seed 002 ---------------------------------------------------------------------------------


async def _seed_002_workspace(stubs: Stubs, user: User) -> ws_pb.CreateWorkspaceResponse:
    return await new_workspace(
        stubs,
        user,
        name="Acme Corp Tracking",
        slug="acme-corp",
        domain="acme.com",
        organization_name="Acme Corporation",
    )


async def test_002_create(stubs: Stubs, new_user: Any) -> None:
    # const result = await trpc.workspace.create.mutate({name: "Acme Corp Tracking",
    #   slug: "acme-corp", domain: "acme.com", organizationName: "Acme Corporation"});
    user = await new_user()
    result = await _seed_002_workspace(stubs, user)
    assert result.workspace.name == "Acme Corp Tracking"
    assert result.workspace.slug == "acme-corp"
    assert result.workspace.domain == "acme.com"
    assert result.organization.name == "Acme Corporation"
    assert result.workspace.organization_id == result.organization.id
    assert result.is_first_workspace
    again = await new_workspace(stubs, user, organization_id=result.organization.id)
    assert not again.is_first_workspace


async def test_002_create_in_org(stubs: Stubs, new_user: Any) -> None:
    # await trpc.workspace.createInOrg.mutate({name: "Marketing Analytics",
    #   slug: "marketing-analytics", domain: "marketing.acme.com", tenantId: "org_xyz789"});
    user = await new_user()
    org = (await _seed_002_workspace(stubs, user)).organization
    result = await new_workspace(
        stubs,
        user,
        name="Marketing Analytics",
        slug="marketing-analytics",
        domain="marketing.acme.com",
        organization_id=org.id,
    )
    assert result.workspace.organization_id == org.id
    assert result.workspace.domain == "marketing.acme.com"
    assert not result.is_first_workspace
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        new_workspace(stubs, await new_user(), name="Intruder", organization_id=org.id),
    )


async def test_002_list_by_org(stubs: Stubs, new_user: Any) -> None:
    # const workspaces = await trpc.workspace.listByOrg.query({ tenantId: "org_xyz789" });
    user = await new_user()
    first = await _seed_002_workspace(stubs, user)
    org_id = first.organization.id
    second = await new_workspace(stubs, user, organization_id=org_id)
    await new_workspace(stubs, user)  # another organization
    reply = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(organization_id=org_id), metadata=user.metadata
    )
    assert [w.id for w in reply.workspaces] == [first.workspace.id, second.workspace.id]


async def test_002_list_all_for_user(stubs: Stubs, new_user: Any) -> None:
    # const workspaces = await trpc.workspace.listAllForUser.query();
    user = await new_user()
    mine = [(await new_workspace(stubs, user)).workspace.id for _ in range(3)]
    await new_workspace(stubs, await new_user())
    reply = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(), metadata=user.metadata
    )
    assert [w.id for w in reply.workspaces] == mine


async def test_002_get_by_id(stubs: Stubs, new_user: Any) -> None:
    # const workspace = await trpc.workspace.getById.query({ workspaceId: "ws_abc123" });
    user = await new_user()
    created = (await _seed_002_workspace(stubs, user)).workspace
    workspace = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=created.id), metadata=user.metadata
    )
    assert workspace == created
    assert len(workspace.enabled_providers) == 6
    assert workspace.etag
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.GetWorkspace(
            ws_pb.GetWorkspaceRequest(workspace_id=created.id),
            metadata=(await new_user()).metadata,
        ),
    )


async def test_002_update_details(stubs: Stubs, new_user: Any) -> None:
    # const updated = await trpc.workspace.updateDetails.mutate({workspaceId: "ws_abc123",
    #   name: "Acme Corporation Tracking", domain: "acme.com"});
    user = await new_user()
    created = (await _seed_002_workspace(stubs, user)).workspace
    updated = await stubs.workspaces.UpdateWorkspace(
        ws_pb.UpdateWorkspaceRequest(
            workspace=ws_pb.Workspace(
                id=created.id, name="Acme Corporation Tracking", domain="https://WWW.Acme.com/"
            ),
            update_mask=FieldMask(paths=["name", "domain"]),
        ),
        metadata=user.metadata,
    )
    assert updated.name == "Acme Corporation Tracking"
    assert updated.domain == "www.acme.com"
    assert updated.slug == created.slug
    assert updated.etag != created.etag


async def test_002_update_organization_name(stubs: Stubs, new_user: Any) -> None:
    # const updated = await trpc.workspace.updateOrganizationName.mutate({
    #   workspaceId: "ws_abc123", organizationName: "Acme International"});
    user = await new_user()
    created = await _seed_002_workspace(stubs, user)
    organization = await stubs.organizations.UpdateOrganization(
        org_pb.UpdateOrganizationRequest(
            workspace_id=created.workspace.id,
            organization=org_pb.Organization(name="Acme International"),
            update_mask=FieldMask(paths=["name"]),
        ),
        metadata=user.metadata,
    )
    assert organization.id == created.organization.id
    assert organization.name == "Acme International"
    workspace = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=created.workspace.id), metadata=user.metadata
    )
    assert workspace.organization_name == "Acme International"


async def test_002_get_enabled_providers(stubs: Stubs, new_user: Any) -> None:
    # const result = await trpc.workspace.getEnabledProviders.query({workspaceId: "ws_abc123"});
    user = await new_user()
    created = (await _seed_002_workspace(stubs, user)).workspace
    result = await stubs.workspaces.GetEnabledProviders(
        ws_pb.GetEnabledProvidersRequest(workspace_id=created.id), metadata=user.metadata
    )
    assert list(result.providers) == [
        ws_pb.PROVIDER_OPENAI,
        ws_pb.PROVIDER_ANTHROPIC,
        ws_pb.PROVIDER_GOOGLE,
        ws_pb.PROVIDER_PERPLEXITY,
        ws_pb.PROVIDER_MISTRAL,
        ws_pb.PROVIDER_COHERE,
    ]


async def test_002_set_enabled_providers(stubs: Stubs, new_user: Any) -> None:
    # const result = await trpc.workspace.setEnabledProviders.mutate({
    #   workspaceId: "ws_abc123", providers: ["openai", "anthropic"]});
    user = await new_user()
    created = (await _seed_002_workspace(stubs, user)).workspace
    workspace = await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(
            workspace_id=created.id, providers=[ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC]
        ),
        metadata=user.metadata,
    )
    assert list(workspace.enabled_providers) == [ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC]
    read = await stubs.workspaces.GetEnabledProviders(
        ws_pb.GetEnabledProvidersRequest(workspace_id=created.id), metadata=user.metadata
    )
    assert list(read.providers) == [ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC]
    # "Must include at least one provider."
    failure = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.workspaces.SetEnabledProviders(
            ws_pb.SetEnabledProvidersRequest(workspace_id=created.id), metadata=user.metadata
        ),
    )
    assert failure.details["BadRequest"].field_violations[0].field == "providers"


async def test_002_delete_account(stubs: Stubs, new_user: Any) -> None:
    # await trpc.workspace.deleteAccount.mutate();
    user = await new_user()
    created = await _seed_002_workspace(stubs, user)
    reply = await stubs.workspaces.DeleteAccount(
        ws_pb.DeleteAccountRequest(), metadata=user.metadata
    )
    assert reply.user_id == user.user_id
    assert list(reply.deleted_organization_ids) == [created.organization.id]
    # The same token now belongs to a brand-new, empty account.
    listed = await stubs.workspaces.ListWorkspaces(
        ws_pb.ListWorkspacesRequest(), metadata=user.metadata
    )
    assert list(listed.workspaces) == []
