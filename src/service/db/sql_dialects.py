"""Statements whose SQL differs between PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, Table, any_, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.db.base import Base
from service.db.database import Database


def insert_ignoring_duplicates(db: Database, model: type[Base], unique_key: Sequence[str]) -> Any:
    """`INSERT ... ON CONFLICT (unique_key) DO NOTHING` into the model's table (Core: execute it
    on a connection, with a list of rows for a batched multi-row INSERT)."""
    dialect = sqlite if db.is_sqlite else postgresql
    table = table_of(model)
    return dialect.insert(table).on_conflict_do_nothing(
        index_elements=[table.c[name] for name in unique_key]
    )


def id_in(
    db: Database, column: ColumnElement[str] | InstrumentedAttribute[str], ids: Iterable[str]
) -> ColumnElement[bool]:
    """`column IN ids`: one array parameter on PostgreSQL (the same SQL for any number of ids,
    so compiled once), a list of parameters on SQLite."""
    if db.is_sqlite:
        return column.in_(list(ids))
    return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(String)))


def table_of(model: type[Base]) -> Table:
    """The model's table, for Core statements on hot paths (no ORM compilation or row
    processing)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


async def tune_batch_transaction(db: Database, session: AsyncSession) -> None:
    """Sets up a transaction of the ticker's batch statements (PostgreSQL; one round trip).

    Its commit does not wait for its WAL flush: only for transactions whose loss in a database
    crash is harmless, the ticker's (a lost claim leaves its schedules due, so the slots are
    claimed again; a lost outbox stamp means a run is sent twice). Any later synchronous commit
    flushes them anyway.

    Sequential scans are off: every batch statement finds its rows by key (or by the index on
    the due time), but for a batch of 1,000 keys the planner's cost model (a random page read
    per key) prefers reading the whole table once a table holds less than some 100 batches,
    which made each batch cost what the table holds and a tick of 100,000 due schedules
    quadratic.
    """
    if not db.is_sqlite:
        await session.execute(BATCH_SETTINGS)


BATCH_SETTINGS = text(
    "SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)"
)
