"""Unique slugs under concurrency: pick a free one, insert, and retry when a racer won.

The unique index is the arbiter. A row is flushed inside a savepoint; when the flush hits
the index because a concurrent transaction committed the same slug, the savepoint is
rolled back and another random suffix is tried (derived slugs) or ALREADY_EXISTS is raised
(explicit slugs). No caller ever sees INTERNAL, and no duplicate can be committed.

A derived slug that is taken gets a random suffix (`acme-k3x9qz`), never `-2`, `-3`...: a
sequence number would tell a caller how many other tenants chose the same name.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from service.clock import random_slug_suffix
from service.db.base import Base
from service.domain.errors import Aborted, AlreadyExists
from service.domain.tenancy.names import suffixed_slug

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
    suffix: Callable[[], str] = random_slug_suffix,
) -> str:
    """Adds or updates `row` with a slug unique in `scope` (a condition on the table).

    `base` is the slug to use; when not `explicit` and taken, `base-<suffix()>` (a random
    suffix) is used instead. Returns the slug stored. Raises AlreadyExists(`taken_message`)
    when an explicit slug is taken.
    """
    base_taken = False
    for _ in range(MAX_ATTEMPTS):
        if not base_taken:
            base_taken = (
                await session.scalar(select(column).where(scope(), column == base)) is not None
            )
            if explicit and base_taken:
                raise AlreadyExists(taken_message, reason="SLUG_TAKEN")
        candidate = suffixed_slug(base, suffix()) if base_taken else base
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
            base_taken = True
            continue
        return candidate
    raise Aborted("too many concurrent creates with this slug; retry")
