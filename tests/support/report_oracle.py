"""The report oracle: visibility reports counted from every answer in one scan, without the
rollups (`service.domain.collection.rollups`); what the rollups are checked against by the
tests and by `make bench` report (no tests here).

`scanned_report` is `reports.visibility_report` counted from every answer of the range, grouped
by local period in one scan; `scan_periods` the same sums as `rollups.read_periods`; `rebuild`
recomputes a workspace's rollups of some days from its stored answers; `answer_of` is the
rollups' `Answer` of a stored probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.database import Reader
from service.db.models import Probe
from service.domain.collection import reports, rollups
from service.domain.collection.reports import Granularity, VisibilityRow
from service.domain.collection.rollups import (
    COMPETITORS,
    PROBES,
    SUMS,
    VISIBILITY,
    Answer,
    add_answers,
    answer,
)
from service.domain.collection.run_lifecycle import ProbeStatus


def answer_of(probe: Probe) -> Answer:
    """The answer of a stored, succeeded probe."""
    assert probe.complete_time is not None
    return answer(
        probe.workspace_id,
        probe.provider,
        probe.complete_time,
        {
            "brand_mentioned": probe.brand_mentioned,
            "brand_rank": probe.brand_rank,
            "brand_citations": probe.brand_citations,
            "citation_count": probe.citation_count,
            "competitors": probe.competitors,
        },
    )


async def scanned_report(
    session: AsyncSession,
    workspace_id: str,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    time_zone: str = "UTC",
) -> list[VisibilityRow]:
    """`visibility_report` counted from every answer of the range, grouped by local period
    in one scan, without the rollups: the reference the rollups are checked against (tests,
    benchmark)."""
    zone = ZoneInfo(time_zone)
    _, labels = reports.periods(start, end, granularity, zone)
    index = {label.astimezone(zone).date(): i for i, label in enumerate(labels)}
    found = await scan_periods(session, workspace_id, start, end, zone, week=granularity == "week")
    return await reports._rows(
        session, workspace_id, labels, [(index[d], p, s, n) for d, p, s, n in found]
    )


_SCAN_SUMS = (
    "count(*) AS responses, "
    "sum(CASE WHEN p.brand_mentioned THEN 1 ELSE 0 END) AS brand_mentions, "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN p.brand_rank ELSE 0 END) "
    "AS rank_sum, "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN 1 ELSE 0 END) AS ranked, "
    "CAST(sum(coalesce(p.brand_citations, 0)) AS bigint) AS brand_citations, "
    "CAST(sum(coalesce(p.citation_count, 0)) AS bigint) AS citations"
)
_SCAN_WHERE = (
    "p.workspace_id = :workspace_id AND p.status = 'succeeded' "
    "AND p.complete_time >= :start AND p.complete_time < :end"
)
# The local day or ISO week (Monday) of the answer, as a date.
_SCAN_PERIOD = (
    "CAST(date_trunc(CAST(:unit AS text), timezone(CAST(:zone AS text), p.complete_time)) AS date)"
)
_SCAN_TOTALS = text(
    f"SELECT {_SCAN_PERIOD} AS period, p.provider, {_SCAN_SUMS} FROM probes AS p "
    f"WHERE {_SCAN_WHERE} GROUP BY 1, 2"
)
_SCAN_MENTIONS = text(
    "SELECT d.period, d.provider, d.name, count(*) FROM ("
    f"SELECT DISTINCT {_SCAN_PERIOD} AS period, p.id, p.provider, "
    + rollups._POSTGRESQL["name"]
    + " AS name FROM probes AS p CROSS JOIN "
    + rollups._POSTGRESQL["elements"]
    + f" WHERE {_SCAN_WHERE} AND "
    + rollups._POSTGRESQL["is_text"]
    + ") AS d WHERE d.name <> '' GROUP BY 1, 2, 3"
)

ScannedRow = tuple[date, str, tuple[int, ...], dict[str, int]]
"""(first local day of the period, provider, sums in SUMS order, competitor -> answers)."""


async def scan_periods(
    reader: Reader,
    workspace_id: str,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    week: bool,
) -> list[ScannedRow]:
    """The same sums as `read_periods`, counted from every answer in [start, end) and grouped
    by the local day (or ISO week) of `zone` holding its time, without the rollups: the
    reference the rollups are checked against. PostgreSQL groups (one scan of the range);
    on SQLite the answers are grouped here."""
    if rollups._dialect(reader) == "sqlite":
        return await _scan_in_python(reader, workspace_id, start, end, zone, week)
    params = {
        "workspace_id": workspace_id,
        "start": start,
        "end": end,
        "unit": "week" if week else "day",
        "zone": zone.key,
    }
    names: dict[tuple[date, str], dict[str, int]] = {}
    for period, provider, name, count in (await reader.execute(_SCAN_MENTIONS, params)).all():
        names.setdefault((period, provider), {})[name] = count
    return [
        (r[0], r[1], tuple(int(v) for v in r[2:]), names.get((r[0], r[1]), {}))
        for r in (await reader.execute(_SCAN_TOTALS, params)).all()
    ]


def _succeeded(workspace_id: str, start: datetime, end: datetime) -> Select[Any]:
    """The workspace's answers with a time in [start, end)."""
    return select(PROBES).where(
        PROBES.c.workspace_id == workspace_id,
        PROBES.c.status == ProbeStatus.SUCCEEDED,
        PROBES.c.complete_time >= start,
        PROBES.c.complete_time < end,
    )


async def _scan_in_python(
    reader: Reader,
    workspace_id: str,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    week: bool,
) -> list[ScannedRow]:
    probes = await reader.execute(_succeeded(workspace_id, start, end))
    totals: dict[tuple[date, str], list[int]] = {}
    mentions: dict[tuple[date, str], dict[str, int]] = {}
    for p in probes:
        item = answer(p.workspace_id, p.provider, p.complete_time, dict(p._mapping))
        day = item.complete_time.astimezone(zone).date()
        if week:
            day -= timedelta(days=day.weekday())
        key = (day, item.provider)
        sums = totals.setdefault(key, [0] * len(SUMS))
        for index, value in enumerate(rollups._sums(item)):
            sums[index] += value
        names = mentions.setdefault(key, {})
        for name in item.competitors:
            names[name] = names.get(name, 0) + 1
    return [(d, pr, tuple(sums), mentions[(d, pr)]) for (d, pr), sums in totals.items()]


async def rebuild(reader: Reader, workspace_id: str, days: Sequence[date]) -> None:
    """Recomputes the workspace's rollups of `days` from its stored answers (after answers of
    those days were deleted, for example)."""
    for day in sorted(set(days)):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for table in (VISIBILITY, COMPETITORS):
            await reader.execute(
                delete(table).where(table.c.workspace_id == workspace_id, table.c.day == day)
            )
        for unit in ("hour", "quarter_hour"):
            for table in rollups._TABLES[unit]:
                await reader.execute(
                    delete(table).where(
                        table.c.workspace_id == workspace_id,
                        table.c[unit] >= start,
                        table.c[unit] < start + timedelta(days=1),
                    )
                )
        probes = await reader.execute(_succeeded(workspace_id, start, start + timedelta(days=1)))
        await add_answers(
            reader,
            (answer(p.workspace_id, p.provider, p.complete_time, dict(p._mapping)) for p in probes),
        )
