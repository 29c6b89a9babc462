"""Per-user rate limits count the person, not the user row: deleting the account and
signing in again (a new user id for the same token issuer and subject) keeps the budget
already spent."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import grpc
from sqlalchemy import select

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.db.models import User
from tests.support.assertions import expect_refusal, passes_auth

JOIN = member_pb.JoinWorkspaceByCodeRequest(code="ABCD-EFGH-JKMN")  # a well-formed guess
JOIN_QUOTA = "5 per 900s per user"


async def user_ids_of(app: App, subject: str) -> list[str]:
    async with app.db.transaction(write=False) as session:
        return list(await session.scalars(select(User.id).where(User.subject == subject)))


async def test_deleting_the_account_does_not_reset_the_join_code_budget(
    stubs: SimpleNamespace, settings: Settings, app: App
) -> None:
    email = f"guesser-{uuid.uuid4().hex[:12]}@example.com"
    subject = f"idp|{uuid.uuid4().hex}"

    def token(name: str) -> tuple[tuple[str, str], ...]:
        minted = mint_dev_token(settings, email=email, name=name, subject=subject)
        return (("authorization", f"Bearer {minted}"),)

    before = token("Before")
    for _ in range(5):
        await passes_auth(stubs.memberships.JoinWorkspaceByCode(JOIN, metadata=before))
    await expect_refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        stubs.memberships.JoinWorkspaceByCode(JOIN, metadata=before),
    )
    [old_id] = await user_ids_of(app, subject)
    await stubs.workspaces.DeleteAccount(ws_pb.DeleteAccountRequest(), metadata=before)

    # Signing in again with the same (issuer, subject) registers a new user...
    after = token("After")
    await stubs.organizations.ListMyOrganizations(
        org_pb.ListMyOrganizationsRequest(), metadata=after
    )
    [new_id] = await user_ids_of(app, subject)
    assert new_id != old_id
    # ...whose join-code budget is the one the deleted account spent.
    refused = await expect_refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        stubs.memberships.JoinWorkspaceByCode(JOIN, metadata=after),
    )
    [violation] = refused.details["QuotaFailure"].violations
    assert (violation.subject, violation.description) == (f"user:{new_id}", JOIN_QUOTA)
    # A service key acting as the new user spends the same budget.
    secret, _ = await app.services.service_keys.create(
        f"svc-{uuid.uuid4().hex[:8]}", ["act_as"], all_organizations=True
    )
    await expect_refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        stubs.memberships.JoinWorkspaceByCode(
            JOIN,
            metadata=(("authorization", f"Bearer {secret}"), ("x-beacon-act-as", new_id)),
        ),
    )
