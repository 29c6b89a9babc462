"""The monthly usage rollups: each answer's usage and cost added in the transaction that
stores it, read by caps, estimates and the billing view (O(months), never O(answers))."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Insert, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.database import Reader
from service.db.models import UsageRollup, Workspace

SUMS = ("answers", "input_tokens", "output_tokens", "search_calls", "cost_micros")


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One answer's usage, for its workspace's rollup of the month of `at`."""

    workspace_id: str
    provider: str
    at: datetime
    input_tokens: int
    output_tokens: int
    search_calls: int
    cost_micros: int


def month_of(moment: datetime | date) -> date:
    """The first day of the (UTC) month of `moment`."""
    return date(moment.year, moment.month, 1)


def months_back(moment: datetime | date, count: int) -> date:
    """The first day of the month `count - 1` months before the month of `moment`."""
    index = moment.year * 12 + moment.month - 1 - (count - 1)
    return date(index // 12, index % 12 + 1, 1)


def _table() -> Table:
    table = UsageRollup.__table__
    assert isinstance(table, Table)
    return table


@functools.cache
def _upsert(dialect: str) -> Insert:
    table = _table()
    insert = (sqlite if dialect == "sqlite" else postgresql).insert(table)
    upsert: Insert = insert.on_conflict_do_update(
        index_elements=[table.c.workspace_id, table.c.month, table.c.provider],
        set_={name: table.c[name] + insert.excluded[name] for name in SUMS},
    )
    return upsert


async def add_usage(connection: AsyncConnection, entries: Iterable[UsageEntry]) -> None:
    """Adds answers' usage to their monthly rollups; call it in the transaction that stores
    them, once per answer. Rows are upserted in key order (no deadlocks between workers)."""
    totals: dict[tuple[str, date, str], list[int]] = {}
    for entry in entries:
        sums = totals.setdefault(
            (entry.workspace_id, month_of(entry.at), entry.provider), [0] * len(SUMS)
        )
        for index, value in enumerate(
            (1, entry.input_tokens, entry.output_tokens, entry.search_calls, entry.cost_micros)
        ):
            sums[index] += value
    if not totals:
        return
    await connection.execute(
        _upsert(connection.dialect.name),
        [
            {
                "workspace_id": ws,
                "month": month,
                "provider": provider,
                **dict(zip(SUMS, sums, strict=True)),
            }
            for (ws, month, provider), sums in sorted(totals.items())
        ],
    )


async def month_to_date(reader: Reader, workspace_ids: Collection[str], now: datetime) -> int:
    """What the workspaces have cost in the month of `now`, in micro-units."""
    if not workspace_ids:
        return 0
    total = await reader.scalar(
        select(func.coalesce(func.sum(UsageRollup.cost_micros), 0)).where(
            UsageRollup.workspace_id.in_(list(workspace_ids)),
            UsageRollup.month == month_of(now),
        )
    )
    return int(total or 0)


async def scope_month_to_date(reader: Reader, scope: str, scope_id: str, now: datetime) -> int:
    """`month_to_date` of a cap's scope: a workspace, or every workspace of an organization
    ("organization")."""
    if scope == "workspace":
        return await month_to_date(reader, [scope_id], now)
    return await month_to_date(reader, await organization_workspaces(reader, scope_id), now)


async def month_to_date_by_workspace(
    reader: Reader, workspace_ids: Collection[str], now: datetime
) -> dict[str, int]:
    """`month_to_date` of each workspace (0 for those without usage)."""
    rows = await reader.execute(
        select(UsageRollup.workspace_id, func.sum(UsageRollup.cost_micros))
        .where(
            UsageRollup.workspace_id.in_(list(workspace_ids)),
            UsageRollup.month == month_of(now),
        )
        .group_by(UsageRollup.workspace_id)
    )
    found = {workspace_id: int(total or 0) for workspace_id, total in rows}
    return {workspace_id: found.get(workspace_id, 0) for workspace_id in workspace_ids}


async def organization_workspaces(reader: Reader, organization_id: str) -> list[str]:
    """Every workspace of the organization, soft-deleted ones included (they were billed)."""
    return list(
        await reader.scalars(
            select(Workspace.id)
            .where(Workspace.organization_id == organization_id)
            .order_by(Workspace.id)
        )
    )


async def answer_costs(
    reader: Reader, workspace_id: str, since: date
) -> Mapping[str, tuple[int, int]]:
    """Per provider, (answers, cost) of the workspace's rollups from the month `since` on."""
    rows = await reader.execute(
        select(
            UsageRollup.provider, func.sum(UsageRollup.answers), func.sum(UsageRollup.cost_micros)
        )
        .where(UsageRollup.workspace_id == workspace_id, UsageRollup.month >= since)
        .group_by(UsageRollup.provider)
    )
    return {provider: (int(answers or 0), int(cost or 0)) for provider, answers, cost in rows}
