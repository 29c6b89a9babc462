"""Monthly spending caps of organizations and workspaces, and the billing view.

An organization's owner or admin sets a cap for the organization (over all its workspaces)
and optionally per workspace, in micro-units of USD per calendar month (UTC). Before a run is
written (StartRun, SetSchedule's run) or expanded (a scheduled run), this month's cost so far
(the usage rollups) plus the run's estimate must fit under every cap that applies; otherwise
StartRun is refused with SPENDING_CAP_REACHED and the figures, and a scheduled run ends
FAILED with the reason. While a run is under way the workers hold each call to the caps
through counters in Redis (`workers.spending`): the database check here stops runs that would
not fit, the counters stop the calls that no longer fit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import PROVIDERS
from service.db.database import Reader
from service.db.models import Organization, Prompt, Schedule, UsageRollup, Workspace
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from service.domain.money import ledger
from service.domain.money.estimates import Estimate, Pricing, estimate_run, runs_per_month
from service.domain.paging import encode_token, parse_page

MAX_USAGE_MONTHS = 24
DEFAULT_USAGE_MONTHS = 3
REASON = "SPENDING_CAP_REACHED"


def dollars(micros: int) -> str:
    """Micro-units as dollars with cents, for messages ("$12.34")."""
    cents = -(-micros // 10_000)
    return f"${cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True, slots=True)
class Caps:
    """The caps that apply to a workspace (None: no cap), and its organization."""

    organization_id: str
    workspace_cap: int | None
    organization_cap: int | None

    @property
    def any(self) -> bool:
        return self.workspace_cap is not None or self.organization_cap is not None


class SpendingCapReached(FailedPrecondition):
    """A run would take the month's cost past a cap."""

    def __init__(self, scope: str, scope_id: str, spent: int, estimate: int, cap: int) -> None:
        message = (
            f"spending cap reached: the {scope}'s cost this month is {dollars(spent)}, this run"
            f" is estimated at {dollars(estimate)}, and its monthly cap is {dollars(cap)}"
        )
        self.scope, self.scope_id = scope, scope_id
        self.spent, self.estimate, self.cap = spent, estimate, cap
        super().__init__(
            message,
            [PreconditionViolation(REASON, scope_id, message)],
            reason=REASON,
            metadata={
                "scope": scope,
                "month_to_date_micros": str(spent),
                "estimate_micros": str(estimate),
                "cap_micros": str(cap),
            },
        )


async def caps_of(reader: Reader, workspace_id: str) -> Caps:
    """The caps applying to the workspace (NotFound when there is no such workspace)."""
    row = (
        await reader.execute(
            select(
                Workspace.organization_id,
                Workspace.monthly_cap_micros,
                Organization.monthly_cap_micros,
            )
            .join(Organization, Organization.id == Workspace.organization_id)
            .where(Workspace.id == workspace_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("workspace", workspace_id)
    return Caps(row[0], row[1], row[2])


async def check_run(
    reader: Reader,
    workspace_id: str,
    providers: Sequence[str],
    prompt_count: int,
    pricing: Pricing,
    now: datetime,
) -> None:
    """SpendingCapReached unless this month's cost so far plus the run's estimate fits under
    the workspace's and its organization's caps."""
    caps = await caps_of(reader, workspace_id)
    if not caps.any:
        return
    estimate = (
        await estimate_run(reader, workspace_id, providers, prompt_count, pricing, now)
    ).run_cost_micros
    for scope, scope_id, cap in (
        ("workspace", workspace_id, caps.workspace_cap),
        ("organization", caps.organization_id, caps.organization_cap),
    ):
        if cap is None:
            continue
        spent = await ledger.scope_month_to_date(reader, scope, scope_id, now)
        if spent + estimate > cap:
            raise SpendingCapReached(scope, scope_id, spent, estimate, cap)


async def scheduled_run_refusal(
    reader: Reader,
    workspace_id: str,
    providers: Sequence[str],
    prompt_count: int,
    pricing: Pricing,
    now: datetime,
) -> SpendingCapReached | None:
    """Why a scheduled run is skipped (None when it fits under the caps): `check_run`'s
    refusal; `skip_reason` words it for the run's failure reason."""
    try:
        await check_run(reader, workspace_id, providers, prompt_count, pricing, now)
    except SpendingCapReached as refused:
        return refused
    return None


STOP_PREFIX = "spending cap reached: the "


def stop_reason(scope: str, spent: int, cap: int) -> str:
    """Why the workers stopped a run's calls (its failure reason once it ends)."""
    return (
        f"{STOP_PREFIX}{scope}'s cost this month is {dollars(spent)} of its"
        f" {dollars(cap)} monthly cap"
    )


def stopped_scope(reason: str) -> str | None:
    """The cap's scope ("organization", "workspace") of a `stop_reason`, else None."""
    if not reason.startswith(STOP_PREFIX):
        return None
    scope = reason[len(STOP_PREFIX) :].split("'", 1)[0]
    return scope if scope in ("organization", "workspace") else None


def skip_reason(refused: SpendingCapReached) -> str:
    """A skipped scheduled run's failure reason."""
    return f"skipped: {refused.message}"


async def estimate_workspace(
    reader: Reader,
    workspace_id: str,
    *,
    configured: Collection[str],
    pricing: Pricing,
    now: datetime,
) -> Estimate:
    """What a run of the workspace (its prompts on its enabled providers that have
    credentials) costs, a month of its schedule, and this month's cost so far."""
    enabled = await reader.scalar(
        select(Workspace.enabled_providers).where(Workspace.id == workspace_id)
    )
    asked = [
        provider for provider in PROVIDERS if provider in (enabled or []) and provider in configured
    ]
    prompt_count = await reader.scalar(
        select(func.count()).select_from(Prompt).where(Prompt.workspace_id == workspace_id)
    )
    run = await estimate_run(reader, workspace_id, asked, int(prompt_count or 0), pricing, now)
    schedule = await reader.execute(
        select(Schedule.cron, Schedule.time_zone).where(Schedule.workspace_id == workspace_id)
    )
    found = schedule.one_or_none()
    per_month = runs_per_month(found[0], found[1], now) if found is not None else 0
    spent = await ledger.month_to_date(reader, [workspace_id], now)
    return Estimate(run.providers, per_month, spent)


@dataclass(frozen=True, slots=True)
class WorkspaceSpending:
    workspace_id: str
    monthly_cap_micros: int
    month_to_date_micros: int


@dataclass(frozen=True, slots=True)
class Spending:
    """An organization's caps (0: none) and this month's cost so far."""

    organization_id: str
    monthly_cap_micros: int
    month_to_date_micros: int
    workspaces: list[WorkspaceSpending]


async def spending(reader: Reader, organization_id: str, now: datetime) -> Spending:
    """The organization's caps and month-to-date cost, in all and per live workspace."""
    cap = await reader.scalar(
        select(Organization.monthly_cap_micros).where(Organization.id == organization_id)
    )
    every = await ledger.organization_workspaces(reader, organization_id)
    rows = (
        await reader.execute(
            select(Workspace.id, Workspace.monthly_cap_micros)
            .where(Workspace.organization_id == organization_id, Workspace.delete_time.is_(None))
            .order_by(Workspace.id)
        )
    ).all()
    spent = await ledger.month_to_date_by_workspace(reader, every, now)
    return Spending(
        organization_id,
        cap or 0,
        sum(spent.values()),
        [WorkspaceSpending(ws, ws_cap or 0, spent.get(ws, 0)) for ws, ws_cap in rows],
    )


async def set_spending_cap(
    session: AsyncSession,
    call: Actor,
    organization_id: str,
    workspace_id: str,
    cap_micros: int,
    *,
    now: datetime,
) -> Spending:
    """Sets (0: removes) the organization's cap, or one of its workspaces' caps."""
    if cap_micros < 0:
        raise InvalidArgument("monthly_cap_micros", "must be 0 (no cap) or a positive amount")
    value = cap_micros or None
    if workspace_id:
        workspace = await session.scalar(
            select(Workspace)
            .where(
                Workspace.id == workspace_id,
                Workspace.organization_id == organization_id,
                Workspace.delete_time.is_(None),
            )
            .with_for_update()
        )
        if workspace is None:
            raise NotFound("workspace", workspace_id)
        workspace.monthly_cap_micros = value
        audit.record_workspace(session, call, workspace, now, target_ids=[workspace_id])
    else:
        organization = await session.get(Organization, organization_id, with_for_update=True)
        if organization is None:
            raise NotFound("organization", organization_id)
        organization.monthly_cap_micros = value
        audit.record(
            session,
            call,
            organization_id=organization_id,
            target_ids=[organization_id],
            now=now,
        )
    await session.flush()
    return await spending(session, organization_id, now)


@dataclass(frozen=True, slots=True)
class UsageRow:
    month: str
    workspace_id: str
    provider: str
    answers: int
    input_tokens: int
    output_tokens: int
    search_calls: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class UsagePage:
    rows: list[UsageRow]
    next_page_token: str


async def list_usage(
    reader: Reader,
    organization_id: str,
    months: int,
    now: datetime,
    *,
    page_size: int = 0,
    page_token: str = "",
) -> UsagePage:
    """Usage per month, workspace and provider of the organization's live workspaces over
    the last `months` months (1-24, 0: 3), newest month first, paged (1-500, default 100)."""
    if months < 0 or months > MAX_USAGE_MONTHS:
        raise InvalidArgument("months", f"must be between 1 and {MAX_USAGE_MONTHS}")
    page = parse_page(
        page_size,
        page_token,
        scope=f"usage:{organization_id}:{months}",
        default=100,
        maximum=500,
    )
    since = ledger.months_back(now, months or DEFAULT_USAGE_MONTHS)
    key = UsageRollup.workspace_id + "|" + UsageRollup.provider
    query = (
        select(UsageRollup)
        .join(Workspace, Workspace.id == UsageRollup.workspace_id)
        .where(
            Workspace.organization_id == organization_id,
            Workspace.delete_time.is_(None),
            UsageRollup.month >= since,
        )
    )
    if page.after is not None:
        month, after = page.after[0].date(), page.after[1]
        query = query.where(
            or_(UsageRollup.month < month, and_(UsageRollup.month == month, key < after))
        )
    rows = list(
        (
            await reader.execute(
                query.order_by(UsageRollup.month.desc(), key.desc()).limit(page.size + 1)
            )
        ).scalars()
    )
    token = ""
    if len(rows) > page.size:
        last = rows[page.size - 1]
        cursor = datetime(last.month.year, last.month.month, 1, tzinfo=UTC)
        token = encode_token(page.key, page.scope, cursor, f"{last.workspace_id}|{last.provider}")
    return UsagePage(
        [
            UsageRow(
                f"{row.month.year:04d}-{row.month.month:02d}",
                row.workspace_id,
                row.provider,
                row.answers,
                row.input_tokens,
                row.output_tokens,
                row.search_calls,
                row.cost_micros,
            )
            for row in rows[: page.size]
        ],
        token,
    )
