"""Insights: cited sources, cited URLs, visibility per prompt and competitor suggestions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from service.application.base import ServiceBase
from service.domain.actor import Actor
from service.domain.collection import insight_reports, suggestions
from service.domain.collection.insight_reports import CitedUrl, PromptRow, SourcesReport
from service.domain.collection.reports import Granularity
from service.domain.collection.suggestions import Decision, Suggestion
from service.domain.paging import parse_page


class InsightsService(ServiceBase):
    """What a workspace's answers cite and mention, read per source, URL and prompt."""

    async def sources_report(
        self,
        workspace_id: str,
        *,
        start: datetime,
        end: datetime,
        order: Literal["citations", "answers"],
        limit: int,
    ) -> SourcesReport:
        """The sources cited in [start, end), per provider and overall, new and lost."""
        async with self.db.transaction(write=False) as session:
            return await insight_reports.sources_report(
                session, workspace_id, start=start, end=end, order=order, limit=limit
            )

    async def cited_urls(
        self,
        workspace_id: str,
        domain: str,
        *,
        start: datetime,
        end: datetime,
        page_size: int,
        page_token: str,
    ) -> tuple[list[CitedUrl], str]:
        """One page of the URLs of `domain` (checked, as the `domain` field) cited in
        [start, end), and the next page's token."""
        page = parse_page(
            page_size,
            page_token,
            scope=f"cited_urls|{workspace_id}|{domain}|{start.isoformat()}|{end.isoformat()}",
        )
        async with self.db.transaction(write=False) as session:
            return await insight_reports.cited_urls(
                session, workspace_id, domain, start=start, end=end, page=page
            )

    async def prompt_report(
        self,
        workspace_id: str,
        *,
        start: datetime,
        end: datetime,
        granularity: Granularity,
        time_zone: str,
        prompt_ids: Sequence[str],
        providers: Sequence[str],
        by_provider: bool,
    ) -> list[PromptRow]:
        """Visibility per prompt (and provider when `by_provider`) and period."""
        async with self.db.transaction(write=False) as session:
            return await insight_reports.prompt_report(
                session,
                workspace_id,
                start=start,
                end=end,
                granularity=granularity,
                time_zone=time_zone,
                prompt_ids=prompt_ids,
                providers=providers,
                by_provider=by_provider,
            )

    async def list_suggestions(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Suggestion], str]:
        """One page of the workspace's undecided competitor suggestions and the next token."""
        page = parse_page(page_size, page_token, scope=f"suggestions|{workspace_id}")
        async with self.db.transaction(write=False) as session:
            return await suggestions.list_suggestions(session, workspace_id, page)

    async def decide(
        self, actor: Actor, workspace_id: str, suggestion_id: str, decision: Decision
    ) -> Suggestion:
        """Records the owner's decision on a suggestion (accepted: it becomes a competitor)."""
        async with self.db.transaction() as session:
            return await suggestions.decide(
                session, actor, workspace_id, suggestion_id, decision, now=self.clock()
            )
