"""Service keys are bounded: bound at creation to organizations (or, explicitly, all of them),
they act for nobody outside those and touch nothing outside them; every audit event names
the key beside the user it acted for; revocation, user deletion and leaving the key's
organizations take effect within the documented cache time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import delete

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.config import Settings
from service.db.models import OrganizationMember, Workspace
from service.server import start_server
from tests.support import failure
from tests.support.app import NewUser
from tests.support.assertions import expect_refusal
from tests.support.builders import seed_organization, seed_workspace

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
DEFAULT_CACHE_SECONDS = float(Settings.model_fields["service_key_cache_seconds"].default)


async def bound_key(app: App, *organization_ids: str) -> tuple[str, str]:
    secret, info = await app.services.service_keys.create(
        f"svc-{uuid.uuid4().hex[:8]}", ["act_as"], organization_ids=[*organization_ids]
    )
    return secret, info.id


def acting(secret: str, user_id: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"), ("x-beacon-act-as", user_id), *extra)


def get_org(organization_id: str) -> org_pb.GetOrganizationRequest:
    return org_pb.GetOrganizationRequest(organization_id=organization_id)


async def test_a_bound_key_acts_only_inside_its_organizations(
    stubs: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    owner, outsider, guest = await new_user(), await new_user(), await new_user()
    mine = await seed_organization(app, owner.user_id)
    theirs = await seed_organization(app, outsider.user_id, owner.user_id)  # owner is in both
    workspace = await seed_workspace(app, owner.user_id, guests={guest.user_id: "member"})
    secret, _ = await bound_key(app, mine)

    reply = await stubs.organizations.GetOrganization(
        get_org(mine), metadata=acting(secret, owner.user_id)
    )
    assert reply.id == mine
    # A user of none of the key's organizations cannot be acted for at all.
    await expect_refusal(
        PERMISSION_DENIED,
        "ACT_AS_OUTSIDE_KEY_ORGANIZATIONS",
        stubs.organizations.GetOrganization(
            get_org(theirs), metadata=acting(secret, outsider.user_id)
        ),
    )
    # Acting for a user inside, the key still touches nothing of their other organizations,
    # nor RPCs without a resource (they could reach past the bound).
    await expect_refusal(
        PERMISSION_DENIED,
        "OUTSIDE_KEY_ORGANIZATIONS",
        stubs.organizations.GetOrganization(
            get_org(theirs), metadata=acting(secret, owner.user_id)
        ),
    )
    await expect_refusal(
        PERMISSION_DENIED,
        "OUTSIDE_KEY_ORGANIZATIONS",
        stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(), metadata=acting(secret, owner.user_id)
        ),
    )
    # A guest of a workspace in a bound organization belongs to it.
    workspace_key, _ = await bound_key(app, await organization_of(app, workspace))
    await stubs.organizations.SetCurrentWorkspace(
        org_pb.SetCurrentWorkspaceRequest(workspace_id=workspace),
        metadata=acting(workspace_key, guest.user_id),
    )


async def organization_of(app: App, workspace_id: str) -> str:
    async with app.db.transaction(write=False) as session:
        workspace = await session.get(Workspace, workspace_id)
        assert workspace is not None
        return workspace.organization_id


async def test_audit_events_name_the_key_the_user_and_the_client_request_id(
    stubs: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    owner = await new_user()
    org_id = await seed_organization(app, owner.user_id)
    secret, key_id = await bound_key(app, org_id)
    client_id = f"client-{uuid.uuid4().hex}"
    await stubs.organizations.UpdateOrganization(
        org_pb.UpdateOrganizationRequest(
            organization=org_pb.Organization(id=org_id, name="Renamed by a key"),
            update_mask=FieldMask(paths=["name"]),
        ),
        metadata=acting(secret, owner.user_id, ("x-request-id", client_id)),
    )
    await stubs.organizations.UpdateOrganization(
        org_pb.UpdateOrganizationRequest(
            organization=org_pb.Organization(id=org_id, name="Renamed by hand"),
            update_mask=FieldMask(paths=["name"]),
        ),
        metadata=(*owner.metadata, ("x-request-id", client_id)),  # a client reusing its id
    )
    listed = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org_id), metadata=owner.metadata
    )
    by_hand, by_key = listed.audit_events  # newest first
    assert (by_key.actor_id, by_key.service_key_id) == (owner.user_id, key_id)
    assert (by_hand.actor_id, by_hand.service_key_id) == (owner.user_id, "")
    assert by_key.correlation_id == by_hand.correlation_id == client_id
    # The server's own id identifies each event, whatever the client sent.
    assert by_key.request_id.startswith("req_") and by_hand.request_id.startswith("req_")
    assert len({by_key.request_id, by_hand.request_id, client_id}) == 3
    only_key = await stubs.organizations.ListAuditEvents(
        org_pb.ListAuditEventsRequest(organization_id=org_id, actor_id=key_id),
        metadata=owner.metadata,
    )
    assert [e.id for e in only_key.audit_events] == [by_key.id]


@pytest.fixture(scope="module")
async def default_cache_server(
    app: App,
) -> AsyncIterator[organization_service_pb2_grpc.OrganizationServiceStub]:
    """A server on the same database with the documented (default) service-key cache."""
    settings = app.settings.model_copy(update={"service_key_cache_seconds": DEFAULT_CACHE_SECONDS})
    server = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield organization_service_pb2_grpc.OrganizationServiceStub(channel)
    finally:
        await server.stop(grace=1.0)


async def seconds_until_refused(
    call: Callable[[], Awaitable[Any]], code: grpc.StatusCode, reason: str, *, within: float
) -> float:
    """Repeats a call until it fails with `code` and `reason`; the seconds that took.
    Fails when it is still accepted after `within` seconds."""
    started = time.monotonic()
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            got = failure(error)
            assert (got.code, got.details["ErrorInfo"].reason) == (code, reason), got.message
            return time.monotonic() - started
        assert time.monotonic() - started <= within, f"still accepted after {within}s"
        await asyncio.sleep(0.1)  # the polling interval


async def test_revocation_deletion_and_leaving_take_effect_within_the_cache_time(
    default_cache_server: organization_service_pb2_grpc.OrganizationServiceStub,
    stubs: SimpleNamespace,
    app: App,
    new_user: NewUser,
) -> None:
    assert 0 < DEFAULT_CACHE_SECONDS <= 5
    bound = DEFAULT_CACHE_SECONDS + 1.0  # the cache time, plus polling and scheduling slack
    owner, member, leaver = await new_user(), await new_user(), await new_user()
    org_id = await seed_organization(app, owner.user_id, member.user_id, leaver.user_id)
    revoked, revoked_id = await bound_key(app, org_id)
    kept, _ = await bound_key(app, org_id)
    for secret, user in ((revoked, owner), (kept, member), (kept, leaver)):
        await default_cache_server.GetOrganization(
            get_org(org_id), metadata=acting(secret, user.user_id)
        )  # cached from here on

    await app.services.service_keys.revoke(revoked_id)
    took = await seconds_until_refused(
        lambda: default_cache_server.GetOrganization(
            get_org(org_id), metadata=acting(revoked, owner.user_id)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "BAD_SERVICE_KEY",
        within=bound,
    )
    assert took <= bound

    await stubs.workspaces.DeleteAccount(ws_pb.DeleteAccountRequest(), metadata=member.metadata)
    took = await seconds_until_refused(
        lambda: default_cache_server.GetOrganization(
            get_org(org_id), metadata=acting(kept, member.user_id)
        ),
        PERMISSION_DENIED,
        "ACT_AS_UNKNOWN_USER",
        within=bound,
    )
    assert took <= bound

    async with app.db.transaction() as session:
        await session.execute(
            delete(OrganizationMember).where(OrganizationMember.user_id == leaver.user_id)
        )
    took = await seconds_until_refused(
        lambda: default_cache_server.GetOrganization(
            get_org(org_id), metadata=acting(kept, leaver.user_id)
        ),
        PERMISSION_DENIED,
        "ACT_AS_OUTSIDE_KEY_ORGANIZATIONS",
        within=bound,
    )
    assert took <= bound
