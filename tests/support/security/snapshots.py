"""Snapshots of database rows, to show that a refused or failed call wrote nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.app import App
from service.db.base import Base
from tests.support.security.world import World

TABLES = {table.name: table for table in Base.metadata.sorted_tables}
ORGANIZATION_TABLES = ("organization_members", "organization_invitations", "workspaces")
WORKSPACE_TABLES = (
    "workspace_members",
    "workspace_invitations",
    "schedules",
    "prompts",
    "runs",
    "probes",
    "visibility_rollups",
    "competitor_rollups",
    "hourly_visibility_rollups",
    "hourly_competitor_rollups",
    "quarter_hour_visibility_rollups",
    "quarter_hour_competitor_rollups",
    "webhook_endpoints",
    "webhook_deliveries",
    "alert_rules",
    "alerts",
    "digests",
    "usage_rollups",
    "source_rollups",
    "cited_url_rollups",
    "prompt_rollups",
    "prompt_competitor_rollups",
    "answered_prompts",
    "suggestion_evidence",
    "suggestion_decisions",
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Row counts of every table, and every row of the given tenants."""

    counts: dict[str, int]
    rows: dict[str, list[tuple[object, ...]]]

    def changes(self, other: Snapshot) -> list[str]:
        """The tables whose counts or tenant rows differ."""
        names = sorted(set(self.counts) | set(self.rows))
        return [
            name
            for name in names
            if self.counts.get(name) != other.counts.get(name)
            or self.rows.get(name) != other.rows.get(name)
        ]


def _column(table: str, name: str) -> ColumnElement[object]:
    return TABLES[table].c[name]


def tenant_filters(world: World) -> dict[str, ColumnElement[bool]]:
    """For each table, what selects the rows of the world's tenant and people."""
    people = [world.founder.user_id, world.member.user_id, world.org_member.user_id]
    if world.caller is not None:
        people.append(world.caller.user_id)
    org, ws = world.organization_id, world.workspace_id
    return {
        "organizations": _column("organizations", "id") == org,
        "audit_events": _column("audit_events", "organization_id") == org,
        "users": _column("users", "id").in_(people),
        "files": _column("files", "owner_id").in_(people),
        "idempotency_keys": _column("idempotency_keys", "principal_id").in_(people),
        **{name: _column(name, "organization_id") == org for name in ORGANIZATION_TABLES},
        **{name: _column(name, "workspace_id") == ws for name in WORKSPACE_TABLES},
    }


async def snapshots(app: App, *worlds: World, counts: bool = False) -> list[Snapshot]:
    """A snapshot per world (with `counts`, the first also holds every table's row count).

    One query per table serves every world (each row is tagged with the worlds it belongs
    to), and one query counts every table: a snapshot is cheap enough to take twice per call.
    """
    per_world: list[dict[str, list[tuple[object, ...]]]] = [{} for _ in worlds]
    filters = [tenant_filters(world) for world in worlds]
    sizes: dict[str, int] = {}
    async with app.db.transaction(write=False) as session:
        for name, table in TABLES.items():
            wheres = [f[name] for f in filters if name in f]
            if not wheres:
                continue
            width = len(table.columns)
            tags = [where.label(f"in_world_{i}") for i, where in enumerate(wheres)]
            query = select(table, *tags).where(or_(false(), *wheres))
            for rows in per_world:
                rows[name] = []
            for row in (await session.execute(query)).all():
                for index, rows in enumerate(per_world):
                    if row[width + index]:
                        rows[name].append(tuple(row[:width]))
        if counts:
            sizes = await _row_counts(session)
    return [
        Snapshot(sizes if index == 0 else {}, {k: sorted(v, key=repr) for k, v in rows.items()})
        for index, rows in enumerate(per_world)
    ]


COUNTS = select(
    *(
        select(func.count()).select_from(table).scalar_subquery().label(name)
        for name, table in TABLES.items()
    )
)


async def _row_counts(session: AsyncSession) -> dict[str, int]:
    found = (await session.execute(COUNTS)).one()
    return {name: int(found[i]) for i, name in enumerate(TABLES)}


async def row_counts(app: App) -> dict[str, int]:
    """Every table's row count (one query)."""
    async with app.db.transaction(write=False) as session:
        return await _row_counts(session)


async def snapshot(app: App, world: World, counts: bool = False) -> Snapshot:
    """The rows of the world's tenant (and, with `counts`, every table's row count)."""
    return (await snapshots(app, world, counts=counts))[0]
