"""Prompts: store, list, add and delete a workspace's prompts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from service.application.base import ServiceBase
from service.domain import read_views
from service.domain.actor import Actor
from service.domain.collection import prompts
from service.domain.collection.prompts import StoredPrompts
from service.domain.read_views import PromptRowPage


class PromptService(ServiceBase):
    """A workspace's prompt list."""

    async def store(
        self, actor: Actor, workspace_id: str, texts: Sequence[str], *, request_id: str
    ) -> StoredPrompts:
        """Replaces the workspace's prompts with `texts`."""
        return await self._write(prompts.store_prompts, actor, workspace_id, texts, request_id)

    async def add(
        self, actor: Actor, workspace_id: str, texts: Sequence[str], *, request_id: str
    ) -> StoredPrompts:
        """Adds `texts` to the workspace's prompts."""
        return await self._write(prompts.add_prompts, actor, workspace_id, texts, request_id)

    async def _write(
        self,
        command: Callable[..., Awaitable[StoredPrompts]],
        actor: Actor,
        workspace_id: str,
        texts: Sequence[str],
        request_id: str,
    ) -> StoredPrompts:
        async with self.db.transaction() as session:
            return await command(
                session, actor, workspace_id, texts, request_id=request_id, now=self.clock()
            )

    async def list_prompts(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> PromptRowPage:
        """The workspace's prompts, oldest first, and their count (the hot read path)."""
        async with self.db.read() as reader:
            return await read_views.list_prompts(
                reader, workspace_id, page_size=page_size, page_token=page_token
            )

    async def delete(self, actor: Actor, workspace_id: str, prompt_id: str) -> None:
        """Deletes one prompt of the workspace."""
        async with self.db.transaction() as session:
            await prompts.delete_prompt(session, actor, workspace_id, prompt_id, now=self.clock())
