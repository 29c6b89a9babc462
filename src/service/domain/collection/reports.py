"""Visibility reports: how answers mention the brand, per provider and day or ISO week of a
time zone.

Only answered probes count, placed in the period of their answer's time (`complete_time`) in
the report's time zone; a period starts at local midnight (Monday's, for weeks). The report is
planned here as signed ranges (`rollups.Plan`): each period takes the daily rollups of the UTC
days from the one holding its start to the one holding its end, less the part of the first
UTC day before its start, plus the part of the last one before its end. That part of a day
is read from the hourly rollups for whole hours, from the quarter-hour rollups for the whole
quarter-hours past the last whole hour (offsets such as +05:30, +05:45) and from the answers
only for the minutes past the last quarter-hour (at range ends off the quarter-hour); when
it is longer than half a day, the complement (the rest of the day) is read instead. In UTC
every period is whole daily rollups. The database sums everything (`rollups.read_periods`),
so a report costs what its range holds in days, not in answers; the ratios are taken here,
from the same integer sums as counting every answer.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import PROVIDERS
from service.db.models import Workspace
from service.domain.collection import rollups
from service.domain.collection.schedules import parse_time_zone
from service.domain.errors import InvalidArgument

Granularity = Literal["day", "week"]
MAX_RANGE = timedelta(days=366)
# Reports cover answers Beacon can hold; far from datetime's limits (local midnights and
# week starts of a range near year 1 or 9999 would overflow).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
QUARTER_HOUR = timedelta(minutes=15)


class CompetitorShare(NamedTuple):
    """Answers mentioning a competitor, and the brand's share of voice against it."""

    name: str
    mentions: int
    brand_share_of_voice: float


class VisibilityRow(NamedTuple):
    """One provider in one period (a NamedTuple: a year holds thousands of them)."""

    provider: str
    period_start: datetime
    responses: int
    mention_rate: float
    average_rank: float
    brand_citation_share: float
    competitors: list[CompetitorShare]


def validate_range(
    start: datetime | None, end: datetime | None, granularity: str, time_zone: str = ""
) -> tuple[datetime, datetime, Granularity, str]:
    """Checks the report's range, granularity and time zone (empty: UTC); InvalidArgument
    naming the bad field. Returns the zone's canonical IANA name."""
    if start is None:
        raise InvalidArgument("start_time", "is required")
    if end is None:
        raise InvalidArgument("end_time", "is required")
    if start < EARLIEST:
        raise InvalidArgument("start_time", f"must be at or after {EARLIEST:%Y-%m-%dT%H:%M:%SZ}")
    if end > LATEST:
        raise InvalidArgument("end_time", f"must be at or before {LATEST:%Y-%m-%dT%H:%M:%SZ}")
    if end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    if end - start > MAX_RANGE:
        raise InvalidArgument("end_time", f"must be at most {MAX_RANGE.days} days after start_time")
    zone = parse_time_zone(time_zone)
    if granularity == "day":
        return start, end, "day", zone
    if granularity == "week":
        return start, end, "week", zone
    raise InvalidArgument("granularity", "is required: DAY or WEEK")


async def visibility_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    time_zone: str = "UTC",
) -> list[VisibilityRow]:
    """Rows per (period, provider) with answers in [start, end), by period then provider;
    periods are days or ISO weeks of `time_zone` (an IANA name), labelled by their start.

    mention_rate = answers mentioning the brand / answers; average_rank = mean brand rank over
    answers that rank it; brand_citation_share = citations on the brand's domain / citations;
    per competitor, brand_share_of_voice = brand mentions / (brand mentions + its mentions).

    Read from the rollups (see the module); the result equals the tests' report oracle's
    (`tests/support/report_oracle.py`, every answer counted in one scan).
    """
    bounds, labels = periods(start, end, granularity, ZoneInfo(time_zone))
    found = await rollups.read_periods(session, workspace_id, plan(bounds))
    return await _rows(session, workspace_id, labels, found)


def local_midnight(day: date, zone: tzinfo) -> datetime:
    """The first instant of `day` in `zone`, in UTC (where clocks skip midnight, the
    instant they skip it at; where midnight happens twice, the first time)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def period_of(moment: datetime, granularity: Granularity, zone: tzinfo) -> datetime:
    """The start (UTC) of the day or ISO week of `zone` holding `moment`."""
    day = moment.astimezone(zone).date()
    if granularity == "week":
        day -= timedelta(days=day.weekday())
    return local_midnight(day, zone)


def periods(
    start: datetime, end: datetime, granularity: Granularity, zone: tzinfo
) -> tuple[list[datetime], list[datetime]]:
    """The report's boundaries (start, every period start inside the range, end) and each
    period's label (the start of the local day or week holding its first instant)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    step = timedelta(days=7 if granularity == "week" else 1)
    label = period_of(start, granularity, zone)
    day = label.astimezone(zone).date()
    bounds, labels = [start], [label]
    while True:
        day += step
        following = local_midnight(day, zone)
        if following >= end:
            break
        bounds.append(following)
        labels.append(following)
    bounds.append(end)
    return bounds, labels


def _midnight(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def plan(bounds: list[datetime]) -> rollups.Plan:
    """Signed ranges whose sums give each period [bounds[i], bounds[i + 1]).

    Period i = days [m(b_i), m(b_i+1)) - H(b_i) + H(b_i+1), where m(b) is the UTC midnight
    at or before b and H(b) the answers in [m(b), b): read as hours [m(b), b's hour),
    quarter-hours [b's hour, b's quarter-hour) and answers [b's quarter-hour, b), or, past
    midday, as the day m(b) less hours [b's next hour, m(b) + 1 day), less quarter-hours
    [b's next quarter-hour, b's next hour) and less answers [b, b's next quarter-hour).
    Answers are read only at bounds off the quarter-hour (the range's own ends, if so).
    """
    days: defaultdict[tuple[int, date], int] = defaultdict(int)
    hours: list[rollups.Piece] = []
    quarters: list[rollups.Piece] = []
    answers: list[rollups.Piece] = []
    count = len(bounds) - 1
    for i in range(count):
        day, last = _midnight(bounds[i]), _midnight(bounds[i + 1])
        while day < last:
            days[(i, day.date())] += 1
            day += DAY
    for j, bound in enumerate(bounds):
        midnight = _midnight(bound)
        if bound == midnight:
            continue
        # H(b) counts +1 in the period before b and -1 in the period from b.
        targets = [(i, sign) for i, sign in ((j - 1, 1), (j, -1)) if 0 <= i < count]
        floor = bound.replace(minute=0, second=0, microsecond=0)
        quarter = bound.replace(minute=bound.minute - bound.minute % 15, second=0, microsecond=0)
        if bound - midnight <= midnight + DAY - bound:
            for i, sign in targets:
                if midnight < floor:
                    hours.append((i, sign, midnight, floor))
                if floor < quarter:
                    quarters.append((i, sign, floor, quarter))
                if quarter < bound:
                    answers.append((i, sign, quarter, bound))
        else:
            ceiling = floor + HOUR if floor < bound else floor
            quarter_ceiling = quarter + QUARTER_HOUR if quarter < bound else quarter
            for i, sign in targets:
                days[(i, midnight.date())] += sign
                if ceiling < midnight + DAY:
                    hours.append((i, -sign, ceiling, midnight + DAY))
                if quarter_ceiling < ceiling:
                    quarters.append((i, -sign, quarter_ceiling, ceiling))
                if bound < quarter_ceiling:
                    answers.append((i, -sign, bound, quarter_ceiling))
    return rollups.Plan(_day_ranges(days), hours, answers, quarters)


def _day_ranges(days: dict[tuple[int, date], int]) -> list[rollups.Piece]:
    """The days with a non-zero count, as ranges of consecutive days of one period and count."""
    ranges: list[rollups.Piece] = []
    for (i, day), sign in sorted(days.items()):
        if not sign:
            continue
        if ranges:
            period, previous, lo, hi = ranges[-1]
            if period == i and previous == sign and hi == day:
                ranges[-1] = (i, sign, lo, day + DAY)
                continue
        ranges.append((i, sign, day, day + DAY))
    return ranges


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


async def _rows(
    session: AsyncSession,
    workspace_id: str,
    labels: list[datetime],
    found: list[rollups.PeriodRow],
) -> list[VisibilityRow]:
    configured = await _competitor_names(session, workspace_id)
    known = set(configured)
    order = {name: index for index, name in enumerate(PROVIDERS)}
    found.sort(key=lambda r: (r[0], order.get(r[1], len(order)), r[1]))
    rows: list[VisibilityRow] = []
    for i, provider, sums, by_name in found:
        count, brand_mentions, rank_sum, ranked_count, brand_cites, cites = sums
        extra = by_name.keys() - known
        names = configured + sorted(extra) if extra else configured
        get = by_name.get
        rows.append(
            VisibilityRow(
                provider,
                labels[i],
                count,
                _ratio(brand_mentions, count),
                _ratio(rank_sum, ranked_count),
                _ratio(brand_cites, cites),
                [
                    CompetitorShare(
                        name,
                        mentions := get(name, 0),
                        _ratio(brand_mentions, brand_mentions + mentions),
                    )
                    for name in names
                ],
            )
        )
    return rows


async def _competitor_names(session: AsyncSession, workspace_id: str) -> list[str]:
    raw = await session.scalar(select(Workspace.competitors).where(Workspace.id == workspace_id))
    return [str(c.get("name", "")) for c in raw or [] if c.get("name")]
