"""The hottest reads, run on the asyncpg connection itself, past SQLAlchemy's execution layer.

A `CompiledSelect` is a Core SELECT built once, with bound parameters for everything a call supplies.
On PostgreSQL it is compiled once (SQLAlchemy's own SQL for the asyncpg dialect, `$n`
placeholders), and each call passes the parameter values, through the columns' own bind
processors, to asyncpg's `fetch` on the pooled connection's driver connection, and the rows
through the columns' own result processors: the rows equal `connection.execute`'s, at a
fraction of the CPU (no execution context, no cursor adaptation, no result object). No SQL is
ever built from input. Elsewhere (SQLite) it is executed the ordinary way.

A driver error is raised as SQLAlchemy's `DBAPIError` carrying the driver's exception (and its
SQLSTATE), and a connection the error broke is invalidated, so callers and the error mapping
see what they would see from `connection.execute`.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Select, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, ClauseList, Grouping

from service.db.database import Reader

Processor = Callable[[Any], Any] | None
# SQLSTATE classes of a connection the server is closing or cannot serve (as the errors
# interceptor's): the connection is dropped from the pool.
_OUTAGE_SQLSTATES = ("08", "57P")


@dataclass(frozen=True)
class _Compiled:
    sql: str
    row_type: Any  # a namedtuple of the selected columns' keys
    names: tuple[str, ...]  # the parameter of each placeholder, in order
    defaults: dict[str, Any]  # values the statement binds itself
    binds: tuple[Processor, ...]
    results: tuple[Processor, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = params[name] if name in params else self.defaults[name]
            values.append(process(value) if process is not None and value is not None else value)
        return values

    def row(self, record: Sequence[Any]) -> Any:
        return self.row_type._make(
            process(value) if process is not None else value
            for value, process in zip(record, self.results, strict=True)
        )


def _is_in_list(element: Any) -> TypeGuard[BindParameter[Any]]:
    return isinstance(element, BindParameter) and element.expanding


def _fixed_in_lists(statement: Select[Any]) -> Any:
    """`statement` with each IN list the statement itself fixes (`role.in_(("owner", ...))`)
    bound as one parameter per value, as SQLAlchemy renders it on every execution."""

    def replace(element: Any) -> Any:
        if _is_in_list(element) and not element.required:
            values = [
                bindparam(None, v, type_=element.type, unique=True) for v in element.value or ()
            ]
            return Grouping(ClauseList(*values))
        return None

    return visitors.replacement_traverse(statement, {}, replace)  # type: ignore[call-overload]


def _compile(statement: Select[Any], dialect: Dialect) -> _Compiled:
    compiled = _fixed_in_lists(statement).compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    return _Compiled(
        sql=compiled.string,
        names=names,
        defaults={name: binds[name].effective_value for name in names if not binds[name].required},
        binds=tuple(binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names),
        results=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ),
        row_type=_row_type(statement),
    )


def _row_type(statement: Select[Any]) -> Any:
    keys = [column.key or f"_{i}" for i, column in enumerate(statement.selected_columns)]
    return namedtuple("HotRow", keys, rename=True)


def _broken(error: Exception, driver: Any) -> bool:
    """Whether the connection is unusable after `error`: any error but one the server
    reported about the statement (a client-side or I/O error, a closed connection, an
    outage SQLSTATE)."""
    if not isinstance(error, asyncpg.PostgresError) or driver.is_closed():
        return True
    return str(getattr(error, "sqlstate", "")).startswith(_OUTAGE_SQLSTATES)


class CompiledSelect:
    """A SELECT whose rows are read on the driver connection (see the module docstring)."""

    def __init__(self, statement: Select[Any] | Any) -> None:
        # An IN list the caller binds is rendered anew on every execution: not for a CompiledSelect.
        for element in visitors.iterate(statement):
            if _is_in_list(element) and element.required:
                raise ValueError(
                    f"CompiledSelect cannot bind the expanding parameter {element.key!r}"
                )
        self.statement = statement
        self._compiled: _Compiled | None = None

    async def rows(self, conn: Reader, params: Mapping[str, Any]) -> list[Any]:
        """The statement's rows for `params` (by position and by column key)."""
        if not isinstance(conn, AsyncConnection) or conn.dialect.driver != "asyncpg":
            return list(await conn.execute(self.statement, dict(params)))
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _compile(self.statement, conn.dialect)
        args = compiled.args(params)
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            records = await driver.fetch(compiled.sql, *args)
        except Exception as error:
            if _broken(error, driver):
                await conn.invalidate(error)
                raise DBAPIError(compiled.sql, args, error, connection_invalidated=True) from error
            raise DBAPIError(compiled.sql, args, error) from error
        return [compiled.row(record) for record in records]

    async def scalar(self, conn: Reader, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = await self.rows(conn, params)
        return rows[0][0] if rows else None
