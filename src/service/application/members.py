"""Members: workspace members, join codes, organization members and invitations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from service.application.base import ServiceBase
from service.domain.actor import Actor
from service.domain.tenancy import (
    invitations,
    join_codes,
    organization_members,
    workspace_members,
    workspace_views,
)
from service.domain.tenancy.invitations import Accepted, InvitationPage
from service.domain.tenancy.join_codes import JoinInfo
from service.domain.tenancy.members import Member, MemberPage
from service.domain.tenancy.workspace_views import WorkspaceView


@dataclass(frozen=True, slots=True)
class Joined:
    """What joining a workspace by its code gave: the membership and the workspace."""

    member: Member
    workspace: WorkspaceView


class MemberService(ServiceBase):
    """Who belongs to a workspace or an organization, and how they get in."""

    @property
    def _invitation_ttl(self) -> timedelta:
        return timedelta(hours=self.settings.invitation_ttl_hours)

    # Workspace members ---------------------------------------------------------------------

    async def list_members(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> MemberPage:
        """The workspace's members and pending invitations."""
        async with self.db.transaction(write=False) as session:
            return await workspace_members.list_members(
                session,
                workspace_id,
                page_size=page_size,
                page_token=page_token,
                now=self.clock(),
            )

    async def add_member(
        self, actor: Actor, workspace_id: str, *, email: str, role: str, request_id: str
    ) -> Member:
        """Adds a user by email (an invitation when they have no account yet)."""
        async with self.db.transaction() as session:
            return await workspace_members.add_member(
                session,
                actor,
                workspace_id,
                email=email,
                role=role,
                invitation_ttl=self._invitation_ttl,
                request_id=request_id,
                now=self.clock(),
            )

    async def update_member_role(
        self, actor: Actor, workspace_id: str, *, user_id: str, role: str
    ) -> Member:
        """Changes a workspace member's role."""
        async with self.db.transaction() as session:
            return await workspace_members.update_member_role(
                session, actor, workspace_id, user_id=user_id, role=role, now=self.clock()
            )

    async def remove_member(
        self, actor: Actor, workspace_id: str, *, user_id: str, email: str
    ) -> None:
        """Removes a member (by user id) or a pending invitation (by email)."""
        async with self.db.transaction() as session:
            await workspace_members.remove_member(
                session, actor, workspace_id, user_id=user_id, email=email, now=self.clock()
            )

    async def leave_workspace(self, actor: Actor, workspace_id: str) -> None:
        """The caller leaves the workspace."""
        async with self.db.transaction() as session:
            await workspace_members.leave_workspace(session, actor, workspace_id, now=self.clock())

    # Join codes ----------------------------------------------------------------------------

    async def join_info(self, workspace_id: str) -> JoinInfo:
        """The workspace's join code and its expiry."""
        async with self.db.transaction(write=False) as session:
            return await join_codes.get_join_info(session, workspace_id, now=self.clock())

    async def rotate_join_code(
        self, actor: Actor, workspace_id: str, *, ttl_seconds: float | None, request_id: str
    ) -> JoinInfo:
        """A new join code (the old one stops working)."""
        async with self.db.transaction() as session:
            return await join_codes.rotate_join_code(
                session,
                actor,
                workspace_id,
                ttl_seconds=ttl_seconds,
                default_ttl=timedelta(hours=self.settings.join_code_ttl_hours),
                request_id=request_id,
                now=self.clock(),
            )

    async def join_by_code(self, actor: Actor, code: str) -> Joined:
        """The caller joins the workspace of `code`; the membership and the workspace."""
        async with self.db.transaction() as session:
            member = await join_codes.join_by_code(session, actor, code, now=self.clock())
            workspace = await workspace_views.load_view(session, member.scope_id)
        return Joined(member, workspace)

    # Organization members ------------------------------------------------------------------

    async def list_organization_members(
        self, organization_id: str, *, page_size: int, page_token: str
    ) -> MemberPage:
        """The organization's members and pending invitations."""
        async with self.db.transaction(write=False) as session:
            return await organization_members.list_organization_members(
                session,
                organization_id,
                page_size=page_size,
                page_token=page_token,
                now=self.clock(),
            )

    async def invite_organization_member(
        self, actor: Actor, organization_id: str, *, email: str, role: str, request_id: str
    ) -> Member:
        """Invites a user by email into the organization."""
        async with self.db.transaction() as session:
            return await organization_members.invite_organization_member(
                session,
                actor,
                organization_id,
                email=email,
                role=role,
                invitation_ttl=self._invitation_ttl,
                request_id=request_id,
                now=self.clock(),
            )

    async def update_organization_member_role(
        self, actor: Actor, organization_id: str, *, user_id: str, role: str
    ) -> Member:
        """Changes an organization member's role."""
        async with self.db.transaction() as session:
            return await organization_members.update_organization_member_role(
                session, actor, organization_id, user_id=user_id, role=role, now=self.clock()
            )

    async def remove_organization_member(
        self, actor: Actor, organization_id: str, *, user_id: str, email: str
    ) -> None:
        """Removes an organization member or a pending invitation."""
        async with self.db.transaction() as session:
            await organization_members.remove_organization_member(
                session, actor, organization_id, user_id=user_id, email=email, now=self.clock()
            )

    # Invitations ---------------------------------------------------------------------------

    async def list_my_invitations(
        self, actor: Actor, *, page_size: int, page_token: str
    ) -> InvitationPage:
        """The invitations addressed to the caller's verified email."""
        async with self.db.transaction(write=False) as session:
            return await invitations.list_my_invitations(
                session, actor, page_size=page_size, page_token=page_token, now=self.clock()
            )

    async def accept_invitation(self, actor: Actor, invitation_id: str) -> Accepted:
        """The caller accepts an invitation addressed to them."""
        async with self.db.transaction() as session:
            return await invitations.accept_invitation(
                session, actor, invitation_id, now=self.clock()
            )

    async def decline_invitation(self, actor: Actor, invitation_id: str) -> None:
        """The caller declines an invitation addressed to them."""
        async with self.db.transaction() as session:
            await invitations.decline_invitation(session, actor, invitation_id, now=self.clock())
