"""Prompts: store, list, add and delete a workspace's prompts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from service.application.base import ServiceBase
from service.domain import read_views
from service.domain.actor import Actor
from service.domain.collection import prompts
from service.domain.collection.prompts import StoredPrompts
from service.domain.money import markets as market_rules
from service.domain.money.markets import Market
from service.domain.read_views import PromptRowPage


@dataclass(frozen=True, slots=True)
class PromptList:
    """A page of the workspace's prompts and the market they are asked from by default."""

    page: PromptRowPage
    default_market: Market | None


class PromptService(ServiceBase):
    """A workspace's prompt list."""

    async def store(
        self,
        actor: Actor,
        workspace_id: str,
        texts: Sequence[str],
        *,
        request_id: str,
        markets: Sequence[Market] = (),
    ) -> StoredPrompts:
        """Replaces the workspace's prompts with `texts` (the last `len(markets)` asked from
        those markets)."""
        return await self._write(
            prompts.store_prompts, actor, workspace_id, texts, request_id, markets
        )

    async def add(
        self,
        actor: Actor,
        workspace_id: str,
        texts: Sequence[str],
        *,
        request_id: str,
        markets: Sequence[Market] = (),
    ) -> StoredPrompts:
        """Adds `texts` to the workspace's prompts (markets as `store`)."""
        return await self._write(
            prompts.add_prompts, actor, workspace_id, texts, request_id, markets
        )

    async def _write(
        self,
        command: Callable[..., Awaitable[StoredPrompts]],
        actor: Actor,
        workspace_id: str,
        texts: Sequence[str],
        request_id: str,
        markets: Sequence[Market],
    ) -> StoredPrompts:
        async with self.db.transaction() as session:
            return await command(
                session,
                actor,
                workspace_id,
                texts,
                markets=markets,
                request_id=request_id,
                now=self.clock(),
            )

    async def list_prompts(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> PromptList:
        """The workspace's prompts, oldest first, and their count (the hot read path), with
        the workspace's default market."""
        async with self.db.read() as reader:
            page = await read_views.list_prompts(
                reader, workspace_id, page_size=page_size, page_token=page_token
            )
            default = await market_rules.default_market(reader, workspace_id)
        return PromptList(page, default)

    async def set_default_market(self, actor: Actor, workspace_id: str, market: Market) -> Market:
        """Sets the market the workspace's prompts are asked from unless they name one."""
        async with self.db.transaction() as session:
            return await market_rules.set_default_market(
                session, actor, workspace_id, market, now=self.clock()
            )

    async def delete(self, actor: Actor, workspace_id: str, prompt_id: str) -> None:
        """Deletes one prompt of the workspace."""
        async with self.db.transaction() as session:
            await prompts.delete_prompt(session, actor, workspace_id, prompt_id, now=self.clock())
