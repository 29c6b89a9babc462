"""Who a call is from is never ambiguous: an identity claim too long to store whole is
refused (never cut, which would make two people one user), and so is a call that names its
credentials twice (which of the two counted would depend on each proxy on the way)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import organization_service_pb2_grpc
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.tokens import MAX_IDENTITY_CLAIM_LENGTH, mint_dev_token
from service.config import Settings
from service.db.models import User
from service.server import start_server
from tests.support.app import NewUser, make_settings
from tests.support.assertions import expect_refusal

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
LIST_MINE = org_pb.ListMyOrganizationsRequest()


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def fresh_email() -> str:
    return f"claims-{uuid.uuid4().hex[:12]}@example.com"


async def users_with_email(app: App, email: str) -> int:
    async with app.db.transaction(write=False) as session:
        count = await session.scalar(select(func.count()).where(User.email == email))
    return int(count or 0)


async def expect_claim_refused(call: Any, claim: str) -> None:
    refused = await expect_refusal(UNAUTHENTICATED, "CLAIM_TOO_LONG", call)
    assert refused.details["ErrorInfo"].metadata["claim"] == claim
    assert repr(claim) in refused.message


async def test_an_overlong_subject_is_refused_naming_the_claim(
    stubs: SimpleNamespace, settings: Settings, app: App
) -> None:
    email = fresh_email()
    token = mint_dev_token(settings, email=email, subject="idp|" + "s" * 296)
    await expect_claim_refused(
        stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=(bearer(token),)), "sub"
    )
    assert await users_with_email(app, email) == 0


async def test_subjects_sharing_a_stored_prefix_are_never_one_user(
    stubs: SimpleNamespace, settings: Settings, app: App
) -> None:
    prefix = "idp|" + uuid.uuid4().hex + "p" * (MAX_IDENTITY_CLAIM_LENGTH - 36)
    assert len(prefix) == MAX_IDENTITY_CLAIM_LENGTH
    victim = mint_dev_token(settings, email=fresh_email(), subject=prefix)
    created = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(name="Victim Workspace"), metadata=(bearer(victim),)
    )
    attacker_email = fresh_email()
    attacker = mint_dev_token(settings, email=attacker_email, subject=prefix + "|attacker")
    await expect_claim_refused(
        stubs.workspaces.GetWorkspace(
            ws_pb.GetWorkspaceRequest(workspace_id=created.workspace.id),
            metadata=(bearer(attacker),),
        ),
        "sub",
    )
    assert await users_with_email(app, attacker_email) == 0


@pytest.fixture
async def long_issuer_stubs(
    app: App, backend: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Any]]:
    """A server whose development issuer is longer than any stored issuer can be."""
    settings = make_settings(
        backend,
        app.settings.database_url,
        tmp_path,
        "unused",
        redis_url="",
        auth_dev_issuer="https://issuer.example/" + "i" * 300,
    )
    server = await start_server(App(settings=settings, db=app.db), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield settings, organization_service_pb2_grpc.OrganizationServiceStub(channel)
    finally:
        await server.stop(grace=1.0)


async def test_an_overlong_issuer_is_refused_naming_the_claim(
    long_issuer_stubs: tuple[Settings, Any], app: App
) -> None:
    settings, organizations = long_issuer_stubs
    email = fresh_email()
    token = mint_dev_token(settings, email=email)
    await expect_claim_refused(
        organizations.ListMyOrganizations(LIST_MINE, metadata=(bearer(token),)), "iss"
    )
    assert await users_with_email(app, email) == 0


async def test_two_authorization_headers_are_refused(
    stubs: SimpleNamespace, new_user: NewUser
) -> None:
    first, second = await new_user(), await new_user()
    for headers in (
        (bearer(first.token), bearer(second.token)),
        (bearer(first.token), bearer(first.token)),
    ):
        refused = await expect_refusal(
            UNAUTHENTICATED,
            "DUPLICATE_CREDENTIALS",
            stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=headers),
        )
        assert refused.details["ErrorInfo"].metadata["header"] == "authorization"


async def test_service_key_headers_sent_twice_are_refused(
    stubs: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    user, other = await new_user(), await new_user()
    keys = [
        (
            await app.services.service_keys.create(
                f"svc-{uuid.uuid4().hex[:8]}", ["act_as"], all_organizations=True
            )
        )[0]
        for _ in range(2)
    ]
    cases = {
        "authorization": (bearer(keys[0]), bearer(keys[1]), ("x-beacon-act-as", user.user_id)),
        "x-beacon-act-as": (
            bearer(keys[0]),
            ("x-beacon-act-as", user.user_id),
            ("x-beacon-act-as", other.user_id),
        ),
    }
    for header, metadata in cases.items():
        refused = await expect_refusal(
            UNAUTHENTICATED,
            "DUPLICATE_CREDENTIALS",
            stubs.organizations.ListMyOrganizations(LIST_MINE, metadata=metadata),
        )
        assert refused.details["ErrorInfo"].metadata["header"] == header
    # One of each is an ordinary call.
    await stubs.organizations.ListMyOrganizations(
        LIST_MINE, metadata=(bearer(keys[0]), ("x-beacon-act-as", user.user_id))
    )
