"""The builders: the data tests need, made the shortest way (no tests here).

Rows written straight to the database (`make_workspace`, `insert_run`, `insert_probe`, the
`seed_*` ones...): workspaces are inserted as rows so that the collection tests depend only on
the collection API, probe results as a worker would write them. Calls through the API
(`new_organization`, `new_workspace`, `create_workspace`, `add_and_accept`...), for tests of the
tenancy API. Inputs (`png_bytes`, `BRAND`, `COMPETITORS`).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import select, update

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import new_id, utcnow
from service.db.models import (
    AuditEvent,
    Organization,
    OrganizationMember,
    Probe,
    Prompt,
    Run,
    Workspace,
    WorkspaceMember,
)
from service.domain.collection import insight_rollups, rollups
from service.domain.collection.prompts import text_hash
from tests.support import unique
from tests.support.report_oracle import answer_of
from workers.analysis import (
    BrandSpec,
    CompetitorSpec,
)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A workspace in its own organization, owned by one user."""

    organization_id: str
    workspace_id: str


async def make_workspace(
    app: App,
    owner_id: str,
    *,
    enabled: Sequence[str] = ("openai", "anthropic"),
    domain: str = "acme.com",
    competitors: Sequence[str] = (),
) -> Tenant:
    """An organization owned by `owner_id` with one workspace tracking `domain`."""
    now = utcnow()
    org_id, ws_id = new_id("org"), new_id("ws")
    async with app.db.transaction() as session:
        session.add(Organization(id=org_id, name=unique("Org "), slug=unique("org-")))
        await session.flush()
        session.add(
            OrganizationMember(
                organization_id=org_id, user_id=owner_id, role="owner", create_time=now
            )
        )
        session.add(
            Workspace(
                id=ws_id,
                organization_id=org_id,
                name=unique("Workspace "),
                slug=unique("ws-"),
                domain=domain,
                brand_aliases=[],
                competitors=[{"name": name, "domain": ""} for name in competitors],
                enabled_providers=list(enabled),
            )
        )
    return Tenant(org_id, ws_id)


async def stored_texts(app: App, workspace_id: str) -> dict[str, str]:
    """The workspace's prompt ids by text."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(select(Prompt).where(Prompt.workspace_id == workspace_id))
        return {row.text: row.id for row in rows}


async def add_workspace_member(app: App, workspace_id: str, user_id: str, role: str) -> None:
    """Adds a guest member (no organization role) to a workspace."""
    async with app.db.transaction() as session:
        session.add(
            WorkspaceMember(
                workspace_id=workspace_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )


async def insert_prompts(app: App, workspace_id: str, texts: Sequence[str]) -> list[str]:
    """Prompt rows, in order; returns their ids."""
    ids = [new_id("prm") for _ in texts]
    now = utcnow()
    async with app.db.transaction() as session:
        for prompt_id, text in zip(ids, texts, strict=True):
            session.add(
                Prompt(
                    id=prompt_id,
                    workspace_id=workspace_id,
                    text=text,
                    text_hash=text_hash(text),
                    create_time=now,
                )
            )
    return ids


async def insert_run(
    app: App,
    workspace_id: str,
    *,
    create_time: datetime | None = None,
    providers: Sequence[str] = ("openai",),
    prompt_count: int = 1,
    status: str = "running",
) -> str:
    """A run row as a worker would have it after picking it up."""
    run_id = new_id("run")
    async with app.db.transaction() as session:
        session.add(
            Run(
                id=run_id,
                workspace_id=workspace_id,
                trigger="manual",
                status=status,
                prompt_ids=[],
                providers=list(providers),
                prompt_count=prompt_count,
                create_time=create_time or utcnow(),
            )
        )
    return run_id


async def insert_probe(
    app: App,
    run_id: str,
    prompt_id: str,
    provider: str,
    *,
    status: str = "succeeded",
    complete_time: datetime | None = None,
    **fields: Any,
) -> str:
    """A probe row; finished ones get a complete_time (now unless given)."""
    async with app.db.transaction() as session:
        run = (await session.scalars(select(Run).where(Run.id == run_id))).one()
        probe = Probe(
            id=new_id("rsp"),
            run_id=run_id,
            workspace_id=run.workspace_id,
            prompt_id=prompt_id,
            prompt_text=fields.pop("prompt_text", "prompt"),
            provider=provider,
            status=status,
            create_time=run.create_time,
            complete_time=None if status == "pending" else complete_time or utcnow(),
            **fields,
        )
        session.add(probe)
        await session.flush()
        if status == "succeeded":
            await rollups.add_answers(session, [answer_of(probe)])
            await insight_rollups.add_answers(session, [insight_rollups.stored_answer(probe)])
    return probe.id


async def finish_probe(app: App, probe_id: str, status: str = "succeeded", **fields: Any) -> None:
    """Marks a pending probe finished, as a worker does (answers enter the rollups)."""
    async with app.db.transaction() as session:
        finished = await session.scalar(
            update(Probe)
            .where(Probe.id == probe_id, Probe.status == "pending")
            .values(status=status, complete_time=utcnow(), **fields)
            .returning(Probe)
        )
        if finished is not None and status == "succeeded":
            await rollups.add_answers(session, [answer_of(finished)])
            await insight_rollups.add_answers(session, [insight_rollups.stored_answer(finished)])


async def end_run(app: App, run_id: str, status: str) -> None:
    """Ends a run, as a worker does when its last probe finishes."""
    async with app.db.transaction() as session:
        await session.execute(
            update(Run)
            .where(Run.id == run_id, Run.end_time.is_(None))
            .values(status=status, end_time=utcnow())
        )


async def audited_actions(app: App, workspace_id: str) -> list[tuple[str, list[str]]]:
    """(RPC, target ids) of the workspace's audit events, oldest first."""
    async with app.db.transaction(write=False) as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.workspace_id == workspace_id)
            .order_by(AuditEvent.create_time)
        )
        return [(row.action.rsplit("/", 1)[-1], list(row.target_ids)) for row in rows]


async def all_pages(fetch: Callable[[str], Awaitable[Any]], field: str) -> list[Any]:
    """Every item of a List RPC: `fetch(page_token)` is called until next_page_token is empty."""
    items: list[Any] = []
    token = ""
    while True:
        page = await fetch(token)
        items.extend(getattr(page, field))
        token = page.next_page_token
        if not token:
            return items


def png_bytes(size: int = 8, color: str = "red") -> bytes:
    """A real PNG image."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


async def new_organization(
    stubs: SimpleNamespace, user: Any, name: str = ""
) -> org_pb.Organization:
    reply: org_pb.Organization = await stubs.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name=name or unique("Org ")), metadata=user.metadata
    )
    return reply


async def new_workspace(
    stubs: SimpleNamespace, user: Any, **fields: Any
) -> ws_pb.CreateWorkspaceResponse:
    """CreateWorkspace with a unique name unless given."""
    fields.setdefault("name", unique("Workspace "))
    reply: ws_pb.CreateWorkspaceResponse = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(**fields), metadata=user.metadata
    )
    return reply


async def upload_ticket(
    stubs: SimpleNamespace, user: Any
) -> ws_pb.GenerateWorkspaceIconUploadUrlResponse:
    reply: ws_pb.GenerateWorkspaceIconUploadUrlResponse = (
        await stubs.workspaces.GenerateWorkspaceIconUploadUrl(
            ws_pb.GenerateWorkspaceIconUploadUrlRequest(), metadata=user.metadata
        )
    )
    return reply


async def upload_icon(
    stubs: SimpleNamespace, http: httpx.AsyncClient, user: Any, data: bytes | None = None
) -> str:
    """Uploads an icon as the seed does (POST to the signed URL); returns the storage id."""
    ticket = await upload_ticket(stubs, user)
    response = await http.post(
        ticket.upload_url, content=data or png_bytes(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 201, response.text
    return ticket.storage_id


async def all_workspaces(
    stubs: SimpleNamespace,
    user: Any,
    organization_id: str = "",
    page_size: int = 0,
    *,
    show_deleted: bool = False,
) -> list[ws_pb.Workspace]:
    """Every workspace ListWorkspaces returns, following next_page_token to the end."""
    result: list[ws_pb.Workspace] = []
    token = ""
    while True:
        reply = await stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(
                organization_id=organization_id,
                page_size=page_size,
                page_token=token,
                show_deleted=show_deleted,
            ),
            metadata=user.metadata,
        )
        result.extend(reply.workspaces)
        token = reply.next_page_token
        if not token:
            return result


async def grant_organization_role(app: App, organization_id: str, user_id: str, role: str) -> None:
    """Makes `user_id` a member of the organization with `role` (test setup, straight in SQL)."""
    async with app.db.transaction() as session:
        session.add(
            OrganizationMember(
                organization_id=organization_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )


async def grant_workspace_role(app: App, workspace_id: str, user_id: str, role: str) -> None:
    """Makes `user_id` an explicit member of the workspace (a guest unless in the org)."""
    async with app.db.transaction() as session:
        session.add(
            WorkspaceMember(
                workspace_id=workspace_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )


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


async def create_workspace(stubs: SimpleNamespace, owner: Any, **fields: Any) -> ws_pb.Workspace:
    """A new workspace (in the owner's personal organization unless fields say otherwise)."""
    request = ws_pb.CreateWorkspaceRequest(name=unique("Team "), **fields)
    reply: ws_pb.CreateWorkspaceResponse = await stubs.workspaces.CreateWorkspace(
        request, metadata=owner.metadata
    )
    return reply.workspace


async def create_organization(stubs: SimpleNamespace, owner: Any) -> org_pb.Organization:
    request = org_pb.CreateOrganizationRequest(name=unique("Org "))
    reply: org_pb.Organization = await stubs.organizations.CreateOrganization(
        request, metadata=owner.metadata
    )
    return reply


async def add_member(
    stubs: SimpleNamespace,
    workspace_id: str,
    actor: Any,
    email: str,
    role: pb.WorkspaceRole.ValueType = pb.WORKSPACE_ROLE_MEMBER,
) -> pb.WorkspaceMember:
    request = pb.AddMemberRequest(workspace_id=workspace_id, email=email, role=role)
    member: pb.WorkspaceMember = await stubs.memberships.AddMember(request, metadata=actor.metadata)
    return member


async def accept_invitation_to(
    stubs: SimpleNamespace, invitee: Any, scope_id: str
) -> pb.AcceptInvitationResponse:
    """The invitee accepts their pending invitation to the workspace or organization."""
    request = pb.ListMyInvitationsRequest(page_size=100)
    listed = await stubs.memberships.ListMyInvitations(request, metadata=invitee.metadata)
    (invitation,) = [
        i
        for i in listed.invitations
        if scope_id in (i.workspace_id, i.id)
        or (not i.workspace_id and i.organization_id == scope_id)
    ]
    reply: pb.AcceptInvitationResponse = await stubs.memberships.AcceptInvitation(
        pb.AcceptInvitationRequest(invitation_id=invitation.id), metadata=invitee.metadata
    )
    return reply


async def add_and_accept(
    stubs: SimpleNamespace,
    workspace_id: str,
    actor: Any,
    invitee: Any,
    role: pb.WorkspaceRole.ValueType = pb.WORKSPACE_ROLE_MEMBER,
) -> pb.WorkspaceMember:
    """AddMember of the invitee's email, then the invitee accepts: their active membership."""
    await add_member(stubs, workspace_id, actor, invitee.email, role)
    return (await accept_invitation_to(stubs, invitee, workspace_id)).workspace_member


async def invite_and_accept(
    stubs: SimpleNamespace,
    organization_id: str,
    actor: Any,
    invitee: Any,
    role: org_pb.OrganizationRole.ValueType = org_pb.ORGANIZATION_ROLE_MEMBER,
) -> pb.OrganizationMember:
    """InviteOrganizationMember of the invitee's email, then the invitee accepts."""
    await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(
            organization_id=organization_id, email=invitee.email, role=role
        ),
        metadata=actor.metadata,
    )
    return (await accept_invitation_to(stubs, invitee, organization_id)).organization_member


async def all_members(
    stubs: SimpleNamespace, workspace_id: str, actor: Any, page_size: int = 0
) -> list[pb.WorkspaceMember]:
    """Every member and invitation, following next_page_token to the end."""
    members: list[pb.WorkspaceMember] = []
    token = ""
    while True:
        request = pb.ListMembersRequest(
            workspace_id=workspace_id, page_size=page_size, page_token=token
        )
        reply = await stubs.memberships.ListMembers(request, metadata=actor.metadata)
        members.extend(reply.members)
        token = reply.next_page_token
        if not token:
            return members


def roles_by_user(members: list[pb.WorkspaceMember]) -> dict[str, int]:
    """user_id → role of the active members."""
    return {m.user_id: m.role for m in members if m.state == pb.MEMBER_STATE_ACTIVE}


BRAND = BrandSpec("Acme", "https://www.acme.com/", aliases=("Acme Corp", "アクメ"))


COMPETITORS = (
    CompetitorSpec("HubSpot", "hubspot.com"),
    CompetitorSpec("Monday.com", "monday.com"),
    CompetitorSpec("C++", "isocpp.org"),
    CompetitorSpec("Acme Cloud", "acme.cloud"),
    CompetitorSpec("Café Solo", "cafesolo.fr"),
)
