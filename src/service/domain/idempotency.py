"""Request ids (AIP-155): a retried create with the same request_id returns the first result.

A request is keyed by the caller's actor id, the action and the resource it changes (its
scope: a workspace or organization id) and the request id, so another user's identical id,
or the same id sent for another resource, is a request of its own. The first call claims its
key in its own transaction before doing anything; a concurrent call with the same key waits
for that transaction (PostgreSQL's unique key; SQLite's write transactions are serial) and
then replays the stored result, so the work is done once.

Domain commands call `once` inside their transaction; it stores their result dataclass as
JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import IdempotencyKey
from service.domain.actor import Actor
from service.domain.errors import FailedPrecondition, PreconditionViolation
from service.domain.inputs import require_request_id

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestKey:
    """Whose request (actor id), of what (action|scope) and which (the request id)."""

    principal_id: str
    method: str
    request_id: str


async def once(
    session: AsyncSession,
    actor: Actor,
    request_id: str,
    *,
    scope: str,
    result_type: type[T],
    now: datetime,
    run: Callable[[], Awaitable[T]],
) -> T:
    """The result of `run()` in the session's transaction, done once per request id.

    Without a request id it simply runs. With one, the first call by `actor` for `scope`
    runs and its result (a dataclass) is stored with the key; a retry returns that result
    and runs nothing. InvalidArgument (`request_id`) for a malformed id; FailedPrecondition
    (REQUEST_ID_NOT_REPLAYABLE) for a result stored in a form this version cannot read.
    """
    require_request_id(request_id)
    if not request_id:
        return await run()
    key = RequestKey(actor.actor_id, f"{actor.action}|{scope}", request_id)
    adapter = _adapter(result_type)
    stored = await _claim(session, key, now)
    if stored is not None:
        try:
            replayed: T = adapter.validate_json(stored)
        except ValueError:  # stored in another form: earlier servers kept protobuf
            raise _not_replayable() from None
        return replayed
    result = await run()
    await _store(session, key, adapter.dump_json(result))
    return result


def _not_replayable() -> FailedPrecondition:
    """The first call is done, but its result is not one this server can read (an earlier
    version stored it in another form): doing the work again would do it twice."""
    return FailedPrecondition(
        "this request_id was used by an earlier call whose result this server version cannot "
        "replay: its work is done; send a new request_id to do it again",
        [
            PreconditionViolation(
                "REQUEST_ID_NOT_REPLAYABLE", "request_id", "stored by an earlier server version"
            )
        ],
        reason="REQUEST_ID_NOT_REPLAYABLE",
    )


# Building an adapter compiles a schema: one per result type, reused.
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(result_type: type[T]) -> TypeAdapter[T]:
    adapter = _ADAPTERS.get(result_type)
    if adapter is None:
        adapter = _ADAPTERS[result_type] = TypeAdapter(result_type)
    return adapter


async def _claim(session: AsyncSession, key: RequestKey, now: datetime) -> bytes | None:
    """The stored result of an earlier call with `key`; None when this transaction has just
    claimed the key (its result is then stored with `_store` before it commits)."""
    stored = await _stored(session, key)
    if stored is not None:
        return stored
    try:
        async with session.begin_nested():
            session.add(
                IdempotencyKey(
                    principal_id=key.principal_id,
                    method=key.method,
                    request_id=key.request_id,
                    response=b"",
                    create_time=now,
                )
            )
    except IntegrityError:
        # A concurrent call claimed it and has committed since: replay its result.
        stored = await _stored(session, key)
        if stored is None:
            raise
        return stored
    return None


async def _store(session: AsyncSession, key: RequestKey, result: bytes) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(*_is(key))
        .values(response=result)
        .execution_options(synchronize_session=False)
    )


async def _stored(session: AsyncSession, key: RequestKey) -> bytes | None:
    stored: bytes | None = await session.scalar(select(IdempotencyKey.response).where(*_is(key)))
    return stored


def _is(key: RequestKey) -> tuple[Any, ...]:
    return (
        IdempotencyKey.principal_id == key.principal_id,
        IdempotencyKey.method == key.method,
        IdempotencyKey.request_id == key.request_id,
    )
