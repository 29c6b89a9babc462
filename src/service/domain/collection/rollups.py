"""Visibility rollups: per (workspace, UTC day, provider) sums over the answers of that day,
and the same per UTC hour and per UTC quarter-hour.

A report over a year reads at most 366 daily rows per provider, however many answers the
workspace has; a report in a time zone whose days do not start at 00:00 UTC also reads, for
each local midnight, the hourly rows between it and the nearer UTC midnight, and for a zone
off the whole hour (+05:30, +05:45; every offset in tzdata is a multiple of 15 minutes) the
quarter-hour rows between it and the nearer whole hour (`read_periods`).
The rollups are written by whoever stores an answer (a succeeded probe), in the same
transaction (`add_answers`): the worker when it saves results, the migration that introduced
them (a backfill from the probes), and test builders that write probes as a worker would.
An answer counts on the UTC day, hour and quarter-hour of its `complete_time`; answers never
change once stored.

Deleting a workspace (purge, account deletion) deletes its rollups by foreign-key cascade;
answers of a live workspace are never deleted. The reference the rollups are checked against
(every answer counted in one scan) is the tests' report oracle, `tests/support/report_oracle.py`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Insert, Table, TextClause, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.database import Reader
from service.db.models import (
    CompetitorRollup,
    HourlyCompetitorRollup,
    HourlyVisibilityRollup,
    Probe,
    QuarterHourCompetitorRollup,
    QuarterHourVisibilityRollup,
    VisibilityRollup,
)

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


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def utc_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def utc_quarter_hour(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


UNITS = {"day": utc_day, "hour": utc_hour, "quarter_hour": utc_quarter_hour}
"""Each rollup's key column and how an answer's time falls into it."""


async def add_answers(reader: Reader, answers: Iterable[Answer]) -> None:
    """Adds newly stored answers to their rollups; call it in the transaction that stores
    them, once per answer (the caller guarantees each probe turned succeeded just now).

    Rows are upserted in key order, so that concurrent transactions lock them in the same
    order (no deadlocks between workers saving results of one workspace).
    """
    answers = list(answers)
    if not answers:
        return
    dialect = _dialect(reader)
    for unit, bucket in UNITS.items():
        totals: dict[tuple[str, Any, str], list[int]] = {}
        mentions: dict[tuple[str, Any, str, str], int] = {}
        for item in answers:
            key = (item.workspace_id, bucket(item.complete_time), item.provider)
            sums = totals.setdefault(key, [0] * len(SUMS))
            for index, value in enumerate(_sums(item)):
                sums[index] += value
            for name in item.competitors:
                mentions[(*key, name)] = mentions.get((*key, name), 0) + 1
        await reader.execute(
            _upsert(dialect, "visibility", unit),
            [
                {
                    "workspace_id": ws,
                    unit: at,
                    "provider": provider,
                    **dict(zip(SUMS, sums, strict=True)),
                }
                for (ws, at, provider), sums in sorted(totals.items())
            ],
        )
        if mentions:
            await reader.execute(
                _upsert(dialect, "competitor", unit),
                [
                    {"workspace_id": ws, unit: at, "provider": p, "name": name, "mentions": n}
                    for (ws, at, p, name), n in sorted(mentions.items())
                ],
            )


def _sums(item: Answer) -> tuple[int, ...]:
    """One answer's contribution to each of SUMS."""
    ranked = item.brand_mentioned and item.brand_rank > 0
    return (
        1,
        int(item.brand_mentioned),
        item.brand_rank if ranked else 0,
        int(ranked),
        item.brand_citations,
        item.citation_count,
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
HOURLY_VISIBILITY = _table(HourlyVisibilityRollup)
HOURLY_COMPETITORS = _table(HourlyCompetitorRollup)
QUARTER_HOUR_VISIBILITY = _table(QuarterHourVisibilityRollup)
QUARTER_HOUR_COMPETITORS = _table(QuarterHourCompetitorRollup)
# (visibility table, competitor table) of each unit.
_TABLES = {
    "day": (VISIBILITY, COMPETITORS),
    "hour": (HOURLY_VISIBILITY, HOURLY_COMPETITORS),
    "quarter_hour": (QUARTER_HOUR_VISIBILITY, QUARTER_HOUR_COMPETITORS),
}
PROBES = _table(Probe)


@functools.cache
def _upsert(dialect: str, which: str, unit: str) -> Insert:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET sum = sum + excluded.sum."""
    totals, names = _TABLES[unit]
    table, keys, sums = (
        (totals, ("workspace_id", unit, "provider"), SUMS)
        if which == "visibility"
        else (names, ("workspace_id", unit, "provider", "name"), ("mentions",))
    )
    insert = (sqlite if dialect == "sqlite" else postgresql).insert(table)
    upsert: Insert = insert.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: table.c[name] + insert.excluded[name] for name in sums},
    )
    return upsert


Piece = tuple[int, int, Any, Any]
"""(period index, sign, lo, hi): `sign` times the sums over [lo, hi) count in the period."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What each period of a report is made of: signed ranges of UTC days (daily rollups),
    of whole UTC hours (hourly rollups), of whole UTC quarter-hours (quarter-hour rollups)
    and of time (answers themselves)."""

    days: Sequence[Piece]
    hours: Sequence[Piece]
    answers: Sequence[Piece]
    quarter_hours: Sequence[Piece] = ()


PeriodRow = tuple[int, str, tuple[int, ...], dict[str, int]]
"""(period index, provider, sums in SUMS order, competitor -> answers mentioning it)."""

_SUMMED = ", ".join(f"sum(v.{name}) AS {name}" for name in SUMS)
# Each range is read by its own index scan (see `_from`).
_TOTALS = {
    "days": f"SELECT r.k AS k, v.provider AS provider, {_SUMMED} FROM "
    + "{days_from}"
    + " GROUP BY r.k, v.provider",
    "hours": f"SELECT r.k AS k, v.provider AS provider, {_SUMMED} FROM "
    + "{hours_from} GROUP BY r.k, v.provider",
    "quarter_hours": f"SELECT r.k AS k, v.provider AS provider, {_SUMMED} FROM "
    + "{quarter_hours_from} GROUP BY r.k, v.provider",
    # The same sums as add_answers, over the answers themselves.
    "answers": "SELECT r.k AS k, p.provider AS provider, count(*) AS responses, "
    "sum(CASE WHEN p.brand_mentioned THEN 1 ELSE 0 END) AS brand_mentions, "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN p.brand_rank ELSE 0 END) "
    "AS rank_sum, "
    "sum(CASE WHEN p.brand_mentioned AND p.brand_rank > 0 THEN 1 ELSE 0 END) AS ranked, "
    "sum(coalesce(p.brand_citations, 0)) AS brand_citations, "
    "sum(coalesce(p.citation_count, 0)) AS citations "
    "FROM {answers_from} GROUP BY r.k, p.provider",
}
_MENTIONS = {
    "days": "SELECT r.k AS k, v.provider AS provider, v.name AS name, sum(v.mentions) AS n "
    "FROM {days_names_from} GROUP BY r.k, v.provider, v.name",
    "hours": "SELECT r.k AS k, v.provider AS provider, v.name AS name, sum(v.mentions) AS n "
    "FROM {hours_names_from} GROUP BY r.k, v.provider, v.name",
    "quarter_hours": "SELECT r.k AS k, v.provider AS provider, v.name AS name, "
    "sum(v.mentions) AS n FROM {quarter_hours_names_from} GROUP BY r.k, v.provider, v.name",
    # Once per answer however often the answer lists the name.
    "answers": "SELECT d.k AS k, d.provider AS provider, d.name AS name, count(*) AS n FROM ("
    "SELECT DISTINCT r.k AS k, p.id AS id, p.provider AS provider, {name} AS name "
    "FROM {answers_from} CROSS JOIN {elements} WHERE {is_text}) AS d WHERE d.name <> '' "
    "GROUP BY d.k, d.provider, d.name",
}
_SIGNED = ", ".join(f"t.s * x.{name} AS {name}" for name in SUMS)
# Each range is summed once, then counted (signed) in each period it belongs to.
_PERIODS = (
    "WITH totals AS ({totals}), "
    "period_totals AS (SELECT i, provider, "
    # bigint: PostgreSQL sums bigints as numeric (Decimal).
    + ", ".join(f"CAST(sum({name}) AS bigint) AS {name}" for name in SUMS)
    + " FROM totals GROUP BY i, provider HAVING sum(responses) <> 0), "
    "mentions AS ({mentions}), "
    "period_mentions AS (SELECT i, provider, name, CAST(sum(n) AS bigint) AS n FROM mentions "
    "GROUP BY i, provider, name HAVING sum(n) <> 0), "
    "period_lists AS (SELECT i, provider, {aggregate} FROM period_mentions GROUP BY i, provider) "
    "SELECT t.i, t.provider, "
    + ", ".join(f"t.{name}" for name in SUMS)
    + ", {lists} FROM period_totals AS t LEFT JOIN period_lists AS l "
    "ON l.i = t.i AND l.provider = t.provider"
)
_TARGETED_TOTALS = (
    "SELECT t.i AS i, x.provider AS provider, " + _SIGNED + " FROM ({sums}) AS x "
    "JOIN {targets} ON t.k = x.k"
)
_TARGETED_MENTIONS = (
    "SELECT t.i AS i, x.provider AS provider, x.name AS name, t.s * x.n AS n "
    "FROM ({sums}) AS x JOIN {targets} ON t.k = x.k"
)
_ANSWER_COLUMNS = (
    "p.id, p.provider, p.brand_mentioned, p.brand_rank, p.brand_citations, p.citation_count, "
    "p.competitors"
)
# (ranges, table, alias, range column, columns read, extra condition) of each part's FROM.
_SOURCES = {
    "days_from": (
        "days",
        "visibility_rollups",
        "v",
        "day",
        "v.provider, " + ", ".join(f"v.{name}" for name in SUMS),
        "",
    ),
    "hours_from": (
        "hours",
        "hourly_visibility_rollups",
        "v",
        "hour",
        "v.provider, " + ", ".join(f"v.{name}" for name in SUMS),
        "",
    ),
    "days_names_from": (
        "days",
        "competitor_rollups",
        "v",
        "day",
        "v.provider, v.name, v.mentions",
        "",
    ),
    "hours_names_from": (
        "hours",
        "hourly_competitor_rollups",
        "v",
        "hour",
        "v.provider, v.name, v.mentions",
        "",
    ),
    "quarter_hours_from": (
        "quarter_hours",
        "quarter_hour_visibility_rollups",
        "v",
        "quarter_hour",
        "v.provider, " + ", ".join(f"v.{name}" for name in SUMS),
        "",
    ),
    "quarter_hours_names_from": (
        "quarter_hours",
        "quarter_hour_competitor_rollups",
        "v",
        "quarter_hour",
        "v.provider, v.name, v.mentions",
        "",
    ),
    "answers_from": (
        "answers",
        "probes",
        "p",
        "complete_time",
        _ANSWER_COLUMNS,
        " AND p.status = 'succeeded'",
    ),
}


def _from(dialect: str, source: str, ranges: str) -> str:
    """FROM the rows of `source` in each range of `ranges` (a table of k, lo, hi)."""
    _, table, alias, column, columns, extra = _SOURCES[source]
    where = (
        f"{alias}.workspace_id = :workspace_id{extra} "
        f"AND {alias}.{column} >= r.lo AND {alias}.{column} < r.hi"
    )
    if dialect == "sqlite":
        return f"{table} AS {alias} JOIN {ranges} ON {where}"
    # One index scan per range: OFFSET 0 keeps the planner from joining the other way round
    # (every row of the year against every range), which it may do for a prepared
    # statement's generic plan (the ranges change on every call) or without statistics.
    return (
        f"{ranges} CROSS JOIN LATERAL (SELECT {columns} FROM {table} AS {alias} "
        f"WHERE {where} OFFSET 0) AS {alias}"
    )


_POSTGRESQL = {
    "days": "json_to_recordset(CAST(:days AS json)) AS r(k int, lo date, hi date)",
    "hours": "json_to_recordset(CAST(:hours AS json)) AS r(k int, lo timestamptz, hi timestamptz)",
    "quarter_hours": "json_to_recordset(CAST(:quarter_hours AS json)) "
    "AS r(k int, lo timestamptz, hi timestamptz)",
    "answers": "json_to_recordset(CAST(:answers AS json)) "
    "AS r(k int, lo timestamptz, hi timestamptz)",
    "targets": "json_to_recordset(CAST(:{part}_targets AS json)) AS t(k int, i int, s int)",
    "name": "e.value ->> 'name'",
    "elements": "json_array_elements(CASE WHEN json_typeof(p.competitors) = 'array' "
    "THEN p.competitors ELSE CAST('[]' AS json) END) AS e(value)",
    "is_text": "json_typeof(e.value -> 'name') = 'string'",
    # Two arrays, which asyncpg decodes without json.
    "aggregate": "array_agg(name) AS names, array_agg(n) AS counts",
    "lists": "l.names, l.counts",
}


def _sqlite_table(param: str, alias: str, columns: Sequence[str]) -> str:
    values = ", ".join(f"json_extract(value, '$.{c}') AS {c}" for c in columns)
    return f"(SELECT {values} FROM json_each(:{param})) AS {alias}"


_SQLITE = {
    "days": _sqlite_table("days", "r", ("k", "lo", "hi")),
    "hours": _sqlite_table("hours", "r", ("k", "lo", "hi")),
    "quarter_hours": _sqlite_table("quarter_hours", "r", ("k", "lo", "hi")),
    "answers": _sqlite_table("answers", "r", ("k", "lo", "hi")),
    "targets": _sqlite_table("{part}_targets", "t", ("k", "i", "s")),
    "name": "json_extract(e.value, '$.name')",
    "elements": "json_each(CASE WHEN json_type(p.competitors) = 'array' "
    "THEN p.competitors ELSE '[]' END) AS e",
    "is_text": "json_type(e.value, '$.name') = 'text'",
    "aggregate": "json_group_object(name, n) AS names",
    "lists": "l.names",
}


@functools.cache
def _periods_statement(dialect: str, parts: tuple[str, ...]) -> TextClause:
    """The statement summing the signed ranges of `parts` (some of PARTS)."""
    fragments = dict(_SQLITE if dialect == "sqlite" else _POSTGRESQL)
    for source, (ranges, *_) in _SOURCES.items():
        fragments[source] = _from(dialect, source, fragments[ranges])

    def targeted(template: str, sums: dict[str, str], part: str) -> str:
        return template.format(
            sums=sums[part].format(**fragments),
            targets=fragments["targets"].format(part=part),
        )

    statement = _PERIODS.format(
        totals=" UNION ALL ".join(targeted(_TARGETED_TOTALS, _TOTALS, p) for p in parts),
        mentions=" UNION ALL ".join(targeted(_TARGETED_MENTIONS, _MENTIONS, p) for p in parts),
        aggregate=fragments["aggregate"],
        lists=fragments["lists"],
    )
    return text(statement)


def _json_bound(value: Any, dialect: str) -> str:
    """A range end as the backend compares it: SQLite stores dates and UTC datetimes as text."""
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else utc.isoformat()
    return str(value.isoformat())


PARTS = ("days", "hours", "quarter_hours", "answers")
_JIT_OFF = text("SET jit = off")
_JIT_RESET = text("RESET jit")


async def read_periods(reader: Reader, workspace_id: str, plan: Plan) -> list[PeriodRow]:
    """The sums of each period of `plan`, one row per (period, provider) with answers.

    One statement: the ranges (each once, however many periods it counts in) and their
    (period, sign) targets go to the database as JSON and everything is summed there, so that
    a year comes back in ~2,200 rows (six providers) whatever the number of answers, hours
    and competitors.
    """
    dialect = _dialect(reader)
    parts = tuple(p for p in PARTS if getattr(plan, p))
    if not parts:
        return []
    params: dict[str, Any] = {"workspace_id": workspace_id}
    for part in parts:
        ranges: dict[tuple[Any, Any], int] = {}
        targets = []
        for i, sign, lo, hi in getattr(plan, part):
            k = ranges.setdefault((lo, hi), len(ranges))
            targets.append({"k": k, "i": i, "s": sign})
        params[part] = json.dumps(
            [
                {"k": k, "lo": _json_bound(lo, dialect), "hi": _json_bound(hi, dialect)}
                for (lo, hi), k in ranges.items()
            ]
        )
        params[f"{part}_targets"] = json.dumps(targets)
    statement = _periods_statement(dialect, parts)
    if dialect == "sqlite":
        result = await reader.execute(statement, params)
    else:
        # The planner prices every range at a default share of the table (it cannot know
        # how short they are), so past ~100k rollup rows it would JIT-compile the statement:
        # 0.1 to 0.7 s of compiling for a few ms of work. Off for this statement only (a
        # SET in a transaction that fails is undone with it).
        await reader.execute(_JIT_OFF)
        result = await reader.execute(statement, params)
        await reader.execute(_JIT_RESET)
    sums = slice(2, 2 + len(SUMS))
    # .all(): one fetch for the rows, not one per row through the async adapter.
    if dialect == "sqlite":
        return [(r[0], r[1], tuple(r[sums]), json.loads(r[-1] or "{}")) for r in result.all()]
    return [
        (r[0], r[1], tuple(r[sums]), dict(zip(r[-2], r[-1], strict=True)) if r[-2] else {})
        for r in result.all()
    ]
