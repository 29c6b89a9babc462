"""Workspaces: create, list, change, delete and restore them; enabled providers; account
deletion (which removes the workspaces and uploads a user alone holds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from service.application.base import ServiceBase
from service.domain import read_views
from service.domain.actor import Actor
from service.domain.paging import parse_page
from service.domain.tenancy import accounts, files, workspace_lifecycle, workspace_views
from service.domain.tenancy.accounts import DeletedAccount
from service.domain.tenancy.files import FileStorage
from service.domain.tenancy.organizations import TenantCaps
from service.domain.tenancy.workspace_lifecycle import (
    CreatedWorkspace,
    NewWorkspace,
    WorkspacePatch,
)
from service.domain.tenancy.workspace_purge import DeletedSince
from service.domain.tenancy.workspace_views import WorkspaceView


@dataclass(frozen=True, slots=True)
class WorkspacePage:
    """One page of workspaces, oldest first."""

    workspaces: list[WorkspaceView]
    next_page_token: str


@dataclass(slots=True, kw_only=True)
class WorkspaceService(ServiceBase):
    """A user's workspaces; `storage` holds the bytes of uploads (removed with an account)."""

    storage: FileStorage = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = files.storage_for(self.settings)

    @property
    def _join_code_ttl(self) -> timedelta:
        return timedelta(hours=self.settings.join_code_ttl_hours)

    async def create(self, actor: Actor, new: NewWorkspace, *, request_id: str) -> CreatedWorkspace:
        """A new workspace (and, for a first one, the user's organization)."""
        async with self.db.transaction() as session:
            return await workspace_lifecycle.create_workspace(
                session,
                actor,
                new,
                request_id=request_id,
                now=self.clock(),
                join_code_ttl=self._join_code_ttl,
                caps=TenantCaps.of(self.settings),
            )

    async def list_workspaces(
        self,
        user_id: str,
        organization_id: str,
        *,
        page_size: int,
        page_token: str,
        show_deleted: bool = False,
    ) -> WorkspacePage:
        """The workspaces the user can access (of one organization when given), oldest
        first; with `show_deleted`, their soft-deleted ones still within retention too."""
        if show_deleted:
            return await self._list_with_deleted(user_id, organization_id, page_size, page_token)
        page = parse_page(page_size, page_token, scope=f"workspaces|{user_id}|{organization_id}")
        async with self.db.read() as reader:  # the hot read path
            views, token = await read_views.list_workspaces(reader, user_id, organization_id, page)
        return WorkspacePage(views, token)

    async def _list_with_deleted(
        self, user_id: str, organization_id: str, page_size: int, page_token: str
    ) -> WorkspacePage:
        page = parse_page(
            page_size, page_token, scope=f"workspaces-with-deleted|{user_id}|{organization_id}"
        )
        deleted = DeletedSince(self.clock(), self.settings.workspace_retention_days)
        async with self.db.transaction(write=False) as session:
            views, token = await workspace_views.list_views(
                session, user_id, organization_id, page, deleted=deleted
            )
        return WorkspacePage(views, token)

    async def update(
        self,
        actor: Actor,
        workspace_id: str,
        patch: WorkspacePatch,
        paths: Sequence[str],
        etag: str,
    ) -> WorkspaceView:
        """Changes the fields named by `paths`; the workspace as it is after the change."""
        async with self.db.transaction() as session:
            await workspace_lifecycle.update_workspace(
                session, actor, workspace_id, patch, list(paths), etag, now=self.clock()
            )
            return await workspace_views.load_view(session, workspace_id)

    async def delete(self, actor: Actor, workspace_id: str, etag: str) -> None:
        """Soft-deletes the workspace (restorable within retention)."""
        async with self.db.transaction() as session:
            await workspace_lifecycle.delete_workspace(
                session, actor, workspace_id, etag, now=self.clock()
            )

    async def undelete(self, actor: Actor, workspace_id: str, etag: str) -> WorkspaceView:
        """Restores a soft-deleted workspace; the workspace as restored."""
        settings = self.settings
        async with self.db.transaction() as session:
            await workspace_lifecycle.undelete_workspace(
                session,
                actor,
                workspace_id,
                etag,
                now=self.clock(),
                retention_days=settings.workspace_retention_days,
                join_code_ttl=self._join_code_ttl,
                caps=TenantCaps.of(settings),
            )
            return await workspace_views.load_view(session, workspace_id)

    async def set_enabled_providers(
        self, actor: Actor, workspace_id: str, providers: Sequence[str]
    ) -> WorkspaceView:
        """Sets the providers the workspace's runs ask; the workspace after the change."""
        async with self.db.transaction() as session:
            await workspace_lifecycle.set_enabled_providers(
                session, actor, workspace_id, list(providers), now=self.clock()
            )
            return await workspace_views.load_view(session, workspace_id)

    async def delete_account(self, actor: Actor) -> DeletedAccount:
        """Deletes the caller's account; the bytes of their uploads go once it has
        committed."""
        async with self.db.transaction() as session:
            deleted = await accounts.delete_account(session, actor, now=self.clock())
        await files.delete_bytes(self.storage, deleted.file_ids)
        return deleted
