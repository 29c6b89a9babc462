"""A target tenant and callers of every kind, written straight to the database (no tests here).

One `World` is an organization with one workspace (a prompt, a live run, an ended run, a
live join code, an explicit member and an organization member besides its founder, and a
pending invitation to the caller's email), a soft-deleted workspace not yet purged (the
same explicit members and grants), and one caller standing in a given relation to it. Everything but the guest's join is one
transaction, so a fresh world per matrix cell stays cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.v1 import membership_service_pb2 as member_pb
from beacon.v1 import membership_service_pb2_grpc
from service.app import App
from service.auth.tokens import mint_dev_token
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.models import (
    AlertRule,
    Organization,
    OrganizationMember,
    SuggestionEvidence,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain.collection import suggestions
from service.domain.notifications.secrets import SecretBox, new_secret
from service.domain.tenancy.join_codes import display_code, generate_code
from tests.support import unique
from tests.support.builders import end_run, insert_prompts, insert_run
from tests.support.security.calls import Metadata, bearer

OTHER_SECRET = "not-the-beacon-secret-0123456789abcdef"

# Callers without a valid credential.
NO_TOKEN = "no_token"
EXPIRED_TOKEN = "expired_token"
WRONG_SIGNATURE = "wrong_signature"
# Users, by their relation to the target.
OTHER_TENANT = "other_tenant"
GUEST = "guest"
WORKSPACE_MEMBER = "workspace_member"
WORKSPACE_OWNER = "workspace_owner"
ORG_MEMBER = "org_member"
ORG_ADMIN = "org_admin"
ORG_OWNER = "org_owner"
BILLING_ADMIN = "billing_admin"
# Service keys that do not act as a user.
SERVICE_KEY = "service_key"
WORKOS_KEY = "workos_key"

CALLERS = (
    NO_TOKEN,
    EXPIRED_TOKEN,
    WRONG_SIGNATURE,
    OTHER_TENANT,
    GUEST,
    WORKSPACE_MEMBER,
    WORKSPACE_OWNER,
    ORG_MEMBER,
    ORG_ADMIN,
    ORG_OWNER,
    BILLING_ADMIN,
    SERVICE_KEY,
    WORKOS_KEY,
)
# (organization role, explicit workspace role) each user caller is given on the target.
USER_GRANTS: dict[str, tuple[str | None, str | None]] = {
    OTHER_TENANT: (None, None),
    GUEST: (None, None),  # joins through JoinWorkspaceByCode
    WORKSPACE_MEMBER: (None, "member"),
    WORKSPACE_OWNER: (None, "owner"),
    ORG_MEMBER: ("member", None),
    ORG_ADMIN: ("admin", None),
    ORG_OWNER: ("owner", None),
    BILLING_ADMIN: ("billing_admin", None),
}


@dataclass(frozen=True, slots=True)
class Person:
    """A user row and a valid token for it."""

    user_id: str
    email: str
    token: str


@dataclass(frozen=True, slots=True)
class World:
    """The target tenant, and the caller's metadata."""

    organization_id: str
    workspace_id: str
    deleted_workspace_id: str  # soft-deleted a day ago, restorable
    prompt_id: str
    run_id: str  # queued, not ended
    ended_run_id: str
    suggestion_id: str  # a competitor suggestion, undecided
    join_code: str  # display form, live
    invitation_id: str  # pending, to the workspace, for the caller's email (if a user)
    webhook_endpoint_id: str  # enabled, of the workspace
    webhook_delivery_id: str  # failed, to that endpoint
    alert_rule_id: str  # a mention-rate rule of the workspace
    member: Person  # an explicit workspace member (role member), not the caller
    org_member: Person  # an organization member (role member), not the caller
    founder: Person  # organization owner and explicit workspace owner
    caller: Person | None  # the user caller, if the caller is a user
    metadata: Metadata


def _person(settings: Settings, session: AsyncSession) -> Person:
    email = f"sec-{unique('u')}@example.com"
    name = email.split("@")[0]
    user_id = new_id("user")
    session.add(
        User(
            id=user_id,
            issuer=settings.auth_dev_issuer,
            subject=f"dev|{email}",
            email=email,
            email_verified=True,
            name=name,
        )
    )
    return Person(user_id, email, mint_dev_token(settings, email=email, name=name))


def expired_token(settings: Settings) -> str:
    email = f"sec-{unique('x')}@example.com"
    return mint_dev_token(settings, email=email, ttl_seconds=60, now=time.time() - 7200)


def wrongly_signed_token(settings: Settings) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.auth_dev_issuer,
        "aud": settings.auth_audience or "beacon",
        "sub": f"dev|sec-{unique('s')}@example.com",
        "email": f"sec-{unique('s')}@example.com",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, OTHER_SECRET, algorithm="HS256")


def _organization(session: AsyncSession, owner_id: str) -> str:
    org_id = new_id("org")
    session.add(Organization(id=org_id, name=unique("Org "), slug=unique("org-")))
    session.add(
        OrganizationMember(
            organization_id=org_id, user_id=owner_id, role="owner", create_time=utcnow()
        )
    )
    return org_id


def _workspace(
    session: AsyncSession,
    org_id: str,
    owner_id: str,
    join_code: str | None,
    *,
    delete_time: datetime | None = None,
) -> str:
    ws_id = new_id("ws")
    session.add(
        Workspace(
            id=ws_id,
            organization_id=org_id,
            name=unique("Workspace "),
            slug=unique("ws-"),
            domain="acme.example",
            brand_aliases=[],
            competitors=[],
            enabled_providers=["openai", "anthropic"],
            join_code=join_code,
            join_code_expire_time=utcnow() + timedelta(days=7) if join_code else None,
            delete_time=delete_time,
        )
    )
    session.add(
        WorkspaceMember(workspace_id=ws_id, user_id=owner_id, role="owner", create_time=utcnow())
    )
    return ws_id


async def build_world(
    app: App,
    settings: Settings,
    memberships: membership_service_pb2_grpc.MembershipServiceStub,
    caller: str,
    keys: dict[str, str],
) -> World:
    """A fresh target tenant and a caller of kind `caller` (one of CALLERS).

    `keys` maps SERVICE_KEY and WORKOS_KEY to service key secrets; the guest joins through
    `memberships` (JoinWorkspaceByCode), as a guest would.
    """
    code = generate_code()
    now = utcnow()
    async with app.db.transaction() as session:
        founder = _person(settings, session)
        member = _person(settings, session)
        org_member = _person(settings, session)
        user = _person(settings, session) if caller in USER_GRANTS else None
        await session.flush()
        org_id = _organization(session, founder.user_id)
        if caller == OTHER_TENANT and user is not None:
            other_org = _organization(session, user.user_id)
            await session.flush()
            _workspace(session, other_org, user.user_id, generate_code())
        await session.flush()
        ws_id = _workspace(session, org_id, founder.user_id, code)
        deleted_id = _workspace(
            session, org_id, founder.user_id, None, delete_time=now - timedelta(days=1)
        )
        session.add(
            OrganizationMember(
                organization_id=org_id, user_id=org_member.user_id, role="member", create_time=now
            )
        )
        await session.flush()
        for workspace_id in (ws_id, deleted_id):
            session.add(
                WorkspaceMember(
                    workspace_id=workspace_id,
                    user_id=member.user_id,
                    role="member",
                    create_time=now,
                )
            )
        invitation_id = new_id("inv")
        session.add(
            WorkspaceInvitation(
                id=invitation_id,
                workspace_id=ws_id,
                email=user.email if user is not None else f"sec-{unique('i')}@example.com",
                role="member",
                invited_by=founder.user_id,
                create_time=now,
                expire_time=now + timedelta(days=7),
            )
        )
        if user is not None:
            org_role, ws_role = USER_GRANTS[caller]
            if org_role:
                session.add(
                    OrganizationMember(
                        organization_id=org_id, user_id=user.user_id, role=org_role, create_time=now
                    )
                )
            for workspace_id in (ws_id, deleted_id) if ws_role else ():
                session.add(
                    WorkspaceMember(
                        workspace_id=workspace_id,
                        user_id=user.user_id,
                        role=ws_role,
                        create_time=now,
                    )
                )
        endpoint_id, delivery_id, rule_id = await _notifications(session, settings, ws_id)
    # Collection rows as the collection tests write them (a transaction each).
    (prompt_id,) = await insert_prompts(app, ws_id, [unique("What is the best tracker? ")])
    run_id = await insert_run(app, ws_id, status="queued")
    ended_run_id = await insert_run(app, ws_id, status="running")
    await end_run(app, ended_run_id, "succeeded")
    suggestion_id = await _suggestion(app, ws_id)
    metadata = _metadata(settings, caller, user, keys)
    if caller == GUEST:
        await memberships.JoinWorkspaceByCode(
            member_pb.JoinWorkspaceByCodeRequest(code=display_code(code)), metadata=metadata
        )
    return World(
        organization_id=org_id,
        workspace_id=ws_id,
        deleted_workspace_id=deleted_id,
        prompt_id=prompt_id,
        run_id=run_id,
        ended_run_id=ended_run_id,
        suggestion_id=suggestion_id,
        join_code=display_code(code),
        invitation_id=invitation_id,
        webhook_endpoint_id=endpoint_id,
        webhook_delivery_id=delivery_id,
        alert_rule_id=rule_id,
        member=member,
        org_member=org_member,
        founder=founder,
        caller=user,
        metadata=metadata,
    )


async def _notifications(
    session: AsyncSession, settings: Settings, ws_id: str
) -> tuple[str, str, str]:
    """A webhook endpoint, a failed delivery to it and an alert rule of the workspace."""
    now = utcnow()
    endpoint_id, delivery_id, rule_id = new_id("whk"), new_id("dlv"), new_id("alr")
    session.add(
        WebhookEndpoint(
            id=endpoint_id,
            workspace_id=ws_id,
            url=f"https://hooks.example.com/{unique('h')}",
            event_types=[],
            enabled=True,
            description="",
            disabled_reason="",
            secret_ciphertext=SecretBox.from_settings(settings).encrypt(new_secret(), endpoint_id),
            secret_create_time=now,
            create_time=now,
        )
    )
    await session.flush()
    session.add(
        WebhookDelivery(
            id=delivery_id,
            workspace_id=ws_id,
            endpoint_id=endpoint_id,
            message_id=new_id("msg"),
            event_type="run.completed",
            body="{}",
            status="failed",
            attempts=3,
            last_http_status=500,
            last_error="HTTP 500",
            last_latency_ms=12,
            schedule_start_time=now - timedelta(hours=1),
            create_time=now - timedelta(hours=1),
            complete_time=now,
        )
    )
    session.add(
        AlertRule(
            id=rule_id,
            workspace_id=ws_id,
            kind="mention_rate_drop",
            provider="",
            threshold=10.0,
            trailing_runs=5,
            min_sample=10,
            firing=[],
            create_time=now,
        )
    )
    return endpoint_id, delivery_id, rule_id


async def _suggestion(app: App, workspace_id: str) -> str:
    """A competitor suggestion of the workspace, as an answer listing a name leaves it."""
    async with app.db.transaction() as session:
        session.add(
            SuggestionEvidence(
                workspace_id=workspace_id,
                kind="name",
                key="initech",
                provider="openai",
                label="Initech",
                answers=1,
                last_time=utcnow(),
                example_response_id=new_id("rsp"),
            )
        )
    return suggestions.suggestion_id("name", "initech")


def _metadata(
    settings: Settings, caller: str, user: Person | None, keys: dict[str, str]
) -> Metadata:
    if caller == NO_TOKEN:
        return ()
    if caller == EXPIRED_TOKEN:
        return bearer(expired_token(settings))
    if caller == WRONG_SIGNATURE:
        return bearer(wrongly_signed_token(settings))
    if caller in keys:
        return bearer(keys[caller])
    assert user is not None, caller
    return bearer(user.token)
