"""Visibility rollups: per (workspace, UTC day, provider) sums over the answers of that day.

A report over a year reads at most 366 rows per provider, however many answers the workspace
has. The rollups are written by whoever stores an answer (a succeeded probe), in the same
transaction (`add_answers`): the worker when it saves results, the migration that introduced
them (a backfill from the probes), and test builders that write probes as a worker would.
An answer counts on the UTC day of its `complete_time`; answers never change once stored.

Deleting a workspace (purge, account deletion) deletes its rollups by foreign-key cascade.
Whoever deletes answers of a live workspace must call `rebuild` for the days they covered.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Insert, Table, delete, func, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from service.db.database import Reader
from service.db.models import CompetitorRollup, Probe, VisibilityRollup
from service.domain.run_status import ProbeStatus

SUMS = ("responses", "brand_mentions", "rank_sum", "ranked", "brand_citations", "citations")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the rollups keep of one succeeded probe."""

    workspace_id: str
    provider: str
    complete_time: datetime
    brand_mentioned: bool
    brand_rank: int
    brand_citations: int
    citation_count: int
    competitors: frozenset[str]


def competitor_names(competitors: Any) -> frozenset[str]:
    """The distinct, non-empty string names in a probe's `competitors` JSON (a list of
    {"name", "rank"}): an answer counts once per competitor however often it lists it."""
    if not isinstance(competitors, list):
        return frozenset()
    return frozenset(
        item["name"]
        for item in competitors
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]
    )


def answer(
    workspace_id: str, provider: str, complete_time: datetime, values: Mapping[str, Any]
) -> Answer:
    """An answer from a probe's result columns (`values` as the worker writes them)."""
    return Answer(
        workspace_id=workspace_id,
        provider=provider,
        complete_time=complete_time,
        brand_mentioned=bool(values.get("brand_mentioned", False)),
        brand_rank=int(values.get("brand_rank", 0)),
        brand_citations=int(values.get("brand_citations", 0)),
        citation_count=int(values.get("citation_count", 0)),
        competitors=competitor_names(values.get("competitors", [])),
    )


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


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


async def add_answers(reader: Reader, answers: Iterable[Answer]) -> None:
    """Adds newly stored answers to their rollups; call it in the transaction that stores
    them, once per answer (the caller guarantees each probe turned succeeded just now).

    Rows are upserted in key order, so that concurrent transactions lock them in the same
    order (no deadlocks between workers saving results of one workspace).
    """
    totals: dict[tuple[str, date, str], list[int]] = {}
    mentions: dict[tuple[str, date, str, str], int] = {}
    for item in answers:
        key = (item.workspace_id, utc_day(item.complete_time), item.provider)
        sums = totals.setdefault(key, [0] * len(SUMS))
        ranked = item.brand_mentioned and item.brand_rank > 0
        for index, value in enumerate(
            (
                1,
                int(item.brand_mentioned),
                item.brand_rank if ranked else 0,
                int(ranked),
                item.brand_citations,
                item.citation_count,
            )
        ):
            sums[index] += value
        for name in item.competitors:
            mentions[(*key, name)] = mentions.get((*key, name), 0) + 1
    if not totals:
        return
    dialect = _dialect(reader)
    await reader.execute(
        _upsert(dialect, "visibility"),
        [
            {
                "workspace_id": ws,
                "day": day,
                "provider": provider,
                **dict(zip(SUMS, sums, strict=True)),
            }
            for (ws, day, provider), sums in sorted(totals.items())
        ],
    )
    if mentions:
        await reader.execute(
            _upsert(dialect, "competitor"),
            [
                {"workspace_id": ws, "day": day, "provider": p, "name": name, "mentions": count}
                for (ws, day, p, name), count in sorted(mentions.items())
            ],
        )


def _dialect(reader: Reader) -> str:
    if isinstance(reader, AsyncConnection):
        return reader.dialect.name
    return reader.get_bind().dialect.name


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


VISIBILITY = _table(VisibilityRollup)
COMPETITORS = _table(CompetitorRollup)
PROBES = _table(Probe)


@functools.cache
def _upsert(dialect: str, which: str) -> Insert:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET sum = sum + excluded.sum."""
    table, keys, sums = (
        (VISIBILITY, ("workspace_id", "day", "provider"), SUMS)
        if which == "visibility"
        else (COMPETITORS, ("workspace_id", "day", "provider", "name"), ("mentions",))
    )
    insert = (sqlite if dialect == "sqlite" else postgresql).insert(table)
    upsert: Insert = insert.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: table.c[name] + insert.excluded[name] for name in sums},
    )
    return upsert


DayRow = tuple[date, str, tuple[int, ...], dict[str, int]]
"""One rollup row: (UTC day, provider, sums in SUMS order, competitor -> mentions)."""


async def read(reader: Reader, workspace_id: str, first: date, end: date) -> list[DayRow]:
    """The workspace's rollups of the days in [first, end), one row per (day, provider).

    Each row carries its competitor mentions as one JSON object aggregated in the database,
    so that a year is ~2,200 rows (six providers) whatever the number of competitors.
    """
    sqlite = _dialect(reader) == "sqlite"

    def mentions(aggregate: Any) -> Any:
        return (
            select(aggregate)
            .where(
                COMPETITORS.c.workspace_id == VISIBILITY.c.workspace_id,
                COMPETITORS.c.day == VISIBILITY.c.day,
                COMPETITORS.c.provider == VISIBILITY.c.provider,
            )
            .scalar_subquery()
        )

    # SQLite: one JSON object; PostgreSQL: two arrays, which asyncpg decodes without json.
    extra = (
        [
            type_coerce(
                mentions(func.json_group_object(COMPETITORS.c.name, COMPETITORS.c.mentions)), JSON
            )
        ]
        if sqlite
        else [
            # Untyped: asyncpg's lists as they come, without SQLAlchemy's per-item processing.
            type_coerce(mentions(func.array_agg(COMPETITORS.c.name)), NullType()),
            type_coerce(mentions(func.array_agg(COMPETITORS.c.mentions)), NullType()),
        ]
    )
    result = await reader.execute(
        select(
            VISIBILITY.c.day, VISIBILITY.c.provider, *(VISIBILITY.c[s] for s in SUMS), *extra
        ).where(
            VISIBILITY.c.workspace_id == workspace_id,
            VISIBILITY.c.day >= first,
            VISIBILITY.c.day < end,
        )
    )
    sums = slice(2, 2 + len(SUMS))
    # .all(): one fetch for the rows, not one per row through the async adapter.
    if sqlite:
        return [(r[0], r[1], tuple(r[sums]), r[-1] or {}) for r in result.all()]
    return [
        (r[0], r[1], tuple(r[sums]), dict(zip(r[-2], r[-1], strict=True)) if r[-2] else {})
        for r in result.all()
    ]


async def rebuild(reader: Reader, workspace_id: str, days: Sequence[date]) -> None:
    """Recomputes the workspace's rollups of `days` from its stored answers (after answers of
    those days were deleted, for example)."""
    for day in sorted(set(days)):
        await reader.execute(
            delete(VISIBILITY).where(
                VISIBILITY.c.workspace_id == workspace_id, VISIBILITY.c.day == day
            )
        )
        await reader.execute(
            delete(COMPETITORS).where(
                COMPETITORS.c.workspace_id == workspace_id, COMPETITORS.c.day == day
            )
        )
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        probes = await reader.execute(
            select(PROBES).where(
                PROBES.c.workspace_id == workspace_id,
                PROBES.c.status == ProbeStatus.SUCCEEDED,
                PROBES.c.complete_time >= start,
                PROBES.c.complete_time < start + timedelta(days=1),
            )
        )
        await add_answers(
            reader,
            (answer(p.workspace_id, p.provider, p.complete_time, dict(p._mapping)) for p in probes),
        )
