"""Runs: start, read, cancel and watch runs; their answers and visibility reports.

Each method opens the unit of work its call needs and returns plain views: no ORM row leaves
this module (answers become `ResponseView`s inside the transaction that read them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.application.base import ServiceBase
from service.db.models import Probe
from service.domain import read_views
from service.domain.actor import Access, Actor
from service.domain.collection import reports, runs
from service.domain.collection.reports import VisibilityRow
from service.domain.collection.runs import ResponseFilter, RunPage, RunView, StartOutcome
from service.domain.money.caps import SpendingCapReached
from service.domain.money.estimates import Pricing
from service.domain.notifications import spending_alerts
from service.domain.tenancy import workspace_access, workspace_views


@dataclass(frozen=True, slots=True)
class ResponseView:
    """A finished probe (an answer, a failure or a skip) as ListResponses shows it."""

    id: str
    run_id: str
    prompt_id: str
    prompt_text: str
    provider: str
    status: str
    model: str
    text: str
    citations: list[dict[str, Any]]
    brand_mentioned: bool
    brand_rank: int
    competitors: list[dict[str, Any]]
    latency_ms: int
    error: str
    attempts: int
    complete_time: datetime | None
    market: dict[str, str]
    market_applied: bool
    input_tokens: int
    output_tokens: int
    search_calls: int
    cost_micros: int

    @classmethod
    def of(cls, probe: Probe) -> ResponseView:
        return cls(
            id=probe.id,
            run_id=probe.run_id,
            prompt_id=probe.prompt_id,
            prompt_text=probe.prompt_text,
            provider=probe.provider,
            status=probe.status,
            model=probe.model,
            text=probe.text,
            citations=list(probe.citations or []),
            brand_mentioned=probe.brand_mentioned,
            brand_rank=probe.brand_rank,
            competitors=list(probe.competitors or []),
            latency_ms=probe.latency_ms,
            error=probe.error,
            attempts=probe.attempts,
            complete_time=probe.complete_time,
            market=dict(probe.market or {}),
            market_applied=probe.market_applied,
            input_tokens=probe.input_tokens,
            output_tokens=probe.output_tokens,
            search_calls=probe.search_calls,
            cost_micros=probe.cost_micros,
        )


@dataclass(frozen=True, slots=True)
class ResponsePage:
    """One page of answers, newest first."""

    responses: list[ResponseView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What StartRun asks for: prompts (default all) and providers (default all enabled)."""

    prompt_ids: Sequence[str] = ()
    providers: Sequence[str] = ()
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class ReportRange:
    """A visibility report's range, granularity and time zone, as the request gives them."""

    start: datetime | None
    end: datetime | None
    granularity: str
    time_zone: str = ""


class RunService(ServiceBase):
    """The run commands and reads of one workspace."""

    async def start(self, actor: Actor, access: Access, request: RunRequest) -> StartOutcome:
        """Starts a manual run in the workspace the access check resolved. The workspace is
        read once: the check's view (its enabled providers and organization) when it read
        one, else here, in the run's transaction."""
        workspace_id = _workspace_id(access)
        now = self.clock()
        try:
            async with self.db.transaction() as session:
                view = access.workspace
                if view is None:  # a service key's check resolves the organization only
                    view = await workspace_views.load_view(session, workspace_id)
                return await runs.start_run(
                    session,
                    actor,
                    workspace_id,
                    configured=self.settings.configured_providers(),
                    pricing=Pricing.from_settings(self.settings),
                    max_open=self.settings.max_open_runs_per_workspace,
                    prompt_ids=request.prompt_ids,
                    providers=request.providers,
                    request_id=request.request_id,
                    now=now,
                    enabled_providers=view.enabled_providers,
                    organization_id=view.organization_id,
                )
        except SpendingCapReached as refused:
            # The refusal rolled the run's transaction back: its alert (once per cap and
            # month) commits in a small transaction of its own before the error is raised.
            async with self.db.transaction() as session:
                await spending_alerts.run_refused(
                    session,
                    workspace_id,
                    refused,
                    trigger=spending_alerts.START_RUN,
                    run_id="",
                    now=now,
                )
            raise

    async def get(self, access: Access, run_id: str) -> RunView:
        """One run of the workspace with its progress (the hot read path)."""
        async with self.db.read() as reader:
            return await read_views.get_run(reader, _workspace_id(access), run_id)

    async def list_runs(self, access: Access, *, page_size: int, page_token: str) -> RunPage:
        """The workspace's runs, newest first."""
        async with self.db.transaction(write=False) as session:
            return await runs.list_runs(
                session, _workspace_id(access), page_size=page_size, page_token=page_token
            )

    async def cancel(self, actor: Actor, access: Access, run_id: str) -> RunView:
        """Requests the run's cancellation."""
        async with self.db.transaction() as session:
            return await runs.cancel_run(
                session, actor, _workspace_id(access), run_id, now=self.clock()
            )

    def watch(
        self,
        access: Access,
        run_id: str,
        *,
        user_id: str,
        check_caller: Callable[[], Awaitable[object]] | None = None,
    ) -> AsyncIterator[RunView]:
        """The run now and after each change until it ends; the watcher's access is checked
        again every `watch_access_check_seconds` (and `check_caller` before every poll)."""

        async def check_access(session: Any) -> object:
            return await workspace_access.authorize_view(
                session, user_id=user_id, resource_id=run_id
            )

        return runs.watch_run(
            self.db,
            _workspace_id(access),
            run_id,
            check_access=check_access,
            check_every=self.settings.watch_access_check_seconds,
            check_caller=check_caller,
        )

    async def list_responses(
        self, access: Access, filters: ResponseFilter, *, page_size: int, page_token: str
    ) -> ResponsePage:
        """The workspace's finished probes, newest first, filtered and paged."""
        async with self.db.transaction(write=False) as session:
            page = await runs.list_responses(
                session,
                _workspace_id(access),
                filters,
                page_size=page_size,
                page_token=page_token,
            )
            # Inside the transaction: its end expires the rows.
            return ResponsePage(
                responses=[ResponseView.of(probe) for probe in page.responses],
                next_page_token=page.next_page_token,
            )

    async def visibility_report(self, access: Access, span: ReportRange) -> list[VisibilityRow]:
        """The workspace's visibility rows per period and provider over the range."""
        start, end, granularity, time_zone = reports.validate_range(
            span.start, span.end, span.granularity, span.time_zone
        )
        async with self.db.transaction(write=False) as session:
            return await reports.visibility_report(
                session,
                _workspace_id(access),
                start=start,
                end=end,
                granularity=granularity,
                time_zone=time_zone,
            )


def _workspace_id(access: Access) -> str:
    """The workspace the access check resolved from the request's resource."""
    if access.workspace_id is None:
        raise RuntimeError("the auth rule did not resolve a workspace")
    return access.workspace_id
