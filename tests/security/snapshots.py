"""Fingerprints of database rows, to show that a refused or failed call wrote nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import ColumnElement, Table, select

from service.app import App
from service.db.base import Base

Rows = dict[str, list[tuple[object, ...]]]


def _tables() -> dict[str, Table]:
    return {table.name: table for table in Base.metadata.sorted_tables}


async def rows_of(app: App, filters: dict[str, ColumnElement[bool]]) -> Rows:
    """Every row of each named table that its filter selects, in a stable order."""
    result: Rows = {}
    async with app.db.transaction(write=False) as session:
        for name, where in filters.items():
            table = _tables()[name]
            rows = (await session.execute(select(table).where(where))).all()
            result[name] = sorted((tuple(row) for row in rows), key=repr)
    return result


async def database_fingerprint(app: App) -> dict[str, str]:
    """A digest of every row of every table (for a small, test-owned database)."""
    digests: dict[str, str] = {}
    async with app.db.transaction(write=False) as session:
        for name, table in _tables().items():
            rows = (await session.execute(select(table))).all()
            digests[name] = _digest(repr(tuple(row)) for row in rows)
    return digests


def _digest(items: Iterable[str]) -> str:
    lines = sorted(items)
    return f"{len(lines)}:{hashlib.sha256(chr(10).join(lines).encode()).hexdigest()[:16]}"


def column(table: str, name: str) -> ColumnElement[object]:
    """A column of a table by name (for filters)."""
    return _tables()[table].c[name]
