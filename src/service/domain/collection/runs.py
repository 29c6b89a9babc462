"""Collection runs as the API sees them: StartRun (the outbox), progress, cancellation,
watching, answers. The rules of a run's life (its shape, the providers it asks, how it ends)
are `service.domain.collection.run_lifecycle`'s.

A run is written with status "queued" and `enqueue_time` NULL; the command that wrote it asks
the unit of work to hand it to the broker once the transaction has committed
(`service.db.database.send_runs_after_commit`), and the ticker sends any left behind. A worker
expands the run into probes, one per (prompt, provider), and ends it.

Statuses: `service.domain.collection.run_lifecycle`; triggers manual|schedule|schedule_set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.config import PROVIDERS
from service.db.database import Database, Reader, send_runs_after_commit
from service.db.models import Probe, Prompt, Run, Workspace
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.collection.prompts import MAX_PROMPTS, count_prompts
from service.domain.collection.run_lifecycle import (
    FINISHED_PROBE_STATUSES,
    ProbeStatus,
    RunStatus,
    cancel,
    free_lane,
    in_provider_order,
    providers_to_ask,
    queued_run,
)
from service.domain.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from service.domain.inputs import require_id
from service.domain.money import caps
from service.domain.money.estimates import Pricing
from service.domain.paging import parse_page

Trigger = Literal["manual", "schedule", "schedule_set"]
StartStatus = Literal["queued", "empty", "no_providers"]
PROVIDER_NAMES = ", ".join(p.upper() for p in PROVIDERS)
WATCH_POLL_SECONDS = 0.3
# Tries for a free open-run lane when concurrent starts keep taking the one found.
LANE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class ProviderProgress:
    """Probes of one provider in a run: total, succeeded (done), failed or skipped, and what
    its answers cost (micro-units of USD)."""

    provider: str
    total: int
    done: int
    failed: int
    cost_micros: int = 0


class RunRecord(Protocol):
    """The columns of a run a RunView is made of: an ORM `Run` or a Core row of them."""

    @property
    def id(self) -> str: ...
    @property
    def workspace_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def scheduled_time(self) -> datetime | None: ...
    @property
    def create_time(self) -> datetime: ...
    @property
    def start_time(self) -> datetime | None: ...
    @property
    def end_time(self) -> datetime | None: ...
    @property
    def prompt_count(self) -> int: ...
    @property
    def prompt_ids(self) -> list[str]: ...
    @property
    def providers(self) -> list[str]: ...
    @property
    def failure_reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RunView:
    """A snapshot of a run with the providers it asks and their progress."""

    id: str
    workspace_id: str
    status: str
    trigger: str
    scheduled_time: datetime | None
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    prompt_count: int
    providers: list[str]
    progress: list[ProviderProgress]
    # Why it ended FAILED or PARTIAL, when it says (a spending cap, say).
    end_reason: str = ""

    @property
    def cost_micros(self) -> int:
        """What its answers so far cost."""
        return sum(p.cost_micros for p in self.progress)

    @classmethod
    def of(cls, run: RunRecord, providers: list[str], progress: list[ProviderProgress]) -> RunView:
        return cls(
            id=run.id,
            workspace_id=run.workspace_id,
            status=run.status,
            trigger=run.trigger,
            scheduled_time=run.scheduled_time,
            create_time=run.create_time,
            start_time=run.start_time,
            end_time=run.end_time,
            prompt_count=run.prompt_count,
            providers=providers,
            progress=progress,
            end_reason=run.failure_reason,
        )

    @property
    def fingerprint(self) -> tuple[object, ...]:
        """Changes whenever anything a watcher sees changes."""
        return (self.status, self.start_time, self.end_time, tuple(self.progress))


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """What StartRun did: queued a run, or nothing (no prompts, providers lacking keys)."""

    status: StartStatus
    run: RunView | None = None
    providers_without_credentials: tuple[str, ...] = ()


def validate_providers(names: Sequence[str]) -> list[str]:
    """Lowercase provider names, validated (InvalidArgument naming `providers[i]`), deduplicated."""
    result: list[str] = []
    for index, name in enumerate(names):
        if name not in PROVIDERS:
            raise InvalidArgument(f"providers[{index}]", f"must name a provider ({PROVIDER_NAMES})")
        if name not in result:
            result.append(name)
    return result


class RunAlreadyOpen(FailedPrecondition):
    """The workspace holds its maximum of open (queued or running) runs: a new one starts
    once one of them ends (or is canceled)."""

    def __init__(self, open_run_ids: Sequence[str], limit: int) -> None:
        shown = ", ".join(open_run_ids)
        super().__init__(
            f"the workspace already has {limit} open run{'s' if limit > 1 else ''} ({shown}),"
            " the most allowed (BEACON_MAX_OPEN_RUNS_PER_WORKSPACE): watch or cancel it, or"
            " start again once it has ended",
            [
                PreconditionViolation("RUN_ALREADY_OPEN", run_id, "this run has not ended yet")
                for run_id in open_run_ids
            ],
            reason="RUN_ALREADY_OPEN",
            metadata={"run_id": open_run_ids[0] if open_run_ids else "", "limit": str(limit)},
        )
        self.open_run_ids = list(open_run_ids)


async def _open_lanes(session: AsyncSession, workspace_id: str) -> dict[int, str]:
    """The lanes the workspace's open runs hold, with their runs' ids."""
    rows = await session.execute(
        select(Run.open_lane, Run.id)
        .where(Run.workspace_id == workspace_id, Run.end_time.is_(None), Run.open_lane.is_not(None))
        .order_by(Run.open_lane)
    )
    return {lane: run_id for lane, run_id in rows if lane is not None}


async def create_run(
    session: AsyncSession,
    *,
    workspace_id: str,
    trigger: Trigger,
    max_open: int,
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    scheduled_time: datetime | None = None,
    now: datetime,
    prompt_count: int | None = None,
) -> Run:
    """Writes a queued run into the outbox (enqueue_time NULL); does not create probes.

    Empty `prompt_ids` / `providers` mean every prompt / every enabled provider when the run
    is expanded. `prompt_count` defaults to len(prompt_ids), or the workspace's prompt count.

    The run takes a free open-run lane of the workspace (0..max_open-1); RunAlreadyOpen when
    there is none. The unique index on open lanes settles a race with a concurrent start
    (or the ticker): the loser looks again and finds the lane taken.
    """
    if prompt_count is None:
        prompt_count = len(prompt_ids) if prompt_ids else await count_prompts(session, workspace_id)
    for _ in range(LANE_ATTEMPTS):
        open_lanes = await _open_lanes(session, workspace_id)
        lane = free_lane(open_lanes, max_open)
        if lane is None:
            raise RunAlreadyOpen(list(open_lanes.values()), max_open)
        run = Run(
            **queued_run(
                run_id=new_id("run"),
                workspace_id=workspace_id,
                trigger=trigger,
                open_lane=lane,
                now=now,
                scheduled_time=scheduled_time,
                prompt_ids=prompt_ids,
                providers=providers,
                prompt_count=prompt_count,
            )
        )
        try:
            async with session.begin_nested():
                session.add(run)
        except IntegrityError:
            continue  # a concurrent start took the lane: look again
        return run
    raise Aborted("too many concurrent starts in this workspace; retry", reason="CONCURRENT_START")


async def start_run(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    configured: Collection[str],
    max_open: int,
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    request_id: str = "",
    now: datetime,
    enabled_providers: Sequence[str] | None = None,
    organization_id: str | None = None,
    pricing: Pricing | None = None,
) -> StartOutcome:
    """Starts a manual run over the given prompts (default all) and providers (default all
    enabled); see `queue_run`. The run is sent to the workers once the transaction commits.
    RunAlreadyOpen (FAILED_PRECONDITION) while the workspace has `max_open` runs open.

    A caller that has read the workspace passes its `enabled_providers` and
    `organization_id`, so the workspace is not read again (else both are read here).

    A retry with the same `request_id` returns the first outcome and starts nothing; it asks
    again to send the run, which sends it only if the first call's send failed.
    """

    async def start() -> StartOutcome:
        outcome = await queue_run(
            session,
            workspace_id=workspace_id,
            trigger="manual",
            configured=configured,
            max_open=max_open,
            now=now,
            prompt_ids=prompt_ids,
            providers=providers,
            enabled_providers=enabled_providers,
            pricing=pricing,
        )
        if outcome.run is None:
            return outcome
        if organization_id is None:
            await audit.record_workspace_change(
                session, actor, workspace_id, target_ids=[outcome.run.id], now=now
            )
        else:
            audit.record(
                session,
                actor,
                organization_id=organization_id,
                workspace_id=workspace_id,
                target_ids=[outcome.run.id],
                now=now,
            )
        return outcome

    outcome = await idempotency.once(
        session,
        actor,
        request_id,
        scope=workspace_id,
        result_type=StartOutcome,
        now=now,
        run=start,
    )
    if outcome.run is not None:
        send_runs_after_commit(session, [outcome.run.id])
    return outcome


async def queue_run(
    session: AsyncSession,
    *,
    workspace_id: str,
    trigger: Trigger,
    configured: Collection[str],
    max_open: int,
    now: datetime,
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    enabled_providers: Sequence[str] | None = None,
    pricing: Pricing | None = None,
) -> StartOutcome:
    """Writes a run over the given prompts (default all) and providers (default all enabled)
    into the outbox, for a command that records and sends it (`start_run`, SetSchedule).
    `enabled_providers` is the workspace's list when the caller has read it (else read here).

    Explicit providers must be enabled and every one must have credentials (`configured`);
    by default the enabled providers with credentials are asked, NO_PROVIDERS when there are
    none. EMPTY when there is no prompt to ask. Raises InvalidArgument (`prompt_ids[i]`,
    `providers[i]`), NotFound (a prompt id that is not the workspace's) and RunAlreadyOpen
    (the workspace has `max_open` runs open; nothing is written) and SpendingCapReached (the
    run would take the month's cost past a cap, priced with `pricing`: `caps.check_run`).
    """
    chosen_prompts = await _validate_prompt_ids(session, workspace_id, prompt_ids)
    requested = validate_providers(providers)
    enabled = (
        await _enabled_providers(session, workspace_id)
        if enabled_providers is None
        else in_provider_order(enabled_providers)
    )
    for index, name in enumerate(providers):
        if name not in enabled:
            raise InvalidArgument(
                f"providers[{index}]",
                f"{name.upper()} is not enabled in this workspace (see SetEnabledProviders)",
            )
    count = len(chosen_prompts) if chosen_prompts else await count_prompts(session, workspace_id)
    if count == 0:
        return StartOutcome("empty")
    asked = providers_to_ask(requested, enabled, configured)
    if requested:
        missing = [p for p in requested if p not in configured]
    else:
        missing = [] if asked else enabled
    if missing or not asked:
        return StartOutcome("no_providers", providers_without_credentials=tuple(missing))
    await caps.check_run(session, workspace_id, asked, count, pricing or Pricing.default(), now)
    run = await create_run(
        session,
        workspace_id=workspace_id,
        trigger=trigger,
        max_open=max_open,
        prompt_ids=chosen_prompts,
        providers=asked,
        now=now,
        prompt_count=count,
    )
    return StartOutcome("queued", run=await _view(session, run))


async def _validate_prompt_ids(
    session: AsyncSession, workspace_id: str, prompt_ids: Sequence[str]
) -> list[str]:
    if len(prompt_ids) > MAX_PROMPTS:
        raise InvalidArgument("prompt_ids", f"at most {MAX_PROMPTS} prompt ids")
    unique: list[str] = []
    for index, prompt_id in enumerate(prompt_ids):
        require_id(f"prompt_ids[{index}]", prompt_id, prefix="prm_")
        if prompt_id not in unique:
            unique.append(prompt_id)
    if unique:
        found = set(
            await session.scalars(
                select(Prompt.id).where(Prompt.workspace_id == workspace_id, Prompt.id.in_(unique))
            )
        )
        for prompt_id in unique:
            if prompt_id not in found:
                raise NotFound("prompt", prompt_id)
    return unique


async def _enabled_providers(session: Reader, workspace_id: str) -> list[str]:
    enabled = await session.scalar(
        select(Workspace.enabled_providers).where(Workspace.id == workspace_id)
    )
    return in_provider_order(enabled or [])


# Built once (read on every GetRun, ListRuns and WatchRun poll): building it cost more than
# running it.
_PROGRESS = (
    select(
        Probe.run_id,
        Probe.provider,
        func.count(),
        func.sum(case((Probe.status == ProbeStatus.SUCCEEDED, 1), else_=0)),
        func.sum(case((Probe.status.in_((ProbeStatus.FAILED, ProbeStatus.SKIPPED)), 1), else_=0)),
        func.sum(Probe.cost_micros),
    )
    .where(Probe.run_id.in_(bindparam("run_ids", expanding=True)))
    .group_by(Probe.run_id, Probe.provider)
)


async def _progress(session: Reader, run_ids: Sequence[str]) -> dict[str, list[ProviderProgress]]:
    """Per-provider probe counts of each run that has probes."""
    if not run_ids:
        return {}
    counts: dict[str, dict[str, ProviderProgress]] = {}
    rows = await session.execute(_PROGRESS, {"run_ids": list(run_ids)})
    for run_id, provider, total, done, failed, cost in rows:
        counts.setdefault(run_id, {})[provider] = ProviderProgress(
            provider, int(total), int(done or 0), int(failed or 0), int(cost or 0)
        )
    return {
        run_id: [by_provider[p] for p in in_provider_order(by_provider)]
        + [by_provider[p] for p in sorted(set(by_provider) - set(PROVIDERS))]
        for run_id, by_provider in counts.items()
    }


async def run_views(session: Reader, runs: Sequence[RunRecord]) -> list[RunView]:
    """The views of `runs` with their progress (one query, plus at most one per workspace
    for runs not expanded yet)."""
    progress = await _progress(session, [run.id for run in runs])
    enabled: dict[str, list[str]] = {}
    prompt_counts: dict[str, int] = {}
    views = []
    for run in runs:
        if run.id in progress:
            views.append(RunView.of(run, [p.provider for p in progress[run.id]], progress[run.id]))
            continue
        # Not expanded yet: every provider will ask every prompt. A run written without its
        # subsets (the ticker's) asks the workspace's current prompts and enabled providers.
        workspace_id = run.workspace_id
        providers = in_provider_order(run.providers)
        if not providers:
            if workspace_id not in enabled:
                enabled[workspace_id] = await _enabled_providers(session, workspace_id)
            providers = enabled[workspace_id]
        count = run.prompt_count or len(run.prompt_ids)
        if not count and run.status == RunStatus.QUEUED:
            if workspace_id not in prompt_counts:
                prompt_counts[workspace_id] = await count_prompts(session, workspace_id)
            count = prompt_counts[workspace_id]
        planned = [ProviderProgress(p, count, 0, 0) for p in providers]
        views.append(replace(RunView.of(run, providers, planned), prompt_count=count))
    return views


async def _view(session: AsyncSession, run: Run) -> RunView:
    return (await run_views(session, [run]))[0]


async def _load_run(
    session: AsyncSession, workspace_id: str, run_id: str, *, lock: bool = False
) -> Run:
    stmt = select(Run).where(Run.id == run_id, Run.workspace_id == workspace_id)
    if lock:
        stmt = stmt.with_for_update()
    run = await session.scalar(stmt.execution_options(populate_existing=True))
    if run is None:
        raise NotFound("run", run_id)
    return run


async def get_run(session: AsyncSession, workspace_id: str, run_id: str) -> RunView:
    """One run of the workspace with its progress; NotFound otherwise."""
    return await _view(session, await _load_run(session, workspace_id, run_id))


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs, newest first."""

    runs: list[RunView]
    next_page_token: str


async def list_runs(
    session: AsyncSession, workspace_id: str, *, page_size: int, page_token: str
) -> RunPage:
    """The workspace's runs, newest first, paged (1-100 per page, default 50)."""
    page = parse_page(page_size, page_token, scope=f"runs:{workspace_id}")
    rows = list(
        await session.scalars(
            select(Run)
            .where(
                Run.workspace_id == workspace_id,
                page.where(Run.create_time, Run.id, descending=True),
            )
            .order_by(Run.create_time.desc(), Run.id.desc())
            .limit(page.size + 1)
        )
    )
    return RunPage(await run_views(session, rows[: page.size]), page.next_token(rows))


async def cancel_run(
    session: AsyncSession, actor: Actor, workspace_id: str, run_id: str, *, now: datetime
) -> RunView:
    """Requests cancellation: pending probes are skipped and the run ends CANCELED at once
    when it has no probes yet or had pending ones (workers skip probes of canceled runs).

    Raises FailedPrecondition (RUN_ENDED) when the run has already ended.
    """
    run = await _load_run(session, workspace_id, run_id, lock=True)
    if run.end_time is not None:
        raise FailedPrecondition(
            f"run {run_id} has already ended ({run.status})",
            [PreconditionViolation("RUN_ENDED", run_id, f"the run ended with status {run.status}")],
        )
    await session.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))
    await cancel(session, run_id, now)
    await audit.record_workspace_change(session, actor, workspace_id, target_ids=[run_id], now=now)
    return await _view(session, await _load_run(session, workspace_id, run_id))


async def watch_run(
    db: Database,
    workspace_id: str,
    run_id: str,
    *,
    check_access: Callable[[AsyncSession], Awaitable[object]],
    check_every: float,
    check_caller: Callable[[], Awaitable[object]] | None = None,
    poll_seconds: float = WATCH_POLL_SECONDS,
) -> AsyncIterator[RunView]:
    """The run at once, then again whenever its status or progress changes; ends after the
    run has ended. Polls the database (works across server replicas without a bus).

    Every `check_every` seconds `check_access` re-checks that the watcher may still see the
    run, in the poll's transaction; it raises (NotFound) to end the stream once they may not.
    Before every poll `check_caller` (when given) may raise to end the stream: the API's
    re-check of the caller's credentials and of the stream's lifetime.
    """
    seen: tuple[object, ...] | None = None
    checked = time.monotonic()
    while True:
        if check_caller is not None:
            await check_caller()
        async with db.transaction(write=False) as session:
            if time.monotonic() - checked >= check_every:
                await check_access(session)
                checked = time.monotonic()
            view = await get_run(session, workspace_id, run_id)
        if view.fingerprint != seen:
            seen = view.fingerprint
            yield view
        if view.end_time is not None:
            return
        await asyncio.sleep(poll_seconds)


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """Optional filters of ListResponses (empty: any)."""

    run_id: str = ""
    provider: str = ""
    prompt_id: str = ""


@dataclass(frozen=True, slots=True)
class ResponsePage:
    """One page of finished probes, newest answer first."""

    responses: list[Probe]
    next_page_token: str


async def list_responses(
    session: AsyncSession,
    workspace_id: str,
    filters: ResponseFilter,
    *,
    page_size: int,
    page_token: str,
) -> ResponsePage:
    """The workspace's answered and failed probes, newest first, filtered and paged.

    NotFound when `run_id` names no run of the workspace; InvalidArgument for a bad provider.
    """
    conditions = [
        Probe.workspace_id == workspace_id,
        Probe.status.in_(FINISHED_PROBE_STATUSES),
        Probe.complete_time.is_not(None),
    ]
    if filters.provider:
        if filters.provider not in PROVIDERS:
            raise InvalidArgument("provider", f"must name a provider ({PROVIDER_NAMES})")
        conditions.append(Probe.provider == filters.provider)
    if filters.run_id:
        require_id("run_id", filters.run_id)
        await _load_run(session, workspace_id, filters.run_id)
        conditions.append(Probe.run_id == filters.run_id)
    if filters.prompt_id:
        require_id("prompt_id", filters.prompt_id)
        conditions.append(Probe.prompt_id == filters.prompt_id)
    scope = f"responses:{workspace_id}:{filters.run_id}:{filters.provider}:{filters.prompt_id}"
    page = parse_page(page_size, page_token, scope=scope)
    rows = list(
        await session.scalars(
            select(Probe)
            .where(*conditions, page.where(Probe.complete_time, Probe.id, descending=True))
            .order_by(Probe.complete_time.desc(), Probe.id.desc())
            .limit(page.size + 1)
        )
    )
    return ResponsePage(rows[: page.size], page.next_token(rows, time_attr="complete_time"))
