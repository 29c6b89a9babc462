"""Insight rollups: cited sources, cited URLs and visibility per prompt, kept per (workspace,
unit, bucket, keys) for UTC months, days, hours and quarter-hours in one table each, plus the texts
of answered prompts and the evidence of competitor suggestions.

Written like the visibility rollups (`rollups.add_answers`): by whoever stores an answer, in
the same transaction, once per answer (`add_answers`). Read like them: a report is planned
as signed ranges of days, hours, quarter-hours and (only off the quarter-hour) answers
(`reports.plan`), and `read` sums each range's rollup rows in the database, so that a report
costs what its range holds in buckets, not in answers. The few answers of a range's
sub-quarter-hour ends are read and counted here, by the same functions that wrote them.

Deleting a workspace deletes these rows by foreign-key cascade.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Insert, Table, TextClause, case, select, text
from sqlalchemy.dialects import postgresql, sqlite

from service.db.database import Reader
from service.db.models import (
    AnsweredPrompt,
    CitedUrlRollup,
    Probe,
    PromptCompetitorRollup,
    PromptRollup,
    SourceRollup,
    SuggestionEvidence,
)
from service.domain.collection import rollups
from service.domain.collection.list_names import listed_names
from service.domain.collection.run_lifecycle import ProbeStatus
from service.domain.hostnames import registrable_domain


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A succeeded probe as the insight rollups read it; `values` holds its result columns
    (text, citations, competitors, brand_*), as the worker writes them."""

    id: str
    workspace_id: str
    provider: str
    prompt_id: str
    prompt_text: str
    complete_time: datetime
    values: Mapping[str, Any]


Keys = tuple[Any, ...]
Contribution = tuple[Keys, tuple[int, ...], dict[str, Any]]
"""(key values, sums, other columns written with a new row) of one answer."""


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _citations(item: StoredAnswer) -> list[dict[str, Any]]:
    raw = item.values.get("citations") or []
    return [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []


def source_of(host: str) -> str:
    """The source a citation host counts under: its registrable domain, or the host itself
    when it is a public suffix (a site such as `github.io` cited as such)."""
    host = host.lower()
    return registrable_domain(host) or host


def _host(citation: Mapping[str, Any]) -> str:
    return str(citation.get("domain") or "")


def _sources(item: StoredAnswer) -> Iterable[Contribution]:
    counts: dict[str, int] = {}
    for citation in _citations(item):
        host = _host(citation)
        if host:
            domain = source_of(host)
            counts[domain] = counts.get(domain, 0) + 1
    for domain, citations in counts.items():
        yield (item.provider, domain), (citations, 1), {}


def _urls(item: StoredAnswer) -> Iterable[Contribution]:
    counts: dict[tuple[str, str], int] = {}
    for citation in _citations(item):
        host, url = _host(citation), str(citation.get("url") or "")
        if host and url:
            key = (source_of(host), url)
            counts[key] = counts.get(key, 0) + 1
    for (domain, url), citations in counts.items():
        yield (domain, url_hash(url), item.prompt_id), (citations,), {"url": url}


def url_hash(url: str) -> str:
    """The key of a cited URL (URLs may exceed what an index entry holds)."""
    return hashlib.sha256(url.encode()).hexdigest()


def _visibility(item: StoredAnswer) -> rollups.Answer:
    return rollups.answer(item.workspace_id, item.provider, item.complete_time, item.values)


def _prompt_sums(item: StoredAnswer) -> Iterable[Contribution]:
    answer = _visibility(item)
    ranked = answer.brand_mentioned and answer.brand_rank > 0
    sums = (
        1,
        int(answer.brand_mentioned),
        answer.brand_rank if ranked else 0,
        int(ranked),
        answer.brand_citations,
        answer.citation_count,
    )
    yield (item.prompt_id, item.provider), sums, {}


def _prompt_mentions(item: StoredAnswer) -> Iterable[Contribution]:
    for name in sorted(_visibility(item).competitors):
        yield (item.prompt_id, item.provider, name), (1,), {}


@dataclass(frozen=True, slots=True)
class Rollup:
    """One insight rollup: its table, key and sum columns, and what one answer adds."""

    table: Table
    keys: tuple[str, ...]
    sums: tuple[str, ...]
    contributions: Callable[[StoredAnswer], Iterable[Contribution]]


SOURCES = Rollup(_table(SourceRollup), ("provider", "domain"), ("citations", "answers"), _sources)
URLS = Rollup(_table(CitedUrlRollup), ("domain", "url_hash", "prompt_id"), ("citations",), _urls)
PROMPTS = Rollup(_table(PromptRollup), ("prompt_id", "provider"), rollups.SUMS, _prompt_sums)
PROMPT_MENTIONS = Rollup(
    _table(PromptCompetitorRollup),
    ("prompt_id", "provider", "name"),
    ("mentions",),
    _prompt_mentions,
)
ROLLUPS = (SOURCES, URLS, PROMPTS, PROMPT_MENTIONS)


def utc_month(moment: datetime) -> date:
    """The first day of the UTC month holding `moment`."""
    return rollups.utc_day(moment).replace(day=1)


# Each unit and how an answer's time falls into it. Months are read for the whole UTC months
# inside a plan's ranges of days (`_months`): a year's range reads ~12 month buckets rather
# than 365 day buckets.
UNITS = {
    "m": utc_month,
    "d": rollups.utc_day,
    "h": rollups.utc_hour,
    "q": rollups.utc_quarter_hour,
}
ANSWERED_PROMPTS = _table(AnsweredPrompt)
EVIDENCE = _table(SuggestionEvidence)
PROBES = _table(Probe)


def _bucket(unit: str, moment: datetime) -> datetime:
    at = UNITS[unit](moment)
    if isinstance(at, datetime):
        return at
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def _insert(reader: Reader, table: Table) -> Any:
    return (sqlite if rollups._dialect(reader) == "sqlite" else postgresql).insert(table)


@functools.cache
def _upsert(dialect: str, rollup: Rollup) -> Insert:
    insert = (sqlite if dialect == "sqlite" else postgresql).insert(rollup.table)
    upsert: Insert = insert.on_conflict_do_update(
        index_elements=["workspace_id", "unit", "bucket", *rollup.keys],
        set_={name: rollup.table.c[name] + insert.excluded[name] for name in rollup.sums},
    )
    return upsert


async def add_answers(reader: Reader, answers: Iterable[StoredAnswer]) -> None:
    """Adds newly stored answers to the insight rollups, the answered prompts' texts and the
    suggestions' evidence; call it in the transaction that stores them, once per answer.
    Rows are written in key order (no deadlocks between workers, as `rollups.add_answers`)."""
    answers = list(answers)
    if not answers:
        return
    dialect = rollups._dialect(reader)
    for rollup in ROLLUPS:
        contributed = [(item, list(rollup.contributions(item))) for item in answers]
        for unit in UNITS:
            rows: dict[tuple[Any, ...], tuple[list[int], dict[str, Any]]] = {}
            for item, contributions in contributed:
                bucket = _bucket(unit, item.complete_time)
                for keys, sums, labels in contributions:
                    row = rows.setdefault(
                        (item.workspace_id, bucket, *keys), ([0] * len(sums), labels)
                    )
                    for index, value in enumerate(sums):
                        row[0][index] += value
            if rows:
                await reader.execute(
                    _upsert(dialect, rollup),
                    [
                        {
                            "workspace_id": key[0],
                            "unit": unit,
                            "bucket": key[1],
                            **dict(zip(rollup.keys, key[2:], strict=True)),
                            **dict(zip(rollup.sums, sums, strict=True)),
                            **labels,
                        }
                        for key, (sums, labels) in sorted(rows.items())
                    ],
                )
    prompts = {(item.workspace_id, item.prompt_id): item.prompt_text for item in answers}
    await reader.execute(
        _insert(reader, ANSWERED_PROMPTS).on_conflict_do_nothing(),
        [{"workspace_id": w, "prompt_id": p, "text": t} for (w, p), t in sorted(prompts.items())],
    )
    await _add_evidence(reader, answers)


def suggestion_evidence(item: StoredAnswer) -> list[tuple[str, str, str]]:
    """(kind, key, label) of what one answer brings up: each cited source, each listed name."""
    found = {
        ("domain", source_of(_host(c))): source_of(_host(c)) for c in _citations(item) if _host(c)
    }
    for name in listed_names(str(item.values.get("text") or "")):
        found.setdefault(("name", name.casefold()[:253]), name)
    return [(kind, key, label) for (kind, key), label in found.items()]


async def _add_evidence(reader: Reader, answers: Sequence[StoredAnswer]) -> None:
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for item in answers:
        for kind, key, label in suggestion_evidence(item):
            row = rows.setdefault(
                (item.workspace_id, kind, key, item.provider),
                {
                    "label": label,
                    "answers": 0,
                    "last_time": item.complete_time,
                    "example_response_id": item.id,
                },
            )
            row["answers"] += 1
            if item.complete_time >= row["last_time"]:
                row["last_time"], row["example_response_id"] = item.complete_time, item.id
    if not rows:
        return
    insert = _insert(reader, EVIDENCE)
    newer = insert.excluded.last_time >= EVIDENCE.c.last_time
    statement = insert.on_conflict_do_update(
        index_elements=["workspace_id", "kind", "key", "provider"],
        set_={
            "answers": EVIDENCE.c.answers + insert.excluded.answers,
            "last_time": case((newer, insert.excluded.last_time), else_=EVIDENCE.c.last_time),
            "example_response_id": case(
                (newer, insert.excluded.example_response_id),
                else_=EVIDENCE.c.example_response_id,
            ),
        },
    )
    await reader.execute(
        statement,
        [
            {"workspace_id": w, "kind": k, "key": key, "provider": p, **values}
            for (w, k, key, p), values in sorted(rows.items())
        ],
    )


def stored_answer(row: Any) -> StoredAnswer:
    """The stored answer of a probe (a row of every column of `probes`, or the model)."""
    mapping = getattr(row, "_mapping", None)
    if mapping is not None:
        values = dict(mapping)
    else:
        values = {column.name: getattr(row, column.name) for column in PROBES.c}
    return StoredAnswer(
        id=row.id,
        workspace_id=row.workspace_id,
        provider=row.provider,
        prompt_id=row.prompt_id,
        prompt_text=row.prompt_text,
        complete_time=row.complete_time,
        values=values,
    )


# Reading ------------------------------------------------------------------------------------

Sums = dict[tuple[Any, ...], list[int]]
"""(period index, *keys) -> sums of `Rollup.sums`, for the keys with a non-zero sum."""

_RANGES = {
    "postgresql": "json_to_recordset(CAST(:ranges AS json)) AS r(k int, u text, "
    "lo timestamptz, hi timestamptz)",
    "sqlite": "(SELECT json_extract(value, '$.k') AS k, json_extract(value, '$.u') AS u, "
    "json_extract(value, '$.lo') AS lo, json_extract(value, '$.hi') AS hi "
    "FROM json_each(:ranges)) AS r",
}
_TARGETS = {
    "postgresql": "json_to_recordset(CAST(:targets AS json)) AS t(k int, i int, s int)",
    "sqlite": "(SELECT json_extract(value, '$.k') AS k, json_extract(value, '$.i') AS i, "
    "json_extract(value, '$.s') AS s FROM json_each(:targets)) AS t",
}
_IN = {
    "postgresql": "v.{column} IN (SELECT json_array_elements_text(CAST(:in_{column} AS json)))",
    "sqlite": "v.{column} IN (SELECT value FROM json_each(:in_{column}))",
}


@functools.cache
def _read_statement(
    dialect: str, rollup: Rollup, filters: tuple[str, ...], group: tuple[str, ...]
) -> TextClause:
    """Sums of the rollup's rows in each range, counted (signed) in each period, grouped by
    the key columns `group`."""
    keys = ", ".join(f"v.{k}" for k in group)
    where = (
        "v.workspace_id = :workspace_id AND v.unit = r.u AND v.bucket >= r.lo AND v.bucket < r.hi"
        + "".join(" AND " + _IN[dialect].format(column=c) for c in filters)
    )
    columns = f"{keys}, " + ", ".join(f"v.{s}" for s in rollup.sums)
    table = rollup.table.name
    if dialect == "sqlite":
        source = f"{table} AS v JOIN {_RANGES[dialect]} ON {where}"
    else:
        # One index scan per range (see `rollups._from`).
        source = (
            f"{_RANGES[dialect]} CROSS JOIN LATERAL (SELECT {columns} FROM {table} AS v "
            f"WHERE {where} OFFSET 0) AS v"
        )
    summed = ", ".join(f"sum(v.{s}) AS {s}" for s in rollup.sums)
    inner = f"SELECT r.k AS k, {keys}, {summed} FROM {source} GROUP BY r.k, {keys}"
    outer_keys = ", ".join(f"x.{k}" for k in group)
    signed = ", ".join(f"CAST(sum(t.s * x.{s}) AS bigint) AS {s}" for s in rollup.sums)
    return text(
        f"SELECT t.i, {outer_keys}, {signed} FROM ({inner}) AS x "
        f"JOIN {_TARGETS[dialect]} ON t.k = x.k GROUP BY t.i, {outer_keys}"
    )


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _months(piece: rollups.Piece) -> list[tuple[str, rollups.Piece]]:
    """A range of whole UTC days as its whole UTC months ("m") and the days around them."""
    i, sign, lo, hi = piece
    first = lo if lo.day == 1 else _next_month(lo)
    last = hi.replace(day=1)
    if first >= last:
        return [("d", piece)]
    parts = [("d", (i, sign, lo, first))] if lo < first else []
    parts.append(("m", (i, sign, first, last)))
    if last < hi:
        parts.append(("d", (i, sign, last, hi)))
    return parts


_JIT_OFF = text("SET jit = off")
_JIT_RESET = text("RESET jit")


def _bound(value: date | datetime, dialect: str) -> str:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else utc.isoformat()


async def read(
    reader: Reader,
    rollup: Rollup,
    workspace_id: str,
    plan: rollups.Plan,
    where: Mapping[str, Sequence[str]] | None = None,
    group: Sequence[str] = (),
) -> Sums:
    """The rollup's sums per (period, keys) of `plan`, only for keys whose columns named in
    `where` hold one of the given values; keys are the columns `group` (default: every key
    column). One statement for the rollup rows; the answers of the plan's answer ranges
    (minutes at range ends off the quarter-hour) are counted here."""
    where = dict(where or {})
    grouped = tuple(group or rollup.keys)
    picked = [rollup.keys.index(column) for column in grouped]
    dialect = rollups._dialect(reader)
    found: Sums = {}
    pieces = [piece for day_piece in plan.days for piece in _months(day_piece)]
    pieces += [("h", p) for p in plan.hours] + [("q", p) for p in plan.quarter_hours]
    if pieces:
        ranges: dict[tuple[str, str, str], int] = {}
        targets = []
        for unit, (i, sign, lo, hi) in pieces:
            k = ranges.setdefault((unit, _bound(lo, dialect), _bound(hi, dialect)), len(ranges))
            targets.append({"k": k, "i": i, "s": sign})
        params: dict[str, Any] = {
            "workspace_id": workspace_id,
            "ranges": json.dumps(
                [{"k": k, "u": u, "lo": lo, "hi": hi} for (u, lo, hi), k in ranges.items()]
            ),
            "targets": json.dumps(targets),
        }
        params |= {f"in_{column}": json.dumps(list(values)) for column, values in where.items()}
        statement = _read_statement(dialect, rollup, tuple(sorted(where)), grouped)
        if dialect == "sqlite":
            result = await reader.execute(statement, params)
        else:
            # As `rollups.read_periods`: no JIT compiling for a statement of a few ms.
            await reader.execute(_JIT_OFF)
            result = await reader.execute(statement, params)
            await reader.execute(_JIT_RESET)
        for row in result.all():
            found[tuple(row[: 1 + len(grouped)])] = [int(v) for v in row[1 + len(grouped) :]]
    allowed = {rollup.keys.index(c): set(v) for c, v in where.items()}
    for i, sign, lo, hi in plan.answers:
        probes = await reader.execute(
            select(PROBES).where(
                PROBES.c.workspace_id == workspace_id,
                PROBES.c.status == ProbeStatus.SUCCEEDED,
                PROBES.c.complete_time >= lo,
                PROBES.c.complete_time < hi,
            )
        )
        for probe in probes.all():
            for keys, sums, _ in rollup.contributions(stored_answer(probe)):
                if all(keys[index] in values for index, values in allowed.items()):
                    key = (i, *(keys[index] for index in picked))
                    total = found.setdefault(key, [0] * len(sums))
                    for index, value in enumerate(sums):
                        total[index] += sign * value
    return {key: sums for key, sums in found.items() if any(sums)}
