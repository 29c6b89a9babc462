"""Unique slugs under concurrency: pick a free one, insert, and retry when a racer won.

The unique index is the arbiter. A row is flushed inside a savepoint; when the flush hits
the index because a concurrent transaction committed the same slug, the savepoint is
rolled back and the next suffix is tried (derived slugs) or ALREADY_EXISTS is raised
(explicit slugs). No caller ever sees INTERNAL, and no duplicate can be committed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.db.base import Base
from service.domain.errors import Aborted, AlreadyExists
from service.domain.names import SLUG_MAX, suffixed_slug

MAX_ATTEMPTS = 8


async def save_with_unique_slug(
    session: AsyncSession,
    row: Base,
    *,
    column: InstrumentedAttribute[str],
    scope: Callable[[], ColumnElement[bool]],
    base: str,
    explicit: bool,
    taken_message: str,
) -> str:
    """Adds or updates `row` with a slug unique in `scope` (a condition on the table).

    `base` is the slug to use; when not `explicit` it is suffixed (`-2`, `-3`...) until
    free. Returns the slug stored. Raises AlreadyExists(`taken_message`) when an explicit
    slug is taken.
    """
    prefix = base[: SLUG_MAX - 10]
    for _ in range(MAX_ATTEMPTS):
        rows = await session.scalars(
            select(column).where(scope(), column.startswith(prefix, autoescape=True))
        )
        taken = set(rows)
        if explicit and base in taken:
            raise AlreadyExists(taken_message, reason="SLUG_TAKEN")
        candidate = suffixed_slug(base, taken)
        setattr(row, column.key, candidate)
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:
            exists = await session.scalar(select(column).where(scope(), column == candidate))
            if exists is None:
                raise
            if explicit:
                raise AlreadyExists(taken_message, reason="SLUG_TAKEN") from None
            continue
        return candidate
    raise Aborted("too many concurrent creates with this slug; retry")
