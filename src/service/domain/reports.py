"""Visibility reports: how answers mention the brand, per provider and UTC day or ISO week.

Only answered probes count, placed in the period of their answer's time (`complete_time`).
Whole UTC days come from the daily rollups (`service.domain.rollups`, one row per day and
provider), so a report costs what its range holds in days, not in answers; the partial days at
the ends of a range that does not start or end at 00:00 UTC are counted from the answers in SQL
(one grouped query for the answers, one over the competitors each answer mentions). The ratios
are taken here, from the same integer sums either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import PROVIDERS
from service.db.models import Probe, Workspace
from service.domain import rollups
from service.domain.errors import InvalidArgument
from service.domain.run_status import ProbeStatus

Granularity = Literal["day", "week"]
MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class CompetitorShare:
    """Answers mentioning a competitor, and the brand's share of voice against it."""

    name: str
    mentions: int
    brand_share_of_voice: float


@dataclass(frozen=True, slots=True)
class VisibilityRow:
    """One provider in one period."""

    provider: str
    period_start: datetime
    responses: int
    mention_rate: float
    average_rank: float
    brand_citation_share: float
    competitors: list[CompetitorShare]


def validate_range(
    start: datetime | None, end: datetime | None, granularity: str
) -> tuple[datetime, datetime, Granularity]:
    """Checks the report's range and granularity; InvalidArgument naming the bad field."""
    if start is None:
        raise InvalidArgument("start_time", "is required")
    if end is None:
        raise InvalidArgument("end_time", "is required")
    if end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    if end - start > MAX_RANGE:
        raise InvalidArgument("end_time", f"must be at most {MAX_RANGE.days} days after start_time")
    if granularity == "day":
        return start, end, "day"
    if granularity == "week":
        return start, end, "week"
    raise InvalidArgument("granularity", "is required: DAY or WEEK")


def _period_start(dialect: str, column: Any, granularity: Granularity) -> ColumnElement[Any]:
    """SQL for the start of the UTC day or ISO week (Monday) containing `column`."""
    # Literals, not bound parameters: PostgreSQL must see the GROUP BY expression as the
    # selected one.
    if dialect == "postgresql":
        return func.date_trunc(
            literal_column(f"'{granularity}'"), func.timezone(literal_column("'UTC'"), column)
        )
    # SQLite stores UTC as text, 'YYYY-MM-DD HH:MM:SS.ffffff': the day is its first ten
    # characters (date() of the whole text rounds to milliseconds, so 23:59:59.9996 would be
    # the next day). 'weekday 0' moves to the next Sunday (or stays), -6 days is Monday.
    day = func.substr(column, 1, 10)
    if granularity == "week":
        return func.date(day, literal_column("'weekday 0'"), literal_column("'-6 days'"))
    return func.date(day)


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


@dataclass(slots=True)
class _Tally:
    """Sums over the answers of one (period, provider), in `rollups.SUMS` order."""

    sums: list[int] = field(default_factory=lambda: [0] * len(rollups.SUMS))
    competitors: dict[str, int] = field(default_factory=dict)

    def add(self, sums: Sequence[int], competitors: Mapping[str, int]) -> None:
        self.sums = [mine + int(value or 0) for mine, value in zip(self.sums, sums, strict=True)]
        for name, count in competitors.items():
            self.competitors[name] = self.competitors.get(name, 0) + count


Tallies = dict[tuple[datetime, str], _Tally]


async def visibility_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> list[VisibilityRow]:
    """Rows per (period, provider) with answers in [start, end), by period then provider.

    mention_rate = answers mentioning the brand / answers; average_rank = mean brand rank over
    answers that rank it; brand_citation_share = citations on the brand's domain / citations;
    per competitor, brand_share_of_voice = brand mentions / (brand mentions + its mentions).

    The whole UTC days of the range are read from the daily rollups; only the partial days at
    either end (when start or end is not at 00:00 UTC) are counted from the answers. The
    result equals `scanned_report`'s.
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = _midnight(start) if start == _midnight(start) else _midnight(start) + DAY
    last = _midnight(end)
    if first >= last:
        tallies = await _scan(session, workspace_id, start, end, granularity)
    else:
        tallies = await _from_rollups(session, workspace_id, first, last, granularity)
        for edge_start, edge_end in ((start, first), (last, end)):
            if edge_start < edge_end:
                scanned = await _scan(session, workspace_id, edge_start, edge_end, granularity)
                for key, tally in scanned.items():
                    tallies.setdefault(key, _Tally()).add(tally.sums, tally.competitors)
    return await _rows(session, workspace_id, tallies)


async def scanned_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> list[VisibilityRow]:
    """`visibility_report` counted from every answer of the range, without the rollups: the
    reference the rollups are checked against (tests, benchmark)."""
    tallies = await _scan(session, workspace_id, start, end, granularity)
    return await _rows(session, workspace_id, tallies)


DAY = timedelta(days=1)


def _midnight(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def _period_of(day: date, granularity: Granularity) -> datetime:
    if granularity == "week":
        day -= timedelta(days=day.weekday())
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _from_rollups(
    session: AsyncSession,
    workspace_id: str,
    first: datetime,
    last: datetime,
    granularity: Granularity,
) -> Tallies:
    """Tallies of the whole UTC days in [first, last), from the rollups."""
    tallies: Tallies = {}
    periods: dict[date, datetime] = {}
    for day, provider, sums, competitors in await rollups.read(
        session, workspace_id, first.date(), last.date()
    ):
        period = periods.get(day)
        if period is None:
            period = periods[day] = _period_of(day, granularity)
        tally = tallies.get((period, provider))
        if tally is None:  # the only row of its period (always, for days)
            tallies[(period, provider)] = _Tally(list(sums), competitors)
        else:
            tally.add(sums, competitors)
    return tallies


async def _scan(
    session: AsyncSession,
    workspace_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> Tallies:
    """Tallies counted from the answers in [start, end)."""
    dialect = session.get_bind().dialect.name
    period = _period_start(dialect, Probe.complete_time, granularity).label("period")
    answered = and_(
        Probe.workspace_id == workspace_id,
        Probe.status == ProbeStatus.SUCCEEDED,
        Probe.complete_time >= start,
        Probe.complete_time < end,
    )
    ranked = and_(Probe.brand_mentioned.is_(True), Probe.brand_rank > 0)
    totals = await session.execute(
        select(
            period,
            Probe.provider,
            func.count(),
            func.sum(case((Probe.brand_mentioned.is_(True), 1), else_=0)),
            func.sum(case((ranked, Probe.brand_rank), else_=0)),
            func.sum(case((ranked, 1), else_=0)),
            func.sum(Probe.brand_citations),
            func.sum(Probe.citation_count),
        )
        .where(answered)
        .group_by(period, Probe.provider)
    )
    mentions = await _competitor_mentions(session, dialect, period, answered)
    tallies: Tallies = {}
    for key, provider, *sums in totals:
        tallies[(_as_utc(key), provider)] = _Tally(
            [int(value or 0) for value in sums], mentions.get((str(key), provider), {})
        )
    return tallies


async def _rows(session: AsyncSession, workspace_id: str, tallies: Tallies) -> list[VisibilityRow]:
    configured = await _competitor_names(session, workspace_id)
    known = set(configured)
    rows: list[VisibilityRow] = []
    for (period_start, provider), tally in tallies.items():
        count, brand_mentions, rank_sum, ranked_count, brand_cites, cites = tally.sums
        by_name = tally.competitors
        extra = by_name.keys() - known
        names = configured + sorted(extra) if extra else configured
        rows.append(
            VisibilityRow(
                provider=provider,
                period_start=period_start,
                responses=count,
                mention_rate=_ratio(brand_mentions, count),
                average_rank=_ratio(rank_sum, ranked_count),
                brand_citation_share=_ratio(brand_cites, cites),
                competitors=[
                    CompetitorShare(
                        name,
                        by_name.get(name, 0),
                        _ratio(brand_mentions, brand_mentions + by_name.get(name, 0)),
                    )
                    for name in names
                ],
            )
        )
    order = {name: index for index, name in enumerate(PROVIDERS)}
    rows.sort(key=lambda r: (r.period_start, order.get(r.provider, len(order)), r.provider))
    return rows


async def _competitor_mentions(
    session: AsyncSession, dialect: str, period: Any, answered: ColumnElement[bool]
) -> dict[tuple[str, str], dict[str, int]]:
    """Answers mentioning each competitor, by (period key as text, provider); only non-empty
    string names count (as in `rollups.competitor_names`)."""
    if dialect == "postgresql":
        element = func.json_array_elements(Probe.competitors).table_valued("value").alias("c")
        name: Any = element.c.value.op("->>")(literal_column("'name'"))
        is_text = func.json_typeof(element.c.value.op("->")(literal_column("'name'"))) == "string"
    else:
        element = func.json_each(Probe.competitors).table_valued("value").alias("c")
        name = func.json_extract(element.c.value, literal_column("'$.name'"))
        is_text = func.json_type(element.c.value, literal_column("'$.name'")) == "text"
    result = await session.execute(
        select(period, Probe.provider, name.label("name"), func.count(func.distinct(Probe.id)))
        .select_from(Probe)
        .join(element, true())
        .where(answered, is_text)
        .group_by(period, Probe.provider, name)
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for key, provider, competitor, count in result:
        if competitor:
            counts.setdefault((str(key), provider), {})[str(competitor)] = int(count)
    return counts


async def _competitor_names(session: AsyncSession, workspace_id: str) -> list[str]:
    raw = await session.scalar(select(Workspace.competitors).where(Workspace.id == workspace_id))
    return [str(c.get("name", "")) for c in raw or [] if c.get("name")]
